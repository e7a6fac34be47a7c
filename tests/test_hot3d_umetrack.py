"""UmeTrack hand model (megohand.hand.umetrack) against scipy rotations, and HOT3D's choice of hand path.

The profile here is made up (a hand-sized skeleton in UmeTrack's file format, millimetres, left hand);
the real profiles are exercised in test_hot3d_umetrack_real.py.
"""

import json

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from fixtures_native import write_hot3d_sequence
from megohand.hand import umetrack

torch.set_num_threads(1)


def _profile_dict(seed=0) -> dict:
    """A left hand in UmeTrack's layout: fingers along +x, thumb towards +z (mm)."""
    rng = np.random.default_rng(seed)
    base = {0: (20, -10, 25), 1: (95, 0, 22), 2: (97, 0, 2), 3: (90, 0, -17), 4: (78, -5, -34)}
    lengths = {0: (30, 32, 30), 1: (40, 25, 22), 2: (42, 28, 23), 3: (38, 26, 22), 4: (30, 20, 19)}
    rest, axes, lm_pos, lm_frame = [], [], {}, {}
    for f in range(5):
        p = np.array(base[f], float)
        d = np.array([1.0, -0.3, 0.5]) if f == 0 else np.array([1.0, 0.0, 0.0])
        d /= np.linalg.norm(d)
        pts = [p, p, p + d * lengths[f][0], p + d * (lengths[f][0] + lengths[f][1])]
        tip = pts[3] + d * lengths[f][2]
        rest += [x + rng.normal(scale=0.5, size=3) for x in pts]
        ax = [(0, 1, 0), (0, 0, 1), (0, 0, 1), (0, 0, 1)]
        axes += [np.array(a, float) + rng.normal(scale=0.1, size=3) for a in ax]
        lm_pos[f], lm_frame[f] = tip, 2 + 3 * f + 2  # fingertip on the finger's last frame
    rest += [np.zeros(3), np.zeros(3)]
    axes += [np.array([0, 1.0, 0]), np.array([0, 0, 1.0])]
    axes = [a / np.linalg.norm(a) for a in axes]
    # HOT3D21: tips, wrist, thumb2, thumb3, index..pinky 1-3, palm centre
    pos = [lm_pos[f] for f in range(5)] + [np.zeros(3), rest[2], rest[3]]
    frame = [lm_frame[f] for f in range(5)] + [1, 2, 3]
    for f in range(1, 5):
        pos += [rest[4 * f], rest[4 * f + 2], rest[4 * f + 3]]
        frame += [1, 2 + 3 * f, 2 + 3 * f + 1]
    pos.append(np.array([60.0, -10, 0]))
    frame.append(1)
    return {"hand_model": {
        "joint_rest_positions": np.array(rest).tolist(),
        "joint_rotation_axes": np.array(axes).tolist(),
        "landmark_rest_positions": np.array(pos).tolist(),
        "landmark_rest_bone_indices": [[k, 0, 0] for k in frame],
        "landmark_rest_bone_weights": [[1.0, 0.0, 0.0] for _ in frame],
        "hand_scale": 1.0,
    }}


@pytest.fixture(scope="module")
def profile():
    return umetrack.UmeTrackProfile.from_dict(_profile_dict(), source="made-up")


def _identity(n=1):
    return torch.eye(4, dtype=torch.float64).repeat(n, 1, 1)


def test_rest_pose_is_the_profile_in_metres(profile):
    d = _profile_dict()["hand_model"]
    lm = umetrack.landmarks(profile, np.zeros((1, 22)), _identity())[0].numpy()
    np.testing.assert_allclose(lm, np.array(d["landmark_rest_positions"]) / 1000, atol=1e-12)


@pytest.mark.parametrize("finger", [0, 2, 4])
def test_joint_rotations_match_scipy(profile, finger):
    """Tip of one finger with angles on joints 1 and 3: R1 (R3 (x - p3) + p3 - p1) + p1 (scipy rotations)."""
    d = _profile_dict()["hand_model"]
    p = np.array(d["joint_rest_positions"]) / 1000
    ax = np.array(d["joint_rotation_axes"])
    x = np.array(d["landmark_rest_positions"][finger]) / 1000
    a1, a3 = 0.7, -0.4
    angles = np.zeros((1, 22))
    j1, j3 = 4 * finger + 1, 4 * finger + 3
    angles[0, j1], angles[0, j3] = a1, a3
    R1 = Rotation.from_rotvec(ax[j1] * a1).as_matrix()
    R3 = Rotation.from_rotvec(ax[j3] * a3).as_matrix()
    expected = R1 @ (R3 @ (x - p[j3]) + p[j3] - p[j1]) + p[j1]
    got = umetrack.landmarks(profile, angles, _identity())[0, finger].numpy()
    np.testing.assert_allclose(got, expected, atol=1e-12)
    others = [f for f in range(5) if f != finger]  # the other fingers do not move
    np.testing.assert_allclose(umetrack.landmarks(profile, angles, _identity())[0, others].numpy(),
                               np.array(d["landmark_rest_positions"])[others] / 1000, atol=1e-12)


def test_wrist_transform_and_right_hand_mirror(profile):
    rng = np.random.default_rng(1)
    R = Rotation.random(random_state=3)
    q_xyzw = R.as_quat()
    q_wxyz = np.concatenate([q_xyzw[3:], q_xyzw[:3]])
    t = rng.normal(size=3)
    angles = rng.normal(scale=0.3, size=(1, 22))
    local = umetrack.landmarks(profile, angles, _identity())[0].numpy()
    left = umetrack.landmarks(profile, angles, umetrack.wrist_matrix([q_wxyz], [t], "left"))[0].numpy()
    right = umetrack.landmarks(profile, angles, umetrack.wrist_matrix([q_wxyz], [t], "right"))[0].numpy()
    np.testing.assert_allclose(left, R.apply(local) + t, atol=1e-12)
    np.testing.assert_allclose(right, R.apply(local * [-1, 1, 1]) + t, atol=1e-12)


def test_mano21_order(profile):
    angles = np.random.default_rng(2).normal(scale=0.3, size=(3, 22))
    W = _identity(3)
    lm = umetrack.landmarks(profile, angles, W).numpy()
    J = umetrack.mano21_joints(profile, angles, W).numpy()
    np.testing.assert_allclose(J[:, 0], lm[:, 5])  # wrist
    np.testing.assert_allclose(J[:, 16:21], lm[:, 0:5])  # tips thumb..pinky
    np.testing.assert_allclose(J[:, [14, 15]], lm[:, [6, 7]])  # thumb2, thumb3
    np.testing.assert_allclose(J[:, [1, 2, 3]], lm[:, [8, 9, 10]])  # index1-3
    np.testing.assert_allclose(J[:, [7, 8, 9]], lm[:, [17, 18, 19]])  # pinky1-3
    p0 = np.array(_profile_dict()["hand_model"]["joint_rest_positions"][0]) / 1000
    np.testing.assert_allclose(J[:, 13], np.tile(p0, (3, 1)), atol=1e-12)  # thumb1 = first thumb joint


def test_profile_errors_name_the_file(tmp_path):
    d = _profile_dict()
    del d["hand_model"]["joint_rotation_axes"]
    p = tmp_path / "umetrack_hand_user_profile.json"
    p.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=f"{p}.*lacks 'joint_rotation_axes'"):
        umetrack.UmeTrackProfile.from_json(p)
    p.write_text("{")
    with pytest.raises(ValueError, match="corrupt JSON"):
        umetrack.UmeTrackProfile.from_json(p)


# ----------------------------------------------------------------------------- the converter's hand path


def _add_umetrack(seq, seed=0):
    """UmeTrack files for the sequence: the made-up profile, a wrist near each MANO wrist, random angles."""
    rng = np.random.default_rng(seed)
    (seq / "umetrack_hand_user_profile.json").write_text(json.dumps(_profile_dict()))
    with open(seq / "umetrack_hand_pose_trajectory.jsonl", "w") as out:
        for line in (seq / "mano_hand_pose_trajectory.jsonl").read_text().splitlines():
            rec = json.loads(line)
            for h in rec["hand_poses"].values():
                h["joint_angles"] = (np.abs(rng.normal(scale=0.3, size=22)) * [*([1] * 20), 0, 0]).tolist()
                del h["pose"], h["betas"]
            out.write(json.dumps(rec) + "\n")


class _Frames:
    """A recording stand-in with one grey image per annotated time (see test_hot3d_recording.py for the clocks)."""

    def __init__(self, ts):
        self.ts = np.asarray(ts, np.int64)

    def timestamps(self, stream):
        return self.ts

    def image(self, stream, i):
        return np.full((32, 32, 3), 100, np.uint8)


def _sequence(tmp_path, hands, umetrack_files):
    from megohand.data.sources import get_source

    write_hot3d_sequence(tmp_path, hands)
    seq = tmp_path / "P0001_abcdef12"
    if umetrack_files:
        _add_umetrack(seq)
    (seq / "recording.vrs").write_bytes(b"")
    ts = [json.loads(line)["timestamp_ns"] for line in (seq / "mano_hand_pose_trajectory.jsonl").read_text().splitlines()]
    src = get_source("hot3d")(tmp_path)
    src.open_recording = lambda path, headset: _Frames(ts)
    return src


def test_without_mano_the_umetrack_joints_are_retargeted(tmp_path, hands, monkeypatch):
    from megohand.data.sources.pipeline import HandModels, convert_episode, hand_path
    from megohand.data.store import Store, StoreWriter
    from megohand.data.validate import validate_store
    from megohand.hand.retarget import Retargeter

    monkeypatch.delenv("MANO_MODEL_DIR", raising=False)
    ep = _sequence(tmp_path / "src", hands, umetrack_files=True).load("P0001_abcdef12")
    assert set(ep.joints) == {"left", "right"} and ep.joints["left"].shape == (5, 21, 3)
    assert ep.extra["umetrack_profile"].endswith("umetrack_hand_user_profile.json")
    assert hand_path(ep, hands) == ("joints", "")  # the test hand is not MANO either
    open_hand = HandModels(None)
    writer = StoreWriter(tmp_path / "store")
    convert_episode(ep, writer, open_hand, depth="none", retargeter=Retargeter.from_pretrained(None, refine_steps=20))
    e = Store(tmp_path / "store").open("hot3d", "P0001_abcdef12")
    assert e.meta.hand_source == "retargeted" and e.meta.extra["hand_path"].startswith("joints (mano)")
    assert "hand_fidelity" not in e.meta.extra and set(e.meta.extra["retarget_joint_error_mm"]) == {"left", "right"}
    assert validate_store(tmp_path / "store") == []


def test_pca_without_mano_is_said_and_validated(tmp_path, hands, monkeypatch, capsys):
    """No UmeTrack files, no MANO: the PCA path runs, convert prints one line, the store and validate carry it."""
    from megohand.cli.convert import Convert
    from megohand.data.sources.hot3d import Hot3DSource
    from megohand.data.store import Store
    from megohand.data.validate import validate_store

    monkeypatch.delenv("MANO_MODEL_DIR", raising=False)
    _sequence(tmp_path / "src", hands, umetrack_files=False)
    write_hot3d_sequence(tmp_path / "src", hands, name="P0001_bcdef123")
    ts = {}
    for name in ("P0001_abcdef12", "P0001_bcdef123"):
        seq = tmp_path / "src" / name
        (seq / "recording.vrs").write_bytes(b"")
        ts[name] = [json.loads(l)["timestamp_ns"] for l in (seq / "mano_hand_pose_trajectory.jsonl").read_text().splitlines()]
    monkeypatch.setattr(Hot3DSource, "open_recording", lambda self, path, headset: _Frames(ts[path.parent.name]))
    Convert(dataset="hot3d", src=tmp_path / "src", out=tmp_path / "store", depth="none").run()
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if l.startswith("WARNING hot3d:")]
    assert len(lines) == 1 and "15 MANO PCA coefficients need MANO's hands_components" in lines[0]
    e = Store(tmp_path / "store").open("hot3d", "P0001_abcdef12")
    assert e.meta.hand_source == "gt" and e.meta.extra["hand_path"] == "parameters"
    assert "MANO's hands_mean" in e.meta.extra["hand_fidelity"]
    probs = validate_store(tmp_path / "store")
    assert sorted(p.episode for p in probs) == ["P0001_abcdef12", "P0001_bcdef123"]
    assert all(p.field == "hand_fidelity" and p.warning and "not MANO" in p.message for p in probs)


def test_validate_exit_status_for_approximate_hands(tmp_path, hands, monkeypatch, capsys):
    """The rule: approximate hands are WARNING lines and exit 0; ``--strict`` makes them exit 1; a real
    problem exits 1 either way."""
    from megohand.cli.main import main
    from megohand.data.store import Store

    test_pca_without_mano_is_said_and_validated(tmp_path, hands, monkeypatch, capsys)
    capsys.readouterr()
    store = str(tmp_path / "store")
    main(["validate", store, "--no-progress"])  # returns: exit status 0
    out = capsys.readouterr().out
    assert out.count("WARNING hot3d/") == 2 and "[hand_fidelity]" in out and "OK (2 warning(s)" in out
    with pytest.raises(SystemExit) as e:
        main(["validate", store, "--no-progress", "--strict"])
    assert e.value.code == 1 and "2 warning(s), listed above (--strict)" in capsys.readouterr().err
    ep_dir = Store(tmp_path / "store").open("hot3d", "P0001_abcdef12").path
    (ep_dir / "frames.parquet").unlink()  # a real error
    with pytest.raises(SystemExit) as e:
        main(["validate", store, "--no-progress"])
    assert e.value.code == 1 and "1 problem(s) and 2 warning(s)" in capsys.readouterr().err


def test_mano_keeps_the_exact_pca_path(tmp_path, hands):
    """A hand model that is MANO decodes the PCA coefficients: no joints path, no note."""
    from megohand.data.sources.pipeline import hand_path

    class Mano:  # MANO itself cannot ship with the tests; hand_path only asks whether the model is MANO
        is_mano = True

    ep = _sequence(tmp_path, hands, umetrack_files=True).load("P0001_abcdef12")
    assert ep.hands and ep.joints  # both offered
    assert hand_path(ep, {"right": Mano()}) == ("params", "")
    path, note = hand_path(ep, hands)
    assert path == "joints" and note == ""
    ep.joints = {}
    path, note = hand_path(ep, hands)
    assert path == "params" and "PCA" in note and "'test hand right' is not MANO" in note


def test_clip_umetrack_joints(tmp_path, hands):
    """HOT3D-Clips: __hand_shapes.json__["umetrack"] + per-frame umetrack_pose.T_world_from_wrist -> camera joints
    (at zero angles the tips are the profile's, placed by the wrist pose: scipy oracle; right hands mirror x)."""
    import io
    import tarfile

    from fixtures_native import write_hot3d_clip
    from megohand.data.sources import get_source
    from megohand.data.sources.pipeline import hand_path

    _, T_cw = write_hot3d_clip(tmp_path, hands)
    path = tmp_path / "train_aria" / "clip-002832.tar"
    with tarfile.open(path) as t:
        members = {m.name: t.extractfile(m).read() for m in t.getmembers()}
    rng = np.random.default_rng(4)
    poses = {}
    for name in sorted(members):
        if name.endswith(".hands.json"):
            h = json.loads(members[name])
            for side in ("left", "right"):
                R, tr = Rotation.random(random_state=int(rng.integers(1000))), rng.normal(scale=0.3, size=3)
                q = R.as_quat()
                h.setdefault(side, {})["umetrack_pose"] = {
                    "joint_angles": [0.0] * 20,
                    "T_world_from_wrist": {"quaternion_wxyz": [q[3], *q[:3]], "translation_xyz": tr.tolist()}}
                poses.setdefault(side, []).append((R, tr))
            members[name] = json.dumps(h).encode()
    shapes = json.loads(members["__hand_shapes.json__"])
    shapes["umetrack"] = _profile_dict()["hand_model"]
    members["__hand_shapes.json__"] = json.dumps(shapes).encode()
    with tarfile.open(path, "w") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    ep = get_source("hot3d")(tmp_path).load("train_aria/clip-002832")
    tips = np.array(_profile_dict()["hand_model"]["landmark_rest_positions"][:5]) / 1000
    for side, mirror in (("left", [1, 1, 1]), ("right", [-1, 1, 1])):
        J = ep.joints[side]
        for k, (R, tr) in enumerate(poses[side]):
            world = R.apply(tips * mirror) + tr
            np.testing.assert_allclose(J[k, 16:21], world @ T_cw[k, :3, :3].T + T_cw[k, :3, 3], atol=1e-9)
    assert hand_path(ep, hands) == ("joints", "")


def test_convert_refines_hot3d_300_steps_unless_told(tmp_path):
    """HOT3D without MANO reaches its box-IoU goal at 300 refinement steps (docs/datasets.md): convert's default
    for HOT3D; other datasets keep 100; --refine-steps overrides both."""
    from megohand.cli import convert as cv
    from megohand.data.sources.common import Source
    from megohand.data.sources.hot3d import Hot3DSource

    assert Hot3DSource.refine_steps == 300 and Source.refine_steps == 100
    (tmp_path / "src").mkdir()
    for given, expected in ((None, 300), (7, 7)):
        cfg = cv.Convert(dataset="hot3d", src=tmp_path / "src", out=tmp_path / f"out{given}", refine_steps=given,
                         depth="none")
        cv._init_worker(cfg)
        assert cv._STATE["retargeter"].refine_steps == expected

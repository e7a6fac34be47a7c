"""HOT3D without MANO, on the real sample sequences (Aria and Quest 3): UmeTrack -> 21 joints -> open hand.

Needs the wearer's UmeTrack hand profile of each sequence (``umetrack_hand_user_profile.json``, 0.6 MB, in
HOT3D's toolkit test sample ``hot3d/data_loaders/tests/data_sample/<Aria|Quest3>/<seq>/``). The trimmed
fixture in ``../shared/fixtures/hot3d`` lacks it; the test looks beside the sequence first, then under
``$MEGOHAND_HOT3D_PROFILES`` (any folder holding ``<seq>/umetrack_hand_user_profile.json`` at some depth,
e.g. a checkout of that data_sample), and skips when neither has it. No stand-in profile is used: without
the wearer's profile UmeTrack's joint angles do not define a hand.

What is measured, per sequence and hand, over every annotated frame of the camera stream:

* our UmeTrack skinning (:mod:`megohand.hand.umetrack`) against HOT3D's independent 2D hand boxes
  (``box2d_hands.csv``): IoU of the box of the projected UmeTrack mesh (this checks the profile reader,
  the kinematics, the mirror of right hands and the camera chain, independently of any MANO hand);
* the converter's no-MANO path (``pipeline.episode_hands`` with the bundled open hand and the shipped
  retargeting network; 100 refinement steps, and 300, ``convert``'s default for HOT3D): mean
  fingertip distance to UmeTrack's fingertips, the IoU of the projected open-hand mesh box with the
  annotated box, and the fit error the retargeter reports (``extra.retarget_joint_error_mm``);
* why the open hand stays below UmeTrack's own mesh: the annotated boxes include a short forearm stub
  (UmeTrack's mesh reaches 16 mm behind its wrist, the open hand 6 mm). UmeTrack's mesh without the
  vertices behind its wrist loses IoU on every hand.

Issue 18's goals (fingertips <= 10 mm on average, projected-box IoU >= 0.8 on both devices, the mean over
the device's hands and frames) are asserted at 300 refinement steps; the default 100 steps is held to
what was measured (Aria 0.798, Quest 3 0.806).
"""

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from megohand.data.sources.distortion import fisheye624_project

ROOT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "hot3d"
SEQUENCES = {"Aria": "P0003_c701bd11", "Quest3": "P0002_273c2819"}
PROFILE = "umetrack_hand_user_profile.json"
pytestmark = pytest.mark.skipif(not ROOT.is_dir(), reason="real HOT3D sample (../shared/fixtures/hot3d) not present")


def _profile(device: str) -> Path | None:
    seq = SEQUENCES[device]
    here = ROOT / device / seq / PROFILE
    if here.exists():
        return here
    extra = os.environ.get("MEGOHAND_HOT3D_PROFILES")
    if extra:
        found = sorted(Path(extra).glob(f"**/{seq}/{PROFILE}"))
        if found:
            return found[0]
    return None


def _sequence_with_profile(tmp: Path, device: str) -> Path:
    """The fixture sequence (symlinked file by file) with the profile beside it, as HOT3D ships it."""
    prof = _profile(device)
    if prof is None:
        pytest.skip(f"no UmeTrack hand profile for {device}/{SEQUENCES[device]}: not in the trimmed fixture; HOT3D "
                    "ships it in each sequence folder (e.g. hot3d/data_loaders/tests/data_sample/<device>/<seq>/ of "
                    "facebookresearch/hot3d); set MEGOHAND_HOT3D_PROFILES to a folder holding "
                    "<seq>/umetrack_hand_user_profile.json")
    src = ROOT / device / SEQUENCES[device]
    dst = tmp / device / SEQUENCES[device]
    dst.mkdir(parents=True)
    for p in src.iterdir():
        (dst / p.name).symlink_to(p)
    if not (dst / PROFILE).exists():
        (dst / PROFILE).symlink_to(prof)
    return tmp


def _boxes(seq: Path, stream: str) -> dict:
    out = {}
    with open(seq / "box2d_hands.csv") as f:
        for r in csv.DictReader(f):
            if r["stream_id"] == stream:
                key = (int(r["timestamp[ns]"]), "left" if r["hand_index"] == "0" else "right")
                out[key] = np.array([float(r[k]) for k in ("x_min[pixel]", "x_max[pixel]", "y_min[pixel]", "y_max[pixel]")])
    return out


def _iou(a, b) -> float:
    ix = max(0.0, min(a[1], b[1]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[2], b[2]))
    inter = ix * iy
    return inter / ((a[1] - a[0]) * (a[3] - a[2]) + (b[1] - b[0]) * (b[3] - b[2]) - inter)


def _box(X, fisheye) -> np.ndarray:
    uv = fisheye624_project(X, fisheye)
    return np.array([uv[:, 0].min(), uv[:, 0].max(), uv[:, 1].min(), uv[:, 1].max()])


def _device_results(seq: Path, ep, hands, fits: dict) -> dict:
    """{side: {...}} of one sequence (see the module docstring); fits: {steps: episode_hands(...)}."""
    from megohand.hand import umetrack

    profile = umetrack.UmeTrackProfile.from_json(seq / PROFILE)
    rest = profile.landmark_rest_positions.numpy()
    axis = rest[11] - rest[5]  # wrist -> middle1 (HOT3D21 order), the hand's long axis at rest
    distal = (profile.mesh_vertices.numpy() - rest[5]) @ (axis / np.linalg.norm(axis)) >= 0  # not the forearm stub
    ume = {}
    with open(seq / "umetrack_hand_pose_trajectory.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            ume[rec["timestamp_ns"]] = rec["hand_poses"]
    boxes, ts, fish = _boxes(seq, ep.extra["stream"]), ep.extra["timestamps_ns"], ep.extra["fisheye624"]
    T_cw = torch.as_tensor(ep.T_cam_from_world)
    f = lambda x: torch.as_tensor(np.asarray(x), dtype=torch.float64)  # noqa: E731
    out = {}
    for key, side in (("0", "left"), ("1", "right")):
        recs = [ume[t][key] for t in ts]
        W = T_cw @ umetrack.wrist_matrix([r["wrist_xform"]["q_wxyz"] for r in recs],
                                         [r["wrist_xform"]["t_xyz"] for r in recs], side)
        angles = [r["joint_angles"] for r in recs]
        V_ume = umetrack.mesh(profile, angles, W).numpy()
        tips_ume = umetrack.landmarks(profile, angles, W).numpy()[:, :5]  # thumb..pinky tips
        ann = [boxes[(t, side)] for t in ts]
        r = {"ume_iou": np.mean([_iou(_box(V, fish), a) for V, a in zip(V_ume, ann)]),
             "ume_no_stub_iou": np.mean([_iou(_box(V[distal], fish), a) for V, a in zip(V_ume, ann)])}
        for steps, canon in fits.items():
            c = canon[side]
            o = hands[side](f(c["global_orient"]), f(c["hand_pose"]), f(c["betas"]), f(c["transl"]))
            J, V = o.joints.double().numpy(), o.vertices.double().numpy()
            r[steps] = {
                "valid": bool(np.all(c["valid"])),
                "iou": [_iou(_box(V[k], fish), a) for k, a in enumerate(ann)],
                "tip_mm": float(np.linalg.norm(J[:, 16:21] - tips_ume, axis=-1).mean() * 1e3),
                "fit_mm": float(np.nanmean(c["fit_error_mm"])),
            }
        out[side] = r
    return out


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """{device: {"path": ..., "episode": ep, side: {ume_iou, ume_no_stub_iou, 100: {...}, 300: {...}}}}."""
    from megohand.data.sources import get_source
    from megohand.data.sources.pipeline import HandModels, episode_hands, hand_path
    from megohand.hand.retarget import Retargeter

    roots = {device: _sequence_with_profile(tmp_path_factory.mktemp(device), device) for device in SEQUENCES}
    mp = pytest.MonkeyPatch()
    mp.delenv("MANO_MODEL_DIR", raising=False)  # the no-MANO path, whatever the machine has
    torch.set_num_threads(2)
    try:
        hands = HandModels(None)
        retargeters = {steps: Retargeter.from_pretrained(None, refine_steps=steps) for steps in (100, 300)}
        out = {}
        for device, task in SEQUENCES.items():
            root = roots[device]
            ep = get_source("hot3d")(root).load(task)
            fits = {steps: episode_hands(ep, hands, r) for steps, r in retargeters.items()}  # what convert stores
            out[device] = {"path": hand_path(ep, hands), "unobserved": ep.joints_unobserved,
                           **_device_results(root / device / task, ep, hands, fits)}
        return out
    finally:
        mp.undo()


def _device_iou(r: dict, steps: int) -> float:
    """Mean IoU over the device's hands and frames."""
    return float(np.mean(r["left"][steps]["iou"] + r["right"][steps]["iou"]))


@pytest.mark.parametrize("device", list(SEQUENCES))
def test_umetrack_skinning_fits_the_annotated_boxes(results, device):
    """Our UmeTrack kinematics + camera chain vs HOT3D's 2D hand boxes (measured 0.96-0.98)."""
    for side in ("left", "right"):
        assert results[device][side]["ume_iou"] >= 0.95, (device, side, results[device][side])


@pytest.mark.parametrize("device", list(SEQUENCES))
def test_goals_of_issue_18(results, device):
    """No MANO, ``--refine-steps 300``: fingertips within 10 mm of UmeTrack's, box IoU >= 0.8 per device.

    Measured: fingertips 3.4 / 3.6 (Aria), 3.7 / 3.9 mm (Quest 3); IoU Aria 0.820 / 0.819 (mean 0.820),
    Quest 3 0.837 / 0.799 (mean 0.818); the retargeter's fit error 4.2 mm (thumb1 left out)."""
    r = results[device]
    assert r["path"] == ("joints", "") and r["unobserved"] == ("thumb1",)
    for side in ("left", "right"):
        assert r[side][300]["valid"]
        assert r[side][300]["tip_mm"] <= 10.0, (device, side, r[side][300]["tip_mm"])
    assert _device_iou(r, 300) >= 0.8, (device, _device_iou(r, 300))


@pytest.mark.parametrize("device", list(SEQUENCES))
def test_default_refinement_holds_what_was_measured(results, device):
    """``convert``'s default 100 refinement steps: fingertips 3.3-3.6 mm, IoU Aria 0.805 / 0.790 (mean
    0.798), Quest 3 0.826 / 0.786 (mean 0.806); fit error 4.1-4.8 mm. Bounds: the goal on fingertips, no
    hand below 0.75, the device mean within 0.01 of the goal, the fit error below 6 mm."""
    r = results[device]
    for side in ("left", "right"):
        s = r[side][100]
        assert s["valid"] and s["tip_mm"] <= 10.0 and s["fit_mm"] < 6.0, (device, side, s["tip_mm"], s["fit_mm"])
        assert np.mean(s["iou"]) >= 0.75, (device, side, np.mean(s["iou"]))
    assert _device_iou(r, 100) >= 0.79, (device, _device_iou(r, 100))


@pytest.mark.parametrize("device", list(SEQUENCES))
def test_annotated_boxes_include_a_forearm_stub(results, device):
    """Why no hand without a forearm reaches UmeTrack's 0.96-0.98: UmeTrack's own mesh without the vertices
    behind its wrist loses IoU with the annotated boxes on every hand (measured 0.866 / 0.804 Aria,
    0.884 / 0.879 Quest 3, from 0.965 / 0.961 / 0.972 / 0.981)."""
    for side in ("left", "right"):
        r = results[device][side]
        assert r["ume_no_stub_iou"] <= r["ume_iou"] - 0.05, (device, side, r["ume_iou"], r["ume_no_stub_iou"])

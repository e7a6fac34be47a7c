"""The synthetic worlds ("grounded", "classic"): determinism, camera-frame hands, instructions, splits, carried
objects, the grounded world's guarantees (text that never says where, same-shape and same-colour distractors,
contact frame and destination), the classic world unchanged, store round trip. Oracles: the hand model's own
forward pass in the world frame moved by numpy float64 rigid transforms, pinhole projection by hand, set algebra
on combos, a word list written here, fingerprints of the classic world computed before the grounded one existed."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

from megohand.data.synthetic import SynthConfig, all_combos, combo_split, generate_episode
from megohand.data.synthetic.scene import COLORS
from megohand.data.synthetic.shapes import SHAPES, make_shape
from megohand.data.synthetic.tasks import TASKS

torch.set_num_threads(1)
PARENTS = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]


def stick_hand_asset() -> dict:
    """A small right hand in MANO format made of boxes (fingers +x, palm normal +y, thumb +z),
    for machines without the bundled open hand or MANO."""
    J = np.zeros((16, 3))
    for base, z, lens in [(1, 0.022, (0.035, 0.022, 0.018)), (4, 0.002, (0.04, 0.025, 0.02)),
                          (7, -0.034, (0.028, 0.018, 0.016)), (10, -0.016, (0.037, 0.024, 0.019))]:
        J[base] = (0.085, 0.0, z)
        J[base + 1] = J[base] + (lens[0], 0, 0)
        J[base + 2] = J[base + 1] + (lens[1], 0, 0)
    d = np.array([0.6, 0.0, 0.8])
    J[13] = (0.02, 0.01, 0.03)
    J[14], J[15] = J[13] + 0.035 * d, J[13] + 0.065 * d
    verts, faces, weights, tips = [], [], [], {}
    for a, b, j in [(0, 4, 0)] + [(j, j + 1, j) for j in range(1, 16) if j % 3 != 0] + \
                   [(j, None, j) for j in range(3, 16, 3)]:
        start = J[a] if j else np.zeros(3)
        end = J[b] if b is not None else J[a] + 0.022 * (J[a] - J[a - 1]) / np.linalg.norm(J[a] - J[a - 1])
        length = np.linalg.norm(end - start)
        v, f = make_shape("box", (length, 0.016 if j else 0.018, 0.07 if j == 0 else 0.016))
        v = v.astype(float) - [-length / 2, 0, 0.008 if j else 0.009]
        axis = (end - start) / length
        side = np.cross(axis, [0, 1.0, 0])
        R = np.stack([axis, side, [0, 1.0, 0]], axis=1)
        faces.append(f + sum(len(x) for x in verts))
        verts.append(v @ R.T + start)
        weights.append(np.tile(np.eye(16)[j], (len(v), 1)))
        if b is None:
            tips[j] = sum(len(x) for x in verts) - 1
    V = np.concatenate(verts + [J])
    n = len(V) - 16
    Jreg = np.zeros((16, len(V)))
    Jreg[np.arange(16), n + np.arange(16)] = 1
    shapedirs = np.zeros((len(V), 3, 10))
    shapedirs[:, :, 0] = 0.05 * V
    return dict(v_template=V, shapedirs=shapedirs, posedirs=np.zeros((len(V), 3, 135)), J_regressor=Jreg,
                weights=np.concatenate(weights + [np.eye(16)]), faces=np.concatenate(faces),
                hands_components=np.eye(45), hands_mean=np.zeros(45), parents=PARENTS,
                tip_vertex_ids=np.array([tips[15], tips[3], tips[6], tips[12], tips[9]]), name="stick hand",
                is_mano=False, license="CC0")


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
    """The hand megohand loads by default (MANO / bundled open hand), else the stick hand."""
    from megohand.hand import load_hand_model
    from megohand.hand.mano_io import save_npz

    try:
        return load_hand_model()
    except FileNotFoundError:
        path = tmp_path_factory.mktemp("hand") / "MANO_RIGHT.npz"
        save_npz(path, stick_hand_asset())
        return load_hand_model(path)


CFG = SynthConfig(seed=3, width=96, height=96, world="classic")
GROUNDED = SynthConfig(seed=3, width=96, height=96)


@pytest.fixture(scope="module")
def classic_episodes(hand):
    return [generate_episode(CFG, i, hand) for i in range(12)]


@pytest.fixture(scope="module")
def grounded_episodes(hand):
    return [generate_episode(GROUNDED, i, hand) for i in range(24)]


@pytest.fixture(scope="module", params=["classic", "grounded"])
def episodes(request, classic_episodes, grounded_episodes):
    """The episodes of each world in turn (tests of what both worlds guarantee)."""
    return classic_episodes if request.param == "classic" else grounded_episodes


_FLOAT64_HANDS: dict = {}


def forward(hand, params: dict) -> np.ndarray:
    """Joints (T, 21, 3) float64 of a params dict (through a float64 copy of ``hand``: the generator keeps its own)."""
    if id(hand) not in _FLOAT64_HANDS:
        _FLOAT64_HANDS[id(hand)] = copy.deepcopy(hand).double()
    p = {k: torch.as_tensor(np.asarray(params[k]), dtype=torch.float64) for k in ("global_orient", "hand_pose",
                                                                                  "betas", "transl")}
    with torch.no_grad():
        return _FLOAT64_HANDS[id(hand)](p["global_orient"], p["hand_pose"], p["betas"], p["transl"]).joints.numpy()


def test_shapes_are_closed_outward_meshes():
    for shape, dims, volume in [("box", (0.04, 0.05, 0.06), 0.04 * 0.05 * 0.06),
                                ("cylinder", (0.03, 0.08), np.pi * 0.03**2 * 0.08),
                                ("cone", (0.03, 0.07), np.pi * 0.03**2 * 0.07 / 3),
                                ("sphere", (0.03,), 4 / 3 * np.pi * 0.03**3)]:
        v, f = make_shape(shape, dims)
        a, b, c = v[f[:, 0]].astype(float), v[f[:, 1]].astype(float), v[f[:, 2]].astype(float)
        signed = np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6  # divergence theorem
        assert signed == pytest.approx(volume, rel=0.05), shape  # positive: faces wind outward
        edges = np.sort(np.concatenate([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]]), axis=1)
        _, counts = np.unique(edges, axis=0, return_counts=True)
        assert (counts == 2).all(), f"{shape} is not closed"
        assert v[:, 2].min() == pytest.approx(0.0, abs=1e-7)


def test_generator_is_deterministic(hand, episodes):
    ep = episodes[5]
    cfg = CFG if ep.world == "classic" else GROUNDED
    again = generate_episode(cfg, 5, hand)
    assert again.instruction == ep.instruction and again.segments == ep.segments
    for k in ep.hands:
        np.testing.assert_array_equal(again.hands[k], ep.hands[k])
    np.testing.assert_array_equal(again.object_poses, ep.object_poses)
    np.testing.assert_array_equal(again.T_cam_from_world, ep.T_cam_from_world)
    assert again.meta_extra() == ep.meta_extra()
    other = generate_episode(SynthConfig(seed=4, width=96, height=96, world=ep.world), 5, hand)
    assert not np.array_equal(other.hands["transl"][:5], ep.hands["transl"][:5])
    assert not np.array_equal(generate_episode(cfg, 6, hand).hands["transl"][:5], ep.hands["transl"][:5])


def test_hands_finite_in_camera_frame_and_match_world(hand, episodes):
    for ep in episodes:
        assert 40 <= ep.num_frames <= 80
        for k, v in ep.hands.items():
            assert np.isfinite(v).all(), k
        J_cam = forward(hand, ep.hands)
        assert (J_cam[..., 2] > 0.1).all(), f"hand behind or too close to the camera in {ep.episode}"
        # oracle: the world-frame hand moved by T_cam_from_world (numpy float64)
        J_world = forward(hand, ep.hand_world)
        T = ep.T_cam_from_world
        expected = np.einsum("tij,tnj->tni", T[:, :3, :3], J_world) + T[:, None, :3, 3]
        np.testing.assert_allclose(J_cam, expected, atol=2e-5)
        R = T[:, :3, :3]
        np.testing.assert_allclose(R @ R.transpose(0, 2, 1), np.broadcast_to(np.eye(3), R.shape), atol=1e-9)


def test_hand_stays_above_the_table(hand, episodes):
    for ep in episodes:
        p = {k: torch.as_tensor(np.asarray(ep.hand_world[k]), dtype=torch.float64)
             for k in ("global_orient", "hand_pose", "betas", "transl")}
        forward(hand, ep.hand_world)  # makes the float64 copy
        with torch.no_grad():
            v = _FLOAT64_HANDS[id(hand)](p["global_orient"], p["hand_pose"], p["betas"], p["transl"]).vertices.numpy()
        assert v[..., 2].min() > 0.0, ep.episode  # world z up, table top at z = 0


def test_joints_project_into_image_at_the_object(hand, episodes):
    for ep in episodes:
        k = int(np.argmax(ep.attach >= 0))  # first frame in contact with the target
        assert ep.attach[k] == ep.target
        J = forward(hand, ep.hands)[k]
        uvw = J @ ep.K.T
        uv = uvw[:, :2] / uvw[:, 2:]
        assert (uv[:, 0] > 0).all() and (uv[:, 0] < ep.width).all(), ep.episode
        assert (uv[:, 1] > 0).all() and (uv[:, 1] < ep.height).all(), ep.episode
        # and the hand is near the target: palm (mean of wrist + MCPs) within 10 cm of its centre
        T_wc = np.linalg.inv(ep.T_cam_from_world[k])
        palm_w = T_wc[:3, :3] @ J[[0, 1, 4, 7, 10]].mean(0) + T_wc[:3, 3]
        centre = ep.object_poses[k, ep.target, :3, 3] + [0, 0, ep.objects[ep.target].height / 2]
        assert np.linalg.norm(palm_w - centre) < 0.10, ep.episode


def test_instruction_names_the_target(classic_episodes):
    names = "|".join(SHAPES)
    colors = "|".join(COLORS)
    for ep in classic_episodes:
        m = re.search(rf"the ({colors}) ({names})", ep.instruction)
        assert m, ep.instruction
        target = ep.objects[ep.target]
        assert (m.group(1), m.group(2)) == (target.color, target.shape)
        assert target.rgb == COLORS[m.group(1)]
        # exactly one object of that colour: the name is unambiguous
        assert sum(o.color == target.color for o in ep.objects) == 1
        assert 3 <= len(ep.objects) <= 5
        ref = re.search(rf"(?:left of|right of|in front of|behind) the ({colors}) ({names})", ep.instruction)
        if ep.task == "pick_place":
            assert ref and any(o.name == f"{ref.group(1)} {ref.group(2)}" for o in ep.objects[1:])
        assert ep.segments[0][0] == 0 and ep.segments[-1][1] == ep.num_frames
        # the phase that carries the task's choice names it (the direction, reference or sense)
        texts = [t for _, _, t in ep.segments]
        p = ep.params
        choice = {"pick_place": f"move the {target.name} {p.get('relation')} the {p.get('reference')}",
                  "move": f"move the {target.name} {p.get('direction')}", "push": f"push the {target.name} {p.get('direction')}",
                  "rotate": f"rotate the {target.name} {p.get('rotation')}", "lift": f"lift the {target.name}"}[ep.task]
        assert choice in texts, (ep.task, texts)


def test_splits_hold_out_unseen_combos(hand):
    train, test = combo_split(0, 0.2)
    assert set(train).isdisjoint(test) and set(train) | set(test) == set(all_combos())
    assert len(test) == round(0.2 * len(all_combos()))
    for i, part in enumerate(zip(*train)):  # every shape, colour and task is seen in training
        assert set(part) == set([SHAPES, tuple(COLORS), TASKS][i])
    assert combo_split(0, 0.2) == (train, test) and combo_split(1, 0.2)[1] != test
    cfg = SynthConfig(seed=0, width=64, height=64, test_fraction=0.4)
    seen = {"train": set(), "val": set(), "test": set()}
    for i in range(30):
        ep = generate_episode(cfg, i, hand)
        seen[ep.split].add(ep.combo)
    assert seen["test"] and seen["train"]
    assert seen["test"] <= set(test) and (seen["train"] | seen["val"]) <= set(train)


def test_grasped_object_moves_with_the_hand(hand, episodes):
    checked = 0
    for ep in episodes:
        held = np.nonzero(ep.attach == ep.target)[0]
        R = torch.as_tensor(ep.hand_world["global_orient"])
        from megohand.geometry.rotations import axis_angle_to_matrix

        R = axis_angle_to_matrix(R).numpy()
        wrist = forward(hand, ep.hand_world)[:, 0]
        # object position and orientation in the wrist frame stay constant while held
        rel_p = np.einsum("tji,tj->ti", R[held], ep.object_poses[held, ep.target, :3, 3] - wrist[held])
        rel_R = np.einsum("tji,tjk->tik", R[held], ep.object_poses[held, ep.target, :3, :3])
        np.testing.assert_allclose(rel_p, np.broadcast_to(rel_p[0], rel_p.shape), atol=1e-6)
        np.testing.assert_allclose(rel_R, np.broadcast_to(rel_R[0], rel_R.shape), atol=1e-6)
        start, end = ep.object_poses[0, ep.target], ep.object_poses[-1, ep.target]
        if ep.task in ("pick_place", "move", "push"):
            assert np.linalg.norm(end[:2, 3] - start[:2, 3]) > 0.05
            checked += 1
        if ep.task == "lift":
            assert ep.object_poses[:, ep.target, 2, 3].max() > 0.07
        if ep.task == "rotate":
            angle = np.arccos(np.clip((np.trace(end[:3, :3] @ start[:3, :3].T) - 1) / 2, -1, 1))
            assert np.deg2rad(55) < angle < np.deg2rad(105)
        assert abs(end[2, 3]) < 1e-6, "object left in the air"
        others = [i for i in range(len(ep.objects)) if i != ep.target]
        np.testing.assert_array_equal(ep.object_poses[:, others], np.broadcast_to(
            ep.object_poses[:1, others], ep.object_poses[:, others].shape))
    assert checked > 0


def test_synth_store_round_trip(hand, tmp_path):
    from megohand.data.store import Store
    from megohand.data.synthetic.build import synthesize
    from megohand.data.synthetic.world import make_renderer, render_episode

    cfg = SynthConfig(seed=1, width=64, height=48)
    assert synthesize(tmp_path, 2, cfg, progress=False) == [0, 1]
    assert synthesize(tmp_path, 3, cfg, progress=False) == [2]  # resume: only the missing one
    with pytest.raises(ValueError, match="another config"):
        synthesize(tmp_path, 4, SynthConfig(seed=2, width=64, height=48), progress=False)
    store = Store(tmp_path)
    assert [r.episode for r in store.episodes("synthetic")] == ["000000", "000001", "000002"]
    ep = generate_episode(cfg, 1, hand)
    frames = render_episode(ep, hand, make_renderer(64, 48))
    stored = store.open("synthetic", "000001")
    assert stored.meta.instruction == ep.instruction and stored.meta.split == ep.split
    assert [tuple(s) for s in stored.meta.segments] == [tuple(s) for s in ep.segments]
    assert stored.meta.hand_source == "synthetic" and stored.meta.depth_source == "rendered"
    np.testing.assert_allclose(np.asarray(stored.meta.K), ep.K)
    got = stored.hands("right")
    for k, v in ep.hands.items():
        np.testing.assert_allclose(np.asarray(got[k]).reshape(v.shape), v, atol=1e-6, err_msg=k)
    np.testing.assert_allclose(stored.T_cam_from_world, ep.T_cam_from_world, atol=1e-6)
    for k in (0, ep.num_frames - 1):
        np.testing.assert_allclose(stored.depth(k), frames["depth"][k], atol=0.0011)  # uint16 mm on disk
        assert np.abs(stored.rgb(k).astype(int) - frames["rgb"][k]).mean() < 6  # JPEG
    poses = np.asarray(stored.meta.extra["object_poses"])
    np.testing.assert_allclose(poses[..., :3], ep.object_poses[..., :3, 3], atol=1e-6)
    extra = stored.meta.extra
    assert extra["world"] == "grounded" and extra["synth_config"]["world"] == "grounded"
    assert extra["contact_frame"] == ep.contact_frame and len(extra["landmarks"]) == len(ep.landmarks) == 2


def test_stores_of_before_the_grounded_world_resume_as_classic(tmp_path):
    """A store whose synth_config has no "world" was drawn from the classic world."""
    import json

    from megohand.data.synthetic.build import synthesize

    cfg = SynthConfig(seed=1, width=32, height=32, min_frames=20, max_frames=30, world="classic")
    synthesize(tmp_path, 1, cfg, progress=False)
    meta = next((tmp_path / "synthetic" / "episodes").iterdir()) / "meta.json"
    d = json.loads(meta.read_text())
    del d["extra"]["synth_config"]["world"]
    meta.write_text(json.dumps(d))
    assert synthesize(tmp_path, 2, cfg, progress=False) == [1]
    with pytest.raises(ValueError, match="'world': \\('classic', 'grounded'\\)"):
        synthesize(tmp_path, 3, SynthConfig(seed=1, width=32, height=32, min_frames=20, max_frames=30), progress=False)


def test_render_masks_show_hand_and_target(hand, grounded_episodes):
    from megohand.data.synthetic.world import make_renderer, mask_ids, render_episode

    ep = grounded_episodes[0]
    out = render_episode(ep, hand, make_renderer(ep.width, ep.height))
    T = ep.num_frames
    assert out["rgb"].shape == (T, ep.height, ep.width, 3) and out["depth"].shape == (T, ep.height, ep.width)
    ids = mask_ids(ep)
    hand_id, target_id = len(ep.objects) + 2, ep.target + 2
    assert ids["hand"] == hand_id and ids["objects"][ep.target] == target_id and len(ids["landmarks"]) == 2
    assert (out["mask"] == hand_id).any(axis=(1, 2)).mean() > 0.9
    assert (out["mask"][0] == target_id).sum() > 4
    # the target's and the mats' pixels have their colour's dominant channel
    for obj, i in [(ep.objects[ep.target], target_id)] + list(zip(ep.landmarks, ids["landmarks"])):
        assert (out["mask"][0] == i).sum() > 4, obj.name
        px = out["rgb"][0][out["mask"][0] == i].astype(float).mean(0)
        assert np.corrcoef(px, np.asarray(obj.rgb))[0, 1] > 0.8, obj.name
    assert np.isfinite(out["depth"]).all() and out["depth"].max() <= 2.0


# ----------------------------------------------------------------------------- the grounded world's guarantees

# Words that say where something is or goes (written here, independently of the world's own list).
WHERE = ("left", "right", "forward", "forwards", "front", "behind", "back", "backwards", "toward", "towards",
         "away", "clockwise", "counterclockwise", "anticlockwise", "near", "far", "closer", "beside", "next",
         "centre", "center", "middle", "corner", "edge", "side", "above", "below", "up", "down", "north",
         "south", "east", "west")


def test_grounded_text_names_what_never_where(grounded_episodes):
    landmark_tasks = {"pick_place", "push", "move"}
    for ep in grounded_episodes:
        texts = [ep.instruction] + [t for _, _, t in ep.segments]
        for text in texts:
            words = set(re.findall(r"[a-z]+", text.lower()))
            assert not words & set(WHERE), (text, words & set(WHERE))
            assert not re.search(r"\d", text), text
        target = ep.objects[ep.target]
        assert f"the {target.name}" in ep.instruction
        if ep.task in landmark_tasks:
            lm = ep.params["landmark"]
            assert f"the {lm}" in ep.instruction
            kind = ep.params["landmark_kind"]
            pool = ep.landmarks if kind == "mat" else ep.objects
            assert pool[ep.params["landmark_index"]].name == lm and lm != target.name
            assert sum(o.name == lm for o in ep.objects + ep.landmarks) == 1  # the name is unambiguous
        # segments cover the episode; the phases say the same in names
        assert ep.segments[0][0] == 0 and ep.segments[-1][1] == ep.num_frames
        assert [(s, e) for s, e, _ in ep.phases] == [(s, e) for s, e, _ in ep.segments]
    assert {ep.task for ep in grounded_episodes} == set(TASKS)


def test_grounded_distractors_share_shape_and_colour(grounded_episodes):
    for ep in grounded_episodes:
        target = ep.objects[ep.target]
        names = [o.name for o in ep.objects]
        assert len(set(names)) == len(names) and sum(n == target.name for n in names) == 1
        others = [o for i, o in enumerate(ep.objects) if i != ep.target]
        assert any(o.shape == target.shape for o in others), names
        assert any(o.color == target.color for o in others), names
        if len(ep.objects) >= 4:
            assert sum(o.shape == target.shape for o in others) >= 2, names
        mats = [m.name for m in ep.landmarks]
        assert len(mats) == len(set(mats)) >= 2 and all(m.endswith(" mat") for m in mats)


def test_grounded_start_does_not_depend_on_the_target(hand, grounded_episodes):
    wrist0 = np.stack([forward(hand, {k: v[:1] for k, v in ep.hand_world.items()})[0, 0] for ep in grounded_episodes])
    targets = np.stack([ep.objects[ep.target].xy for ep in grounded_episodes])
    assert targets.std(0).min() > 0.05  # the targets are all over the table ...
    assert wrist0[:, :2].std(0).max() < 0.015  # ... the hand starts from the same rest pose


def palm_world(hand, ep, k: int) -> np.ndarray:
    """World position of the palm (mean of the wrist and the four finger bases) at frame ``k``."""
    J = forward(hand, {key: v[k:k + 1] for key, v in ep.hand_world.items()})[0]
    return J[[0, 1, 4, 7, 10]].mean(0)


def test_contact_frame_and_destination(hand, episodes):
    for ep in episodes:
        k = ep.contact_frame
        assert k is not None and ep.attach[k] == ep.target and (ep.attach[:k] != ep.target).all()
        centres = ep.object_poses[k, :, :3, 3] + np.array([[0, 0, o.height / 2] for o in ep.objects])
        dist = np.linalg.norm(centres - palm_world(hand, ep, k), axis=1)
        assert dist[ep.target] < 0.10, (ep.episode, dist)
        assert int(np.argmin(dist)) == ep.target, (ep.episode, ep.task, dist)  # what target accuracy counts
        end = ep.object_poses[-1, ep.target, :3, 3]
        if ep.task in ("lift", "rotate"):
            assert ep.destination is None
            np.testing.assert_allclose(end, ep.object_poses[0, ep.target, :3, 3], atol=1e-6)
        else:
            assert ep.destination.shape == (3,)
            np.testing.assert_allclose(end, ep.destination, atol=1e-6)
        if ep.world == "grounded" and ep.task in ("pick_place", "push"):
            mat = ep.landmarks[ep.params["landmark_index"]]
            assert np.hypot(*(ep.destination[:2] - mat.xy)) < 0.5 * mat.radius
        if ep.world == "grounded" and ep.task == "move":
            ref = ep.objects[ep.params["landmark_index"]]
            gap = np.hypot(*(ep.destination[:2] - ref.xy)) - ref.radius - ep.objects[ep.target].radius
            assert 0.0 < gap < 0.05


def test_meta_extra_describes_the_world(episodes):
    import json

    from megohand.data.synthetic.world import objects_from_extra

    for ep in episodes[:4]:
        extra = json.loads(json.dumps(ep.meta_extra()))
        assert extra["world"] == ep.world and extra["target"] == ep.target == 0
        assert extra["contact_frame"] == ep.contact_frame
        assert extra["destination"] == (None if ep.destination is None else pytest.approx(list(ep.destination), abs=1e-6))
        assert [p[2] for p in extra["phases"]][:2] == ["idle", "reach"]
        objs = objects_from_extra(extra)
        assert [o["name"] for o in objs] == [o.name for o in ep.objects + ep.landmarks]
        for o, lm in zip(objs[len(ep.objects):], ep.landmarks):  # mats lie still where they were drawn
            np.testing.assert_allclose(o["poses"][:, :2, 3], np.broadcast_to(lm.xy, (ep.num_frames, 2)))
            assert o["vertices"][:, 2].max() < 0.01


def classic_fingerprint(ep) -> list:
    """Hash of the texts and choices, and weighted sums of the arrays (tolerant to the last float bits)."""
    import hashlib
    import json

    text = json.dumps([ep.split, ep.task, ep.instruction, [list(s) for s in ep.segments],
                       [o.name for o in ep.objects], ep.attach.tolist()])
    arrays = [ep.hands["global_orient"], ep.hands["hand_pose"], ep.hands["transl"], ep.hands["betas"],
              ep.object_poses, ep.T_cam_from_world]
    weighted = [float((np.asarray(a, np.float64) * np.linspace(1, 2, a.size).reshape(a.shape)).sum()) for a in arrays]
    return [hashlib.sha256(text.encode()).hexdigest()[:16]] + weighted


# Computed with the stick hand on main before the grounded world was added (commit e96dce8).
CLASSIC_FINGERPRINTS = [
    ['80dc99133d8b1536', -114.071878, 569.912294, 37.600494, 39.344755, 952.553382, 108.381946],
    ['ec091c69b720f4c6', -162.508575, 442.08359, 35.971795, 120.140253, 1069.649256, 118.684087],
    ['13a2f0750050e901', -270.360508, 393.941877, 28.004135, -137.783683, 367.925022, 73.831992],
    ['9c2ca49a6d5895f5', -159.996784, 357.602223, 23.066612, -60.295449, 569.190263, 93.904723],
    ['33cc8986ead1e8fc', -201.912815, 591.79119, 37.888723, -119.557287, 438.203726, 106.68617],
    ['d2a1291716bafad5', -151.184993, 401.040277, 18.946725, 111.675763, 825.1437, 107.874287],
]


def test_classic_world_is_unchanged(tmp_path):
    from megohand.hand import load_hand_model
    from megohand.hand.mano_io import save_npz

    save_npz(tmp_path / "MANO_RIGHT.npz", stick_hand_asset())
    stick = load_hand_model(tmp_path / "MANO_RIGHT.npz")
    cfg = SynthConfig(seed=11, width=64, height=48, world="classic")
    for i, expected in enumerate(CLASSIC_FINGERPRINTS):
        got = classic_fingerprint(generate_episode(cfg, i, stick))
        assert got[0] == expected[0], i
        np.testing.assert_allclose(got[1:], expected[1:], rtol=0, atol=2e-6, err_msg=str(i))


def test_unknown_world_is_refused(hand):
    with pytest.raises(ValueError, match="unknown synthetic world 'nope'"):
        generate_episode(SynthConfig(world="nope"), 0, hand)


def test_referring_target_names_a_visible_object_where_the_pinhole_puts_it(hand, tmp_path):
    """The referring question of grounding (``referring_target``): its name is one of the episode's objects, its uv
    the pinhole projection (u = fx X / Z + cx, pixel centres at integers) of that object's centre over the image
    size; over many draws every visible object is asked for, never one outside the picture."""
    from megohand.data.store import Store
    from megohand.data.synthetic.build import synthesize
    from megohand.data.synthetic.facts import referring_target, scene_facts
    from megohand.data.windows import WindowDataset

    synthesize(tmp_path, 1, SynthConfig(seed=3, width=64, height=64), progress=False)
    ep = Store(tmp_path).open("synthetic", "000000")
    facts = scene_facts(ep.meta.extra, ep.T_cam_from_world)
    objects = ep.meta.extra["objects"]
    assert facts.names == tuple(f"{o['color']} {o['shape']}" for o in objects)
    K, k, S = np.asarray(ep.meta.K, np.float64), 0, 64
    X = facts.centers[k]
    uv = (np.stack([K[0, 0] * X[:, 0] / X[:, 2] + K[0, 2], K[1, 1] * X[:, 1] / X[:, 2] + K[1, 2]], -1) + 0.5) / S
    inside = np.all((uv >= 0) & (uv <= 1), -1) & (X[:, 2] > 0)
    rng, asked = np.random.default_rng(0), set()
    for _ in range(200):
        text, q, ok = referring_target(facts, k, K, S, rng)
        j = facts.names.index(text.removeprefix("the "))
        assert ok and inside[j]
        np.testing.assert_allclose(q, uv[j], atol=1e-5)
        asked.add(j)
    assert asked == set(np.flatnonzero(inside))
    assert referring_target(None, k, K, S, rng) == ("", pytest.approx(np.zeros(2)), False)
    s = WindowDataset(tmp_path, split=None, image_size=64, window_scope="episode")[0]
    assert s["refer_valid"] and s["refer_text"].removeprefix("the ") in facts.names


def test_objects_in_image_carry_each_visible_object_with_its_colour_and_shape(hand, tmp_path):
    """Scene parsing's targets (``objects_in_image``): every object inside the picture at its pinhole projection, its
    colour and shape as indices of the world's vocabulary; the rest (outside, padding, no facts) -1."""
    from megohand.data.store import Store
    from megohand.data.synthetic.build import synthesize
    from megohand.data.synthetic.facts import MAX_OBJECTS, objects_in_image, scene_facts
    from megohand.data.windows import WindowDataset

    synthesize(tmp_path, 1, SynthConfig(seed=3, width=64, height=64), progress=False)
    ep = Store(tmp_path).open("synthetic", "000000")
    facts = scene_facts(ep.meta.extra, ep.T_cam_from_world)
    K, S = np.asarray(ep.meta.K, np.float64), 64
    for k in (0, len(facts.centers) - 1):
        X = facts.centers[k]
        uv = (np.stack([K[0, 0] * X[:, 0] / X[:, 2] + K[0, 2], K[1, 1] * X[:, 1] / X[:, 2] + K[1, 2]], -1) + 0.5) / S
        inside = np.all((uv >= 0) & (uv <= 1), -1) & (X[:, 2] > 0)
        got_uv, attr = objects_in_image(facts, k, K, S)
        assert got_uv.shape == (MAX_OBJECTS, 2) and attr.shape == (MAX_OBJECTS, 2)
        seen = [(list(COLORS).index(o["color"]), SHAPES.index(o["shape"]))
                for j, o in enumerate(ep.meta.extra["objects"]) if inside[j]]
        assert seen
        assert [tuple(a) for a in attr[:len(seen)]] == seen and (attr[len(seen):] == -1).all()
        np.testing.assert_allclose(got_uv[:len(seen)], uv[inside], atol=1e-5)
    assert (objects_in_image(None, 0, K, S)[1] == -1).all()
    s = WindowDataset(tmp_path, split=None, image_size=64, window_scope="episode")[0]
    assert s["object_attr"].dtype == torch.int64 and (s["object_attr"][:, 0] >= 0).any()


def test_destination_is_a_grounding_target_only_where_the_text_names_it(hand, tmp_path):
    """``image_targets`` with the window's text: the destination counts where the text names its landmark (the
    episode's ``params.landmark``, e.g. "carry the red cube to the blue mat") and not in phase texts that do not
    ("reach for the red cube", "return the hand to rest"); without text, wherever it is in the picture. The
    windows carry the rule."""
    from megohand.data.store import Store
    from megohand.data.synthetic.build import synthesize
    from megohand.data.synthetic.facts import image_targets, scene_facts
    from megohand.data.windows import WindowDataset

    synthesize(tmp_path, 4, SynthConfig(seed=3, width=64, height=64), progress=False)
    store = Store(tmp_path)
    seen_named = seen_unnamed = 0
    for ref in store.episodes():
        ep = store.open(ref)
        facts = scene_facts(ep.meta.extra, ep.T_cam_from_world)
        landmark = (ep.meta.extra.get("params") or {}).get("landmark", "")
        assert facts.destination_name == landmark
        if facts.destination is None:
            continue
        K, k = np.asarray(ep.meta.K, np.float64), 0
        if not image_targets(facts, k, K, 64)[1][1]:
            continue  # destination outside the first picture
        assert image_targets(facts, k, K, 64, f"put the {facts.names[facts.target]} on the {landmark}")[1][1]
        assert not image_targets(facts, k, K, 64, f"reach for the {facts.names[facts.target]}")[1][1]
        assert not image_targets(facts, k, K, 64, "return the hand to rest")[1][1]
    ds = WindowDataset(tmp_path, split=None, image_size=64, window_scope="episode")
    for i in range(0, len(ds), 5):
        s = ds[i]
        facts = ds.facts(int(ds._ep[i]))
        if s["ground_valid"][1]:
            assert facts.destination_name in s["instruction"]
            seen_named += 1
        elif facts.destination is not None and facts.destination_name not in s["instruction"]:
            seen_unnamed += 1
    assert seen_named and seen_unnamed

"""HOT3D converter on the real trimmed Aria sequence in ../shared/fixtures/hot3d (skips when absent).

What is checked, and how exact it is:

* FISHEYE624 projection (our numpy code) against Project Aria's own implementation
  (``projectaria-tools``, optional; skipped when not installed), with the real RGB calibration.
* The frame chain ``T_cam_from_world = (T_world_device T_device_camera)^-1`` and the projection,
  **independently of any hand model**: the UmeTrack wrist positions (a second, model-free annotation
  of the same hands) land inside the annotated RGB hand boxes (box2d_hands.csv, stream 214-1) of
  the same timestamps, for every frame and both hands.
* The converted MANO hands. The wrist sits at ``J0(betas) + transl`` where only ``J0`` comes from the
  hand model. With real MANO ($MANO_MODEL_DIR) that is exact and we also require **all 21 joints**
  inside the boxes. Without MANO (bundled open hand) the 15 PCA coefficients cannot be turned into
  MANO finger rotations and J0(betas) is the open hand's (its rest J0 matches MANO's, its shape space
  does not), so only the wrist is checked: inside every box, and within 3 cm of the UmeTrack wrist
  (measured with the open hand: >= 52 px inside the boxes, 1.2 / 1.6 cm mean distance right / left).
  That is an approximate check, stated as such. (This fixture has no UmeTrack hand profile, so the
  converter takes the MANO PCA path here and says that the fingers are approximate; the no-MANO UmeTrack
  path is checked in test_hot3d_umetrack_real.py.)
"""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from megohand.data.sources.common import canonical_hands
from megohand.data.sources.distortion import fisheye624_project

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "hot3d"
SEQ = ROOT / "Aria" / "P0003_c701bd11"
pytestmark = pytest.mark.skipif(not SEQ.is_dir(), reason="real HOT3D sample (../shared/fixtures/hot3d) not present")


@pytest.fixture(scope="module")
def episode():
    from megohand.data.sources import get_source

    return get_source("hot3d")(ROOT).load("P0003_c701bd11")


def _boxes():
    out = {}
    with open(SEQ / "box2d_hands.csv") as f:
        for r in csv.DictReader(f):
            if r["stream_id"] == "214-1":
                key = (int(r["timestamp[ns]"]), "left" if r["hand_index"] == "0" else "right")
                out[key] = np.array([float(r[k]) for k in ("x_min[pixel]", "x_max[pixel]", "y_min[pixel]", "y_max[pixel]")])
    return out


def _inside(uv, box, margin):
    return (box[0] - margin <= uv[..., 0]) & (uv[..., 0] <= box[1] + margin) & (box[2] - margin <= uv[..., 1]) & (
        uv[..., 1] <= box[3] + margin
    )


def test_fisheye624_matches_projectaria_tools(episode):
    calibration = pytest.importorskip("projectaria_tools.core.calibration")
    sophus = pytest.importorskip("projectaria_tools.core.sophus")
    params = np.array(episode.extra["fisheye624"])
    aria_params = np.concatenate([params[:1], params[2:]])  # Aria's 15-parameter form (one focal)
    cam = calibration.CameraCalibration(
        "camera-rgb", calibration.CameraModelType.FISHEYE624, aria_params, sophus.SE3(), 1408, 1408, None, 3.0, "x"
    )
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3)) * [0.3, 0.3, 0.05] + [0, 0, 0.5]
    ours = fisheye624_project(X, params)
    theirs = np.stack([cam.project_no_checks(x) for x in X])
    np.testing.assert_allclose(ours, theirs, atol=1e-6)


def test_only_rgb_frames_and_official_split(episode):
    assert episode.num_frames == 34  # 68 hand timestamps = 34 RGB (214-1) + 34 SLAM frames
    assert episode.split == "train" and episode.extra["stream"] == "214-1"
    assert episode.width == episode.height == 1408
    assert set(episode.hands) == {"left", "right"} and all(h.valid.all() for h in episode.hands.values())


def test_model_free_wrists_land_in_hand_boxes(episode):
    """UmeTrack wrist positions (world) -> our camera chain + FISHEYE624 -> inside the 2D hand boxes."""
    boxes = _boxes()
    ume = {}
    with open(SEQ / "umetrack_hand_pose_trajectory.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            ume[rec["timestamp_ns"]] = rec["hand_poses"]
    n = 0
    for k, t in enumerate(episode.extra["timestamps_ns"]):
        for key, side in (("0", "left"), ("1", "right")):
            w = np.array(ume[t][key]["wrist_xform"]["t_xyz"])
            X = episode.T_cam_from_world[k, :3, :3] @ w + episode.T_cam_from_world[k, :3, 3]
            assert X[2] > 0.1
            uv = fisheye624_project(X, episode.extra["fisheye624"])
            assert _inside(uv, boxes[(t, side)], margin=0), (k, side, uv, boxes[(t, side)])
            n += 1
    assert n == 68


def _umetrack_wrists(episode):
    """UmeTrack wrist positions in the RGB camera frame: {side: (T,3)}."""
    ume = {}
    with open(SEQ / "umetrack_hand_pose_trajectory.jsonl") as f:
        for line in f:
            rec = json.loads(line)
            ume[rec["timestamp_ns"]] = rec["hand_poses"]
    out = {"left": [], "right": []}
    for k, t in enumerate(episode.extra["timestamps_ns"]):
        for key, side in (("0", "left"), ("1", "right")):
            w = np.array(ume[t][key]["wrist_xform"]["t_xyz"])
            out[side].append(episode.T_cam_from_world[k, :3, :3] @ w + episode.T_cam_from_world[k, :3, 3])
    return {s: np.array(v) for s, v in out.items()}


def test_converted_mano_hands_land_in_hand_boxes(episode):
    from megohand.data.sources.pipeline import HandModels

    hands = HandModels()
    try:
        hands["right"]
    except FileNotFoundError as e:  # neither $MANO_MODEL_DIR nor the bundled open hand asset
        pytest.skip(str(e))
    boxes = _boxes()
    ume = _umetrack_wrists(episode)
    ts = episode.extra["timestamps_ns"]
    for side, raw in episode.hands.items():
        hand = hands[side]
        c = canonical_hands(raw, episode.convention, hand, episode.T_cam_from_world)
        f = lambda x: torch.as_tensor(x, dtype=torch.float64)  # noqa: E731
        J0 = hand.rest_joints(f(c["betas"]))[:, 0].double().numpy()
        wrist = J0 + c["transl"]  # the converted MANO wrist in the RGB camera frame
        # the MANO wrist and the UmeTrack wrist are two annotations of the same joint: a few cm apart
        assert np.linalg.norm(wrist - ume[side], axis=1).max() < 0.03, side
        for k, t in enumerate(ts):
            uv = fisheye624_project(wrist[k], episode.extra["fisheye624"])
            assert _inside(uv, boxes[(t, side)], margin=0), (k, side, uv, boxes[(t, side)])
        if hand.is_mano:  # exact finger poses: every joint inside its box
            J = hand(f(c["global_orient"]), f(c["hand_pose"]), f(c["betas"]), f(c["transl"])).joints.double().numpy()
            assert np.abs(J[:, 0] - wrist).max() < 1e-5
            for k, t in enumerate(ts):
                uv = fisheye624_project(J[k], episode.extra["fisheye624"])
                assert _inside(uv, boxes[(t, side)], margin=5).all(), (k, side)

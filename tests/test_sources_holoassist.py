"""HoloAssist converter on a miniature native fixture: HoloLens world joints into the OpenCV PV camera,
frame alignment with the video, fine-grained segments, retargeting end to end (real Retargeter), bad input."""

import json

import numpy as np
import pytest
import torch

from fixtures_native import fk, tiny_retargeter, write_holoassist, write_video
from megohand.data.sources import get_source
from megohand.data.sources.common import SourceError
from megohand.data.sources.holoassist import fine_text
from megohand.data.sources.pipeline import convert_episode
from megohand.hand.joints import index_map

torch.set_num_threads(1)
TASK = "R0027-12-GoPro"
# HandJointKind (palm, wrist, thumb metacarpal..tip, index/middle/ring/little metacarpal..tip) -> our MANO21
# (wrist, index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3, tips T I M R P), written out by name
HOLO26_TO_MANO21 = [1, 7, 8, 9, 12, 13, 14, 22, 23, 24, 17, 18, 19, 2, 3, 4, 5, 10, 15, 20, 25]




def _nearest(frames, candidates):
    return [int(np.argmin([np.abs(f.astype(float) - c).mean() for c in candidates])) for f in frames]


def test_reader_joints_camera_video_text(tmp_path, hands):
    o = write_holoassist(tmp_path, hands)
    src = get_source("holoassist")(tmp_path)
    assert src.tasks() == [TASK]
    ep = src.load(TASK)
    assert ep.joint_order == "holoassist" and set(ep.joints) == {"left", "right"} and not ep.hands
    assert ep.hand_source == "retargeted" and ep.depth is None and ep.depth_source == "none"
    for side in ("left", "right"):
        J, ok = ep.joints[side], o["valid"][side]
        assert J.shape == (6, 26, 3)
        assert np.abs(J[ok] - o["holo26"][side][ok]).max() < 1e-4  # world -> OpenCV camera [m]
        assert np.isnan(J[~ok]).all()
        assert np.abs(J[ok][:, HOLO26_TO_MANO21] - o["joints"][side][ok]).max() < 1e-4
        assert np.abs(J[ok][:, index_map("holoassist", "mano")] - o["joints"][side][ok]).max() < 1e-4
    assert np.abs(ep.T_cam_from_world - o["T_cam_from_world"]).max() < 1e-9
    np.testing.assert_allclose(ep.K, o["K"])
    assert (ep.width, ep.height, ep.num_frames) == (32, 18, 6) and abs(ep.fps - 30.0) < 1e-3
    # sync frame k is 1.2 video frames after video frame k: the nearest video frame is k + 1
    frames = list(ep.rgb())
    assert len(frames) == 6 and _nearest(frames, o["frames"]) == list(o["video_index"])
    assert ep.segments == [(0, 2, "Press the small screen."), (2, 6, "Grab the battery.")]
    assert ep.instruction == "Press the small screen." and ep.split == "val"
    assert ep.extra["incorrect_segments"] == [1] and ep.extra["rgb_source"] == "video:Video_pitchshift.mp4"


def test_images_aligned_v2_unannotated(tmp_path, hands):
    o = write_holoassist(tmp_path, hands, rgb="images", fmt="v2", annotate=False, split=None)
    ep = get_source("holoassist")(tmp_path).load(TASK)
    assert ep.extra["hand_format"] == "v2" and ep.extra["rgb_source"] == "images_aligned"
    assert (ep.instruction, ep.segments, ep.split) == ("", [], "train")
    assert all(np.array_equal(a, b) for a, b in zip(ep.rgb(), o["frames"]))
    ok = o["valid"]["left"]
    assert np.abs(ep.joints["left"][ok] - o["holo26"]["left"][ok]).max() < 1e-4 and np.isnan(ep.joints["left"][~ok]).all()


def test_fine_text():
    assert fine_text({"Verb": "Press", "Noun": "screen", "Adjective": "small"}) == "Press the small screen."
    assert fine_text({"Verb": "grab", "Noun": "ink_cartridge", "Adjective": "none"}) == "Grab the ink cartridge."
    assert fine_text({"Verb": "approach"}) == "Approach."
    assert fine_text({"Noun": "screen"}) is None


def test_end_to_end_retargeted(tmp_path, hand_dir, hands):
    from megohand.data.store import Store, StoreWriter

    o = write_holoassist(tmp_path / "src", hands)
    ep = get_source("holoassist")(tmp_path / "src").load(TASK)
    convert_episode(ep, StoreWriter(tmp_path / "store"), hands, retargeter=tiny_retargeter(hand_dir))  # depth auto
    e = Store(tmp_path / "store").open("holoassist", TASK)
    m = e.meta
    assert (m.hand_source, m.depth_source, m.split) == ("retargeted", "rendered", "val")  # virtual depth
    d = e.depth(0)
    assert d.shape == (18, 32) and d.max() == pytest.approx(2.0) and 0.2 < d.min() < 1.0  # hands on a 2 m background
    assert m.segments == [(0, 2, "Press the small screen."), (2, 6, "Grab the battery.")]
    assert np.abs(e.T_cam_from_world - o["T_cam_from_world"]).max() < 1e-6
    for side in ("left", "right"):
        h, ok = e.hands(side), o["valid"][side]
        assert (h["valid"] == ok).all()
        J = fk(hands[side], h["global_orient"], h["hand_pose"], h["betas"], h["transl"])
        err = np.linalg.norm(J[ok] - o["joints"][side][ok], axis=-1)
        print(f"HoloAssist {side} retargeted joint error: mean {err.mean() * 1000:.2f} mm, max {err.max() * 1000:.2f} mm")
        assert err.mean() < 0.010 and err.max() < 0.030


def test_convert_cli(tmp_path, hand_dir, hands):
    from megohand.cli.main import main
    from megohand.data.store import Store
    from megohand.hand.retarget import save_network

    write_holoassist(tmp_path / "src", hands, T=4, rgb="images")
    save_network(tiny_retargeter(hand_dir).net, tmp_path / "net")
    main(["convert", "--dataset", "holoassist", "--src", str(tmp_path / "src"), "--out", str(tmp_path / "store"),
          "--mano-dir", str(hand_dir), "--retarget-model", str(tmp_path / "net"), "--refine-steps", "20", "--depth", "none"])
    e = Store(tmp_path / "store").open("holoassist", TASK)
    assert e.meta.hand_source == "retargeted" and e.hands("right")["valid"].all()


def test_bad_input(tmp_path, hand_dir, hands):
    from megohand.data.store import Store, StoreWriter

    write_holoassist(tmp_path, hands)
    src = get_source("holoassist")(tmp_path)
    exp = tmp_path / TASK / "Export_py"
    with pytest.raises(SourceError, match="unknown task id"):
        src.load("R9999-00-Nothing")
    right = exp / "Hands" / "Right_sync.txt"
    good = right.read_text()
    right.write_text("\n".join(good.splitlines()[:5]) + "\n")
    with pytest.raises(SourceError, match=r"Right_sync.txt: 5 frames, but .*Pose_sync.txt has 6 frames"):
        src.load(TASK)
    right.write_text(good.replace("\t", " ", 7))  # still parses (whitespace), same columns
    src.load(TASK)
    lines = good.splitlines()
    right.write_text("\n".join(lines[:3] + ["\t".join(lines[3].split("\t")[:-1])] + lines[4:]) + "\n")
    with pytest.raises(SourceError, match=r"Right_sync.txt: line 4 has 470 columns, line 1 has 471"):
        src.load(TASK)
    right.unlink()
    with pytest.raises(SourceError, match=r"missing HoloAssist hand file: .*Hands/Right_sync.txt"):
        src.load(TASK)
    right.write_text(good)
    ann = tmp_path / "data-annotation-trainval-v1_1.json"
    ann.write_text(ann.read_text()[:-5])
    with pytest.raises(SourceError, match=r"corrupt JSON in .*data-annotation-trainval-v1_1.json"):
        get_source("holoassist")(tmp_path).load(TASK)
    ann.write_text(json.dumps([{"events": []}]))
    with pytest.raises(SourceError, match=r"data-annotation-trainval-v1_1.json: video record without 'video_name'"):
        get_source("holoassist")(tmp_path).load(TASK)
    ann.unlink()
    # the video is shorter than the poses: frame count disagrees
    video = exp / "Video_pitchshift.mp4"
    write_video(video, np.zeros((3, 18, 32, 3), np.uint8))
    with pytest.raises(SourceError, match=r"Video_pitchshift.mp4: 3 frames .*frame count disagrees"):
        src.load(TASK)
    (exp / "Video" / "images_aligned").mkdir()
    for k in range(5):
        (exp / "Video" / "images_aligned" / f"{k:06d}.png").write_bytes(b"")
    with pytest.raises(SourceError, match=r"images_aligned: 5 images, but .*Pose_sync.txt has 6 frames"):
        src.load(TASK)
    # a frame that does not decode is found while streaming: the converter fails, no partial episode
    write_holoassist(tmp_path / "b", hands, rgb="images", annotate=False, split=None)
    bad = tmp_path / "b" / TASK / "Export_py" / "Video" / "images_aligned" / "000003.png"
    bad.write_bytes(b"not a png")
    ep = get_source("holoassist")(tmp_path / "b").load(TASK)
    writer = StoreWriter(tmp_path / "store")
    with pytest.raises(SourceError, match=r"cannot read image .*000003.png"):
        convert_episode(ep, writer, hands, depth="none", retargeter=tiny_retargeter(hand_dir, refine_steps=0))
    assert not writer.has_episode("holoassist", TASK) and Store(tmp_path / "store").episodes("holoassist") == []

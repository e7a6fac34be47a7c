"""ARCTIC converter on a miniature native fixture."""

import numpy as np
import pytest
import torch

from fixtures_native import ARCTIC_DIST8, fk, save_png, write_arctic
from megohand.data.sources import get_source
from megohand.data.sources.arctic import default_instruction, read_descriptions
from megohand.data.sources.common import SourceError
from megohand.data.sources.distortion import opencv8_distort
from megohand.data.sources.pipeline import convert_episode

torch.set_num_threads(1)
TASK = "s01/box_use_02"



def test_arctic_roundtrip_into_store(tmp_path, hands):
    from megohand.data.store import Store, StoreWriter

    expected, T_cw, K = write_arctic(tmp_path / "src", hands)
    src = get_source("arctic")(tmp_path / "src")
    assert src.tasks() == [TASK]
    ep = src.load(TASK)
    assert ep.instruction == "Use the box." and ep.split == "test"
    convert_episode(ep, StoreWriter(tmp_path / "store"), hands, depth="none")
    e = Store(tmp_path / "store").open("arctic", TASK)
    np.testing.assert_allclose(e.T_cam_from_world, T_cw, atol=1e-9)
    for side in ("left", "right"):
        h = e.hands(side)
        J = fk(hands[side], h["global_orient"], h["hand_pose"], h["betas"], h["transl"])
        assert np.abs(J - expected[side]).max() < 1e-4, side


def test_distorted_frames_are_resampled_to_pinhole(tmp_path, hands):
    """A dot drawn at the distorted position of pinhole pixel (u, v) ends up at (u, v)."""
    _, _, K = write_arctic(tmp_path, hands, W=40, H=30)
    u, v = 33, 24  # far from the centre, where the distortion moves it by a few pixels
    ab = np.array([(u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]])
    ud, vd = opencv8_distort(ab, ARCTIC_DIST8) * [K[0, 0], K[1, 1]] + K[:2, 2]
    assert np.hypot(ud - u, vd - v) > 1.0
    img = np.zeros((30, 40, 3), np.uint8)
    yy, xx = np.mgrid[:30, :40]
    img[(xx - ud) ** 2 + (yy - vd) ** 2 < 1.5**2] = 255
    save_png(tmp_path / "images" / "s01" / "box_use_02" / "0" / "00002.jpg", img)
    frame = next(iter(get_source("arctic")(tmp_path).load(TASK).rgb()))
    peak = np.unravel_index(np.argmax(frame[..., 0].astype(float)), frame.shape[:2])
    assert abs(peak[0] - v) <= 1 and abs(peak[1] - u) <= 1


def test_text(tmp_path):
    assert default_instruction("capsulemachine_grab_01") == "Grab the capsule machine."
    p = tmp_path / "description.txt"
    p.write_text("0-2 open, right hand\n3-9 operate, both hands\n")
    assert read_descriptions(p, "phone_use_01", 8) == [(0, 3, "Open the phone."), (3, 8, "Operate the phone.")]


def test_bad_input(tmp_path, hands):
    write_arctic(tmp_path, hands)
    src = get_source("arctic")(tmp_path)
    with pytest.raises(SourceError, match="unknown task id"):
        src.load("s01/box_use_99")
    (tmp_path / "images" / "s01" / "box_use_02" / "0" / "00004.jpg").unlink()
    with pytest.raises(SourceError, match="missing image .*00004.jpg"):
        src.load(TASK)
    p = tmp_path / "raw_seqs" / "s01" / "box_use_02.egocam.dist.npy"
    p.write_bytes(p.read_bytes()[:200])
    with pytest.raises(SourceError, match="box_use_02.egocam.dist.npy"):
        src.load(TASK)

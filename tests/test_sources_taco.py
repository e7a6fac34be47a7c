"""TACO converter on a miniature native fixture."""

import pickle

import numpy as np
import pytest
import torch

from fixtures_native import fk, write_taco
from megohand.data.sources import get_source
from megohand.data.sources.common import SourceError
from megohand.data.sources.pipeline import convert_episode
from megohand.data.sources.taco import triplet_instruction

torch.set_num_threads(1)
TASK = "(dust, roller, pan)/20230927_032"



def test_taco_roundtrip_into_store(tmp_path, hands):
    from megohand.data.store import Store, StoreWriter

    expected, depth = write_taco(tmp_path / "src", hands)
    src = get_source("taco")(tmp_path / "src")
    assert src.tasks() == [TASK]
    ep = src.load(TASK)
    assert ep.instruction == "Dust the pan with the roller." and ep.split == "test"
    convert_episode(ep, StoreWriter(tmp_path / "store"), hands)
    e = Store(tmp_path / "store").open("taco", TASK)
    assert e.meta.depth_source == "sensor" and e.num_frames == 4
    for side in ("left", "right"):
        h = e.hands(side)
        J = fk(hands[side], h["global_orient"], h["hand_pose"], h["betas"], h["transl"])
        assert np.abs(J - expected[side]).max() < 1e-4, side
    np.testing.assert_allclose(e.depth(2), depth[2], atol=1.5e-3)  # store keeps whole millimetres


def test_triplet_text():
    assert triplet_instruction("(roll, roller, box)") == "Roll the box with the roller."
    with pytest.raises(SourceError, match="triplet"):
        triplet_instruction("dust-roller-pan")


def test_bad_input(tmp_path, hands):
    write_taco(tmp_path, hands)
    src = get_source("taco")(tmp_path)
    with pytest.raises(SourceError, match="unknown task id"):
        src.load("(dust, roller, pan)/20990101_001")
    hp = tmp_path / "Hand_Poses" / TASK / "right_hand.pkl"
    data = hp.read_bytes()
    hp.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceError, match="right_hand.pkl"):
        src.load(TASK)
    # a pickle smuggling a callable is refused, naming the file
    import os

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    hp.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(SourceError, match="right_hand.pkl safely"):
        src.load(TASK)
    # extrinsics with a different frame count than the video
    write_taco(tmp_path / "b", hands)
    extr = tmp_path / "b" / "Egocentric_Camera_Parameters" / TASK / "egocentric_frame_extrinsic.npy"
    np.save(extr, np.load(extr)[:3])
    with pytest.raises(SourceError, match="left_hand.pkl: 4 hand frames, but the poses have 3"):
        get_source("taco")(tmp_path / "b").load(TASK)


def test_video_frame_count_mismatch_names_the_video(tmp_path, hands):
    from fixtures_native import tiny_frames, write_video

    write_taco(tmp_path, hands)
    write_video(tmp_path / "Egocentric_RGB_Videos" / TASK / "color.mp4", tiny_frames(3, 24, 32))
    with pytest.raises(SourceError, match=r"color.mp4: 3 video frames, but the poses have 4 frames"):
        get_source("taco")(tmp_path).load(TASK)

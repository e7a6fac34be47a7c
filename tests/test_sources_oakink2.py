"""OakInk2 converter on a miniature native fixture."""

import re

import numpy as np
import pytest
import torch

from fixtures_native import OAKINK2_TASK, fk, write_oakink2
from megohand.data.sources import get_source
from megohand.data.sources.common import SourceError
from megohand.data.sources.pipeline import convert_episode

torch.set_num_threads(1)



def test_oakink2_roundtrip_into_store(tmp_path, hands):
    from megohand.data.store import Store, StoreWriter

    expected = write_oakink2(tmp_path / "src", hands)
    src = get_source("oakink2")(tmp_path / "src")
    assert src.tasks() == [OAKINK2_TASK]
    ep = src.load(OAKINK2_TASK)
    assert ep.split == "val" and ep.instruction == "Heat the water on the tripod."
    # mocap ranges (100..108) and (108..116) -> image frames 100,104,108 | 108,112,116
    assert ep.segments == [(0, 3, "Position the alcohol lamp beneath the tripod."),
                           (2, 5, "Light the alcohol lamp with the lighter.")]
    convert_episode(ep, StoreWriter(tmp_path / "store"), hands, depth="none")
    e = Store(tmp_path / "store").open("oakink2", OAKINK2_TASK)
    assert e.num_frames == 5 and e.meta.segments[0][2].startswith("Position")
    for side in ("left", "right"):
        h = e.hands(side)
        J = fk(hands[side], h["global_orient"], h["hand_pose"], h["betas"], h["transl"])
        assert np.abs(J - expected[side]).max() < 1e-4, side


def test_bad_input(tmp_path, hands):
    write_oakink2(tmp_path, hands)
    src = get_source("oakink2")(tmp_path)
    with pytest.raises(SourceError, match="unknown task id"):
        src.load("scene_01__A001/seq__nope")
    token = OAKINK2_TASK.replace("/", "++")
    img = next((tmp_path / "data" / token / "cam_123").glob("000104.png"))
    img.unlink()
    with pytest.raises(SourceError, match="missing image .*000104.png"):
        src.load(OAKINK2_TASK)
    (tmp_path / "anno_preview" / f"{token}.pkl").write_bytes(b"\x80\x04garbage")
    with pytest.raises(SourceError, match=re.escape(f"{token}.pkl")):
        src.load(OAKINK2_TASK)

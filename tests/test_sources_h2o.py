"""H2O converter on a miniature native fixture."""

import numpy as np
import pytest
import torch

from fixtures_native import fk, write_h2o
from megohand.data.sources import get_source
from megohand.data.sources.common import SourceError
from megohand.data.sources.h2o import label_segments, official_split
from megohand.data.sources.pipeline import convert_episode

torch.set_num_threads(1)
TASK = "subject1/o1/7/cam4"



def test_h2o_roundtrip_into_store(tmp_path, hands):
    from megohand.data.store import Store, StoreWriter

    expected, T_cw, depth = write_h2o(tmp_path / "src", hands)
    src = get_source("h2o")(tmp_path / "src")
    assert src.tasks() == [TASK]
    ep = src.load(TASK)
    assert ep.segments == [(1, 3, "Pour the milk."), (3, 4, "Place the book.")]
    assert ep.instruction == "Pour the milk." and ep.split == "train"
    convert_episode(ep, StoreWriter(tmp_path / "store"), hands)
    e = Store(tmp_path / "store").open("h2o", TASK)
    np.testing.assert_allclose(e.T_cam_from_world, T_cw, atol=1e-9)
    np.testing.assert_allclose(e.depth(1), depth[1], atol=1e-6)
    for side in ("left", "right"):
        h = e.hands(side)
        J = fk(hands[side], h["global_orient"], h["hand_pose"], h["betas"], h["transl"])
        ok = h["valid"]
        assert ok.sum() == (3 if side == "left" else 4)
        assert np.abs(J[ok] - expected[side][ok]).max() < 1e-4, side


def test_splits_and_labels():
    assert official_split("subject3/k1/2/cam4") == "train"
    assert official_split("subject3/o2/2/cam4") == "val"
    assert official_split("subject4/h1/0/cam4") == "test"
    assert label_segments(np.array([0, 0, 0])) == []
    assert label_segments(np.array([24, 24, 0, 35])) == [(0, 2, "Take out the espresso."), (3, 4, "Spray the spray.")]


def test_bad_input(tmp_path, hands):
    write_h2o(tmp_path, hands)
    src = get_source("h2o")(tmp_path)
    with pytest.raises(SourceError, match="unknown task id"):
        src.load("subject9/o1/7/cam4")
    p = tmp_path / TASK / "hand_pose_MANO" / "000002.txt"
    p.write_text("1 2 3")
    with pytest.raises(SourceError, match="000002.txt: expected 124 numbers, found 3"):
        src.load(TASK)
    p.unlink()
    with pytest.raises(SourceError, match="missing .*hand_pose_MANO/000002.txt"):
        src.load(TASK)

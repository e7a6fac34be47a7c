"""HOI4D converter on a miniature native fixture."""

import numpy as np
import pytest
import torch

from fixtures_native import HOI4D_TASK, fk, write_hoi4d
from megohand.data.sources import get_source
from megohand.data.sources.common import SourceError
from megohand.data.sources.hoi4d import task_sentence
from megohand.data.sources.pipeline import convert_episode

torch.set_num_threads(1)



def test_hoi4d_roundtrip_into_store(tmp_path, hands):
    from megohand.data.store import Store, StoreWriter

    expected, depth = write_hoi4d(tmp_path / "src", hands)
    src = get_source("hoi4d")(tmp_path / "src")
    assert src.tasks() == [HOI4D_TASK]
    ep = src.load(HOI4D_TASK)
    assert ep.instruction == "Put the toy car in the drawer." and ep.fps == 15.0 and ep.split == "train"
    assert ep.segments == [(0, 2, "Reachout the toy car."), (2, 4, "Pickup the toy car.")]
    convert_episode(ep, StoreWriter(tmp_path / "store"), hands)
    e = Store(tmp_path / "store").open("hoi4d", HOI4D_TASK)
    assert e.meta.depth_source == "sensor" and e.T_cam_from_world is None
    np.testing.assert_allclose(e.depth(3), depth[3], atol=1e-6)
    h = e.hands("right")
    assert h["valid"].tolist() == [True, True, False, True]
    J = fk(hands["right"], h["global_orient"], h["hand_pose"], h["betas"], h["transl"])
    ok = h["valid"]
    assert np.abs(J[ok] - expected["right"][ok]).max() < 1e-4  # float32 pickles, as released
    assert not e.hands("left")["valid"].any()


def test_task_sentences():
    assert task_sentence("Pick and place", "Toy Car") == "Pick and place a toy car."
    assert task_sentence("Push toy car", "Toy Car") == "Push toy car."
    assert task_sentence("Pour water into a mug", "Kettle") == "Pour water into a mug."
    assert task_sentence("Pick and place (with water)", "Mug") == "Pick and place a mug (with water)."
    assert task_sentence("Throw something in it", "Trash Can") == "Throw something in the trash can."


def test_bad_input(tmp_path, hands):
    write_hoi4d(tmp_path, hands)
    src = get_source("hoi4d")(tmp_path)
    with pytest.raises(SourceError, match="unknown task id"):
        src.load("ZY20210800001/H1/C1/N19/S100/s02/T9")
    p = tmp_path / "handpose" / "refinehandpose_right" / HOI4D_TASK / "9.pickle"
    p.write_bytes((p.parent / "0.pickle").read_bytes())
    with pytest.raises(SourceError, match="9.pickle: frame 9 beyond the video's 4 frames"):
        src.load(HOI4D_TASK)
    p.unlink()
    (tmp_path / "camera_params" / "ZY20210800001" / "intrin.npy").unlink()
    with pytest.raises(SourceError, match="missing file: .*intrin.npy"):
        src.load(HOI4D_TASK)

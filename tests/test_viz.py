"""megohand show: a playable MP4 (decoded back with PyAV), strips, GIFs, the rerun recording."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from megohand.data.synthetic import SynthConfig, synthesize
from megohand.viz import read_video_frames, save_gif, save_strip, write_mp4

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def hand_source(tmp_path_factory):
    """None (megohand's default hand) when it loads, else a stick hand file (see test_synthetic)."""
    from megohand.hand import load_hand_model
    from megohand.hand.mano_io import save_npz

    try:
        load_hand_model()
        return None
    except FileNotFoundError:
        from test_synthetic import stick_hand_asset

        path = tmp_path_factory.mktemp("hand") / "MANO_RIGHT.npz"
        save_npz(path, stick_hand_asset())
        return path


@pytest.fixture(scope="module")
def store(tmp_path_factory, hand_source):
    root = tmp_path_factory.mktemp("store")
    synthesize(root, 1, SynthConfig(seed=2, width=64, height=48), progress=False,
               mano_dir=None if hand_source is None else str(hand_source))
    return root


def test_write_mp4_round_trip_odd_size(tmp_path):
    yy, xx = np.mgrid[:123, :179]
    base = np.stack([xx * 255 / 179, yy * 255 / 123, np.full_like(xx, 90.0)], -1)
    frames = []
    for k in range(7):  # odd size (123 x 179): padded to even; a white square moving right
        f = base.copy()
        f[40:70, 10 + 20 * k: 40 + 20 * k] = 255
        frames.append(f.astype(np.uint8))
    assert write_mp4(frames, tmp_path / "a.mp4", fps=10) == 7
    back = read_video_frames(tmp_path / "a.mp4")
    assert back.shape == (7, 124, 180, 3)
    err = np.abs(back[:, None, :123, :179].astype(float) - np.stack(frames)[None]).mean(axis=(2, 3, 4))  # (7, 7)
    assert np.diag(err).max() < 4, np.diag(err)  # lossy H.264, but the same pictures
    assert (err.argmin(axis=1) == np.arange(7)).all()  # in order
    assert not list(tmp_path.glob(".*tmp*"))
    with pytest.raises(ValueError, match="no frames"):
        write_mp4([], tmp_path / "b.mp4")
    assert not (tmp_path / "b.mp4").exists()


def test_strip_and_gif(tmp_path):
    frames = [np.full((20, 30, 3), 40 * k, np.uint8) for k in range(5)]
    save_strip(frames, tmp_path / "s.png", columns=3, gap=2)
    img = np.asarray(Image.open(tmp_path / "s.png").convert("RGB"))
    assert img.shape == (2 * 20 + 2, 3 * 30 + 2 * 2, 3)
    assert (img[0, 32 + 1] == 40).all() and (img[22, 0] == 120).all() and (img[21, 0] == 255).all()
    save_gif(frames, tmp_path / "g.gif", fps=10, width=60)
    gif = Image.open(tmp_path / "g.gif")
    assert gif.n_frames == 5 and gif.size == (60, 40)


def test_show_writes_playable_mp4(store, hand_source, tmp_path):
    from megohand.cli.main import main
    from megohand.data.store import Store

    episode = Store(store).open("synthetic", "000000")
    T = episode.num_frames
    args = ["show", "-d", "synthetic", "-t", "000000", "--root", str(store), "--out", str(tmp_path / "ep.mp4"),
            "--strip", str(tmp_path / "ep.png"), "--scale", "2"]
    if hand_source is not None:
        args += ["--hand", str(hand_source)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main(args)
    video = read_video_frames(tmp_path / "ep.mp4")
    assert video.shape[0] == T
    H, W = 48 * 2, 64 * 2
    assert video.shape[2] == 2 * W and video.shape[1] > H  # [rgb | depth] + caption
    # the hand is drawn: left panel differs from the stored RGB where the hand is, never elsewhere much
    raw = episode.rgb(0).repeat(2, 0).repeat(2, 1).astype(float)
    diff = np.abs(video[0, :H, :W].astype(float) - raw).mean(-1)
    assert (diff > 40).mean() > 0.005
    # depth panel: near surfaces bright, far ones dark
    depth = episode.depth(0).repeat(2, 0).repeat(2, 1)
    right = video[0, :H, W:].astype(float).mean(-1)
    assert right[depth < np.percentile(depth, 20)].mean() > right[depth > np.percentile(depth, 80)].mean() + 30
    assert Image.open(tmp_path / "ep.png").size[0] > 0


def test_rerun_recording(store, hand_source, tmp_path):
    pytest.importorskip("rerun")
    from megohand.data.store import Store
    from megohand.viz.rerun_view import write_rrd
    from megohand.viz.show import load_hands

    episode = Store(store).open("synthetic", "000000")
    path = write_rrd(episode, load_hands(episode, hand_source), tmp_path / "ep.rrd")
    import rerun.recording

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rec = rerun.recording.load_recording(path)
    paths = set(rec.schema().entity_paths())
    assert {"/world/camera", "/world/camera/image/rgb", "/world/camera/image/depth",
            "/world/hands/right/mesh", "/world/hands/right/joints"} <= paths
    assert sum(p.startswith("/world/objects/") for p in paths) == len(episode.meta.extra["objects"])

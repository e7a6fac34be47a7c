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
    diff = np.abs(video[0, :H, :W].astype(float) - raw).max(-1)  # the truth colour (magenta) moves green most
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


def test_comparison_frames_legend_colours_and_size(tmp_path):
    """Prediction and truth in their fixed colours, >= 512 px, a legend with one swatch per hand drawn in."""
    import trimesh

    from megohand.render.overlay import PRED_COLOR, TRUE_COLOR
    from megohand.viz.compare import comparison_frames, write_comparison

    sphere = trimesh.creation.icosphere(subdivisions=2, radius=0.05)
    v, f = np.asarray(sphere.vertices), np.asarray(sphere.faces)
    K = np.array([[60.0, 0, 31.5], [0, 60.0, 23.5], [0, 0, 1]])
    images = [np.full((48, 64, 3), 90, np.uint8)] * 3
    pred = np.stack([v + [-0.12, 0, 0.5]] * 3)
    true = np.stack([v + [0.12, 0, 0.5]] * 3)
    true[2] = np.nan  # no truth in the last frame
    out = comparison_frames(images, K, f, pred, true, title="pick up the red cube")
    s = 512 // 48 + 1  # integer upscale to a short side >= 512
    assert all(o.shape[1] == 64 * s and o.shape[0] > 48 * s for o in out)
    bar = out[0][: out[0].shape[0] - 48 * s]
    for color in (PRED_COLOR, TRUE_COLOR):  # the legend's swatches, exact colours
        assert (np.abs(bar.astype(int) - np.round(np.array(color) * 255)).max(-1) == 0).sum() > 50
    pic = out[0][-48 * s:].astype(float)

    def hue_share(img, color):  # pixels whose colour is closer to ``color`` than to the grey background
        c = np.array(color) * 255
        return ((np.linalg.norm(img - c, axis=-1) < np.linalg.norm(img - 90, axis=-1))).mean()

    left, right = pic[:, : 32 * s], pic[:, 32 * s:]
    assert hue_share(left, PRED_COLOR) > 0.02 and hue_share(right, TRUE_COLOR) > 0.02  # prediction left, truth right
    assert hue_share(left, TRUE_COLOR) < 0.005 and hue_share(right, PRED_COLOR) < 0.005
    assert hue_share(out[2][-48 * s:, 32 * s:].astype(float), TRUE_COLOR) < 0.005  # NaN truth: not drawn
    write_comparison(images, K, f, pred, true, "pick up", tmp_path / "c.mp4", tmp_path / "c.png", fps=30)
    video = read_video_frames(tmp_path / "c.mp4")
    assert video.shape[2] >= 512 and Image.open(tmp_path / "c.png").size[0] >= 3 * 512


def test_legend_bar_wraps_its_items_instead_of_cutting_them_off():
    """A legend too wide for its picture goes on in a second line (the demo's 516 px panels cut "ground truth"),
    with one height for every frame number."""
    from megohand.render.overlay import PRED_COLOR, TRUE_COLOR
    from megohand.viz.compare import legend_bar

    entries = [("model (closed loop, TOF)", PRED_COLOR), ("ground truth", TRUE_COLOR)]
    wide = legend_bar(2000, "raise the box", "frame   8 / 40", entries, 17)
    narrow = legend_bar(516, "raise the box", "frame   8 / 40", entries, 17)
    assert narrow.shape[0] > wide.shape[0]  # one more line
    for bar in (wide, narrow):
        ink = (np.abs(bar.astype(int) - [18, 18, 22]).max(-1) > 30).any(0)
        assert not ink[-8:].any()  # nothing runs into the right edge (the padding is 8 px)
        for color in (PRED_COLOR, TRUE_COLOR):  # both swatches drawn whole (inside their outline: 16 x 14 px)
            assert (np.abs(bar.astype(int) - np.round(np.array(color) * 255)).max(-1) == 0).sum() >= 16 * 14
    assert len({legend_bar(516, "raise the box", f"frame {k:3d} / 140", entries, 17).shape[0]
                for k in (1, 88, 140)}) == 1

"""Training-size copies of a store's frames: geometry and intrinsics (pixel-centre convention), the training
tensors against the full-resolution path, adding copies to an existing store (resumable, atomic), validation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from megohand.data.store import Downscale, EpisodeMeta, Store, StoreWriter, add_episode_copies
from megohand.data.validate import validate_store
from megohand.data.windows import WindowDataset

W, H = 640, 480
K = [[500.0, 0.0, 319.5], [0.0, 500.0, 239.5], [0.0, 0.0, 1.0]]


def hands(T, seed=0):
    rng = np.random.default_rng(seed)
    walk = lambda *s: np.cumsum(rng.normal(0, 0.02, (T, *s)), 0)  # noqa: E731
    return {"global_orient": walk(3), "hand_pose": 0.2 + walk(15, 3), "betas": np.zeros(10),
            "transl": np.array([0, 0.05, 0.5]) + 0.1 * walk(3), "valid": np.ones(T, bool)}


def scene(T, seed=0):
    """(T, H, W, 3) uint8 natural-ish frames (gradient, shapes, mild noise) and (T, H, W) depth [m]."""
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(seed)
    rgb, depth = [], []
    yy, xx = np.mgrid[0:H, 0:W]
    for t in range(T):
        g = np.stack([xx / W * 200, yy / H * 150, np.full((H, W), 80.0)], -1)
        im = Image.fromarray(g.astype(np.uint8))
        d = ImageDraw.Draw(im)
        dm = np.full((H, W), 2.0, np.float32)
        for _ in range(6):
            x0, y0 = rng.uniform(0, W - 120), rng.uniform(0, H - 120)
            x1, y1 = x0 + rng.uniform(30, 120), y0 + rng.uniform(30, 120)
            d.rectangle((x0, y0, x1, y1), fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
            dm[int(y0):int(y1) + 1, int(x0):int(x1) + 1] = rng.uniform(0.3, 1.5)
        a = np.asarray(im).astype(np.int16) + rng.normal(0, 1.5, (H, W, 3))
        rgb.append(a.clip(0, 255).astype(np.uint8))
        depth.append(dm)
    return np.stack(rgb), np.stack(depth)


def write(root, T=12, copy_sizes=(224, 128), episode="s1/take_01", rgb=None, depth=None, **kw):
    if rgb is None:
        rgb, depth = scene(T)
    meta = EpisodeMeta("bench", episode, "pick up the box", K=K, depth_source="rendered", hand_source="synthetic")
    StoreWriter(root, copy_sizes=copy_sizes, **kw).write_episode(meta, {"right": hands(T)}, rgb, depth=depth)
    return Store(root).open("bench", episode)


# ---------------------------------------------------------------- geometry


def test_downscale_geometry_and_K_hand_computed():
    """640x480 -> short side 224: 298x224 (long side rounded down to an even difference), scale 224/480, the
    frame's columns [0.714, 639.286) kept; a point's projection computed by hand in both pictures."""
    g = Downscale.of(640, 480, 224)
    assert (g.width, g.height) == (298, 224)
    np.testing.assert_allclose(g.box, (5 / 7, 0, 640 - 5 / 7, 480))  # 298 / (224/480) = 638.571 = 640 - 2 * 5/7
    np.testing.assert_allclose(g.scale, 224 / 480)
    X = np.array([0.1, -0.05, 1.0])  # full frame: u = 500 * 0.1 + 319.5 = 369.5, v = -25 + 239.5 = 214.5
    # pixel centres: u' = (u - x0 + 0.5) * s - 0.5 = (369.5 - 5/7 + 0.5) * 7/15 - 0.5 = 171.8333...
    #                v' = (214.5 + 0.5) * 7/15 - 0.5 = 99.8333...
    u = g.K(np.array(K)) @ X
    np.testing.assert_allclose(u[:2] / u[2], [171.8333333, 99.8333333], atol=1e-6)
    # the centred squares coincide: small [37, 261) <-> full [80, 560) (x0 + 37 / s = 5/7 + 79.286 = 80)
    np.testing.assert_allclose(g.box[0] + (g.width - 224) // 2 / g.scale, (640 - 480) // 2)
    # other sizes keep the rule: 1920x1080 -> 224: 398x224 (398.2 rounded down to an even difference)
    assert (Downscale.of(1920, 1080, 224).width, Downscale.of(1920, 1080, 224).height) == (398, 224)
    assert (Downscale.of(480, 640, 128).width, Downscale.of(480, 640, 128).height) == (128, 170)  # portrait
    assert Downscale.of(300, 300, 100).box == (0, 0, 300, 300)


def test_copy_intrinsics_follow_the_pixels(tmp_path):
    """A smooth bright blob centred on the projection of a point and a depth disc around it: in the stored copy
    (area-averaged RGB, JPEG), the blob's centroid and the disc's footprint lie where the copy's K projects the
    point, with the pixel-centre convention; the other convention (u' = u * s) would be 0.27 px off."""
    T = 2
    X = np.array([0.1, -0.05, 1.0])
    u0, v0 = 369.5, 214.5  # its projection in the full frame (K above)
    yy, xx = np.mgrid[0:H, 0:W]
    r2 = (xx - u0) ** 2 + (yy - v0) ** 2
    blob = np.rint(255 * np.exp(-r2 / (2 * 12.0 ** 2))).astype(np.uint8)  # a hard edge would bias the centroid
    rgb = np.repeat(blob[None, :, :, None], 3, -1).repeat(T, 0)
    depth = np.where(r2 <= 30 ** 2, 0.5, 2.0).astype(np.float32)[None].repeat(T, 0)
    ep = write(tmp_path, T, (224,), rgb=rgb, depth=depth)
    fs = ep.frames_for(224)
    assert fs.size == 224 and (fs.width, fs.height) == (298, 224)
    p = fs.K @ X
    u, v = p[:2] / p[2]
    img = ep.rgb(0, fs).astype(np.float64).mean(-1)
    w = np.clip(img - 4, 0, None)  # JPEG ringing on black stays below 4
    sy, sx = np.mgrid[0:fs.height, 0:fs.width]
    cu, cv = (w * sx).sum() / w.sum(), (w * sy).sum() / w.sum()
    assert abs(cu - u) < 0.02 and abs(cv - v) < 0.02, (cu, cv, u, v)
    s, x0 = 224 / 480, 5 / 7
    assert abs((u0 - x0) * s - u) > 0.25 and abs(v0 * s - v) > 0.25  # what the test tells apart
    d = ep.depth_mm(0, fs)
    assert set(np.unique(d)) == {500, 2000}  # nearest neighbour: no mixed depths at the edge
    m = d == 500
    assert abs((sx[m]).mean() - u) < 0.5 and abs((sy[m]).mean() - v) < 0.5


# ---------------------------------------------------------------- training tensors


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("copies")
    write(root, T=12)
    return root


@pytest.mark.parametrize("size", [224, 128])
def test_training_tensors_from_the_copy_match_the_full_path(store, size):
    """Same windows from the copy and from the full frames: identical K and depth (the copy's centred square is
    the frame's, sampled at the same pixels), images equal up to resampling and JPEG: measured mean 1.4 / 1.7 grey
    levels and 99th percentile 15 / 18 (at the rectangles' sharp edges) at 224 / 128, where the two resampling
    filters alone (area average vs bilinear, on the raw frames) differ by 0.6 / 0.5 and 5 / 6."""
    a = WindowDataset(store, image_size=size)
    b = WindowDataset(store, image_size=size, copies=False)
    assert a.store.open(a.refs[0]).frames_for(size).size == size
    diffs = []
    for i in range(0, len(a), 3):
        x, y = a[i], b[i]
        torch.testing.assert_close(x["K"], y["K"], atol=1e-4, rtol=0)
        assert torch.equal(x["depth"], y["depth"]) and x["has_depth"]
        assert torch.equal(x["action"], y["action"]) and torch.equal(x["state"], y["state"])
        assert x["image"].shape == (3, size, size)
        diffs.append((x["image"].float() - y["image"].float()).abs())
    d = torch.stack(diffs)
    assert d.mean() < 2.0 and torch.quantile(d.flatten()[::7], 0.99) < 24, (d.mean(), d.max())


def test_the_smallest_fitting_copy_is_read(store):
    ep = Store(store).open("bench", "s1/take_01")
    assert [f.size for f in ep.frame_sets()] == [None, 128, 224]
    assert ep.frames_for(100).size == 128 and ep.frames_for(128).size == 128 and ep.frames_for(200).size == 224
    assert ep.frames_for(256).size is None and ep.frames_for(None).size is None
    sample = WindowDataset(store, image_size=200, augment=True)[0]  # a copy resized, with augmentation
    assert sample["image"].shape == (3, 200, 200) and sample["depth"].shape == (1, 200, 200)


def test_no_copy_where_the_frames_are_not_larger(tmp_path):
    rgb, depth = scene(3)
    ep = write(tmp_path, 3, (480, 640, 128), rgb=rgb, depth=depth)
    assert [f.size for f in ep.frame_sets()] == [None, 128]
    # --max-short-side (frames instead of a copy) uses the same geometry: the same K and size as the copy
    ep2 = write(tmp_path / "small", 3, (), rgb=rgb, depth=depth, max_short_side=128)
    assert (ep2.meta.width, ep2.meta.height) == (170, 128) and ep2.frame_sets()[1:] == []
    np.testing.assert_allclose(ep2.K, ep.frames_for(128).K)
    np.testing.assert_array_equal(ep2.depth_mm(1), ep.depth_mm(1, ep.frames_for(128)))


# ---------------------------------------------------------------- existing stores


def test_add_copies_to_an_existing_store_resumable_and_atomic(tmp_path):
    """A store written without copies (the old format: no ``copies`` in meta.json) stays valid; adding copies
    fails atomically when interrupted (nothing listed, no file left), resumes, and gives what the writer gives."""
    rgb, depth = scene(6)
    ep = write(tmp_path / "old", 6, (), rgb=rgb, depth=depth)
    meta_path = ep.path / "meta.json"
    d = json.loads(meta_path.read_text())
    del d["store"]["copies"]  # exactly what earlier versions wrote
    meta_path.write_text(json.dumps(d))
    before = sorted(os.listdir(ep.path))
    assert validate_store(tmp_path / "old", progress=False) == []
    assert WindowDataset(tmp_path / "old", image_size=224)[0]["image"].shape == (3, 224, 224)

    def killed(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        add_episode_copies(ep.path, [224, 128], progress=killed)
    assert sorted(os.listdir(ep.path)) == before and json.loads(meta_path.read_text()) == d
    # a temporary pack of a writer that no longer runs is removed by the next one
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    stale = ep.path / f".rgb_224.pack.tmp.{int(dead.stdout)}.abcd1234"
    stale.write_bytes(b"half")
    assert add_episode_copies(ep.path, [224]) == [224]
    assert not stale.exists()
    assert add_episode_copies(ep.path, [224, 128]) == [128] and add_episode_copies(ep.path, [128, 224]) == []
    assert validate_store(tmp_path / "old", progress=False, deep=True) == []

    new = write(tmp_path / "new", 6, (224, 128), rgb=rgb, depth=depth)
    old = Store(tmp_path / "old").open("bench", "s1/take_01")
    for size in (128, 224):
        a, b = old.frames_for(size), new.frames_for(size)
        np.testing.assert_allclose(a.K, b.K)
        np.testing.assert_array_equal(old.depth_mm(3, a), new.depth_mm(3, b))
        # from the stored JPEG frames rather than the writer's input: one more JPEG generation
        assert np.abs(old.rgb(3, a).astype(int) - new.rgb(3, b)).mean() < 1.5


def test_add_copies_verb(tmp_path, capsys):
    from megohand.cli.main import main

    rgb, depth = scene(4)
    write(tmp_path, 4, (), rgb=rgb, depth=depth)
    for expect in ("added to 1 of 1", "added to 0 of 1"):
        main(["add-copies", str(tmp_path), "--sizes", "128"])
        assert expect in capsys.readouterr().out
    assert [f.size for f in Store(tmp_path).open("bench", "s1/take_01").frame_sets()] == [None, 128]

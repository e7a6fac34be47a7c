"""Store round trips, atomic/resumable writes, and every bad input that validate must find."""

from __future__ import annotations

import numpy as np
import pytest

from megohand.data.store import (
    EpisodeMeta,
    Store,
    StoreError,
    StoreWriter,
    episode_dirname,
    episode_from_dirname,
)

K = [[60.0, 0.0, 32.0], [0.0, 60.0, 24.0], [0.0, 0.0, 1.0]]


def smooth_rgb(T, H=48, W=64, seed=0):
    """Smooth images (JPEG-friendly) that differ per frame."""
    yy, xx = np.mgrid[0:H, 0:W]
    rng = np.random.default_rng(seed)
    out = []
    for t in range(T):
        a, b, c = rng.uniform(0, 2 * np.pi, 3)
        img = np.stack([np.sin(xx / 9 + a), np.cos(yy / 7 + b), np.sin((xx + yy) / 13 + c)], -1)
        out.append(((img + 1) * 127.5).astype(np.uint8))
    return np.stack(out)


def make_hands(T, seed=0):
    rng = np.random.default_rng(seed)
    return {
        "global_orient": rng.normal(size=(T, 3)) * 0.5,
        "hand_pose": rng.normal(size=(T, 15, 3)) * 0.3,
        "betas": rng.normal(size=(T, 10)),
        "transl": rng.normal(size=(T, 3)) * 0.1 + [0, 0, 0.5],
        "valid": np.ones(T, bool),
    }


def write(root, episode="s01/box_use_02", T=12, depth=True, dataset="arctic", **kw):
    rng = np.random.default_rng(1)
    hands = {"right": make_hands(T), "left": make_hands(T, seed=5)}
    rgb = smooth_rgb(T)
    d = rng.uniform(0.1, 2.0, (T, 48, 64)).astype(np.float32) if depth else None
    meta = EpisodeMeta(dataset, episode, "open the box", K=K, depth_source="sensor" if depth else "none", **kw)
    StoreWriter(root).write_episode(meta, hands, iter(rgb), depth=d, T_cam_from_world=np.tile(np.eye(4), (T, 1, 1)))
    return hands, rgb, d


@pytest.mark.parametrize("ep", ["s01/box_use_02", "(dust, roller, pan)/20230927_032", ".x", "..", "a%2Fb", "é/ü ~"])
def test_dirname_reversible(ep):
    name = episode_dirname(ep)
    assert "/" not in name and not name.startswith(".")
    assert episode_from_dirname(name) == ep


def test_round_trip(tmp_path):
    hands, rgb, depth = write(tmp_path, T=12)
    store = Store(tmp_path)
    assert store.datasets() == ["arctic"]
    [ref] = store.episodes()
    assert (ref.episode, ref.num_frames, ref.split, ref.has_depth) == ("s01/box_use_02", 12, "train", True)
    ep = store.open("arctic", "s01/box_use_02")
    assert ep.meta.instruction == "open the box" and ep.meta.width == 64 and ep.meta.height == 48
    for side in ("right", "left"):
        h = ep.hands(side)
        for name in ("global_orient", "hand_pose", "betas", "transl"):
            np.testing.assert_allclose(h[name], hands[side][name], atol=1e-6)  # float32 storage
        assert h["valid"].all()
    for k in (0, 5, 11):
        assert ep.rgb(k).shape == (48, 64, 3)
        assert np.abs(ep.rgb(k).astype(float) - rgb[k]).mean() < 3.0  # JPEG q90 on smooth images
        np.testing.assert_allclose(ep.depth(k), np.round(depth[k] * 1000) / 1000, atol=1e-6)  # exact mm
    np.testing.assert_allclose(ep.timestamps, np.arange(12) / 30.0)
    np.testing.assert_array_equal(ep.T_cam_from_world, np.tile(np.eye(4), (12, 1, 1)))


def test_missing_side_and_no_depth(tmp_path):
    T = 5
    meta = EpisodeMeta("h2o", "subject1/o1/7/cam4", "flip a book", K=K)
    StoreWriter(tmp_path).write_episode(meta, {"right": make_hands(T)}, smooth_rgb(T))
    ep = Store(tmp_path).open("h2o", "subject1/o1/7/cam4")
    assert ep.depth(0) is None and ep.T_cam_from_world is None
    assert not ep.hands("left")["valid"].any() and ep.hands("right")["valid"].all()


def test_resume_and_no_overwrite(tmp_path):
    write(tmp_path, T=4)
    w = StoreWriter(tmp_path)
    assert w.has_episode("arctic", "s01/box_use_02") and not w.has_episode("arctic", "s01/other")
    with pytest.raises(FileExistsError):
        write(tmp_path, T=4)


def test_downscale_scales_K(tmp_path):
    T = 3
    meta = EpisodeMeta("taco", "(a, b, c)/1", "roll", K=K, depth_source="rendered")
    d = np.full((T, 48, 64), 0.5, np.float32)
    StoreWriter(tmp_path, max_short_side=24).write_episode(meta, {"right": make_hands(T)}, smooth_rgb(T), depth=d)
    ep = Store(tmp_path).open("taco", "(a, b, c)/1")
    assert ep.rgb(0).shape == (24, 32, 3) and ep.depth(0).shape == (24, 32)
    # a point projects to the same relative image position before and after
    X = np.array([0.05, -0.02, 0.5])
    u0 = np.array(K) @ X / X[2]
    u1 = ep.K @ X / X[2]
    np.testing.assert_allclose((u1[:2] + 0.5) / [32, 24], (u0[:2] + 0.5) / [64, 48], atol=1e-9)

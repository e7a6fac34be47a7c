"""Normaliser and statistics: hand-computed cases, round trips, pooling = statistics of the concatenation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from megohand.data.normalize import Normalizer, rotation_mask
from megohand.data.stats import (
    RunningStats,
    compute_store_statistics,
    dataset_statistics,
    load_normalizer,
    normalizer_path,
    pool_statistics,
)
from megohand.data.store import EpisodeMeta, StoreWriter

torch.set_num_threads(1)


def bounds(seed=0):
    rng = np.random.default_rng(seed)
    b = {}
    for kind, d in (("state", 109), ("action", 99)):
        lo = rng.normal(size=d)
        b[kind] = (lo, lo + rng.uniform(0.1, 2.0, d))
    return b


def test_hand_computed_min_max():
    b = bounds()
    b["state"][0][95], b["state"][1][95] = 2.0, 6.0  # a beta in [2, 6]
    b["state"][0][107], b["state"][1][107] = 0.5, 0.5  # constant dim
    n = Normalizer(b)
    x = np.zeros(109)
    x[95], x[107], x[3] = 5.0, 0.5, 0.25
    y = n.normalize(x, "state")
    assert y[95] == pytest.approx(2 * (5 - 2) / 4 - 1)  # 0.5
    assert y[107] == 0.0  # min = max -> 0
    assert y[3] == 0.25  # 6D finger dim: fixed [-1, 1] -> identity
    assert n.unnormalize(y, "state")[107] == 0.5
    assert rotation_mask("state").sum() == 96 and rotation_mask("action").sum() == 96
    assert not rotation_mask("state")[90:100].any() and not rotation_mask("action")[96:].any()


def test_round_trip_torch_and_numpy():
    n = Normalizer(bounds(1))
    for kind, d in (("state", 109), ("action", 99)):
        x = torch.randn(4, 16, d, dtype=torch.float64)
        np.testing.assert_allclose(n.unnormalize(n.normalize(x, kind), kind).numpy(), x.numpy(), atol=1e-12)
        xn = x.numpy()
        np.testing.assert_allclose(n.unnormalize(n.normalize(xn, kind), kind), xn, atol=1e-12)
        lo, hi = n.lo[kind], n.hi[kind]
        np.testing.assert_allclose(n.normalize(np.stack([lo, hi]), kind), np.stack([-np.ones(d), np.ones(d)]))
    m = Normalizer.from_dict(json.loads(json.dumps(n.to_dict())))
    assert m == n
    with pytest.raises(ValueError, match="last dim 109"):
        n.normalize(torch.zeros(3, 99), "state")


def test_q99_clips():
    b = bounds(2)
    n = Normalizer(b, mode="q99")
    x = torch.tensor(b["action"][1] + 10.0)
    y = n.normalize(x, "action")
    assert y.max() == 1.0 and y[96:].min() == 1.0


def test_running_stats_and_pooling_match_concatenation():
    rng = np.random.default_rng(0)
    parts = [rng.normal(loc=i, scale=1 + i, size=(n, 109)) for i, n in enumerate((50, 120, 7))]
    res = []
    for i, p in enumerate(parts):
        rs = RunningStats(109, reservoir=1000)
        for chunk in np.array_split(p, 3):
            rs.add(chunk)
        r = rs.result()
        np.testing.assert_allclose(r["mean"], p.mean(0), atol=1e-12)
        np.testing.assert_allclose(r["std"], p.std(0), atol=1e-10)
        np.testing.assert_allclose(r["q01"], np.quantile(p, 0.01, axis=0), atol=1e-12)  # exact below reservoir
        res.append({"dataset": f"d{i}", "state": r, "action": {k: (np.asarray(v)[..., :99].tolist()
                                                                     if k != "count" else v) for k, v in r.items()}})
    pooled = pool_statistics(res)["state"]
    cat = np.concatenate(parts)
    assert pooled["count"] == len(cat)
    np.testing.assert_allclose(pooled["mean"], cat.mean(0), atol=1e-12)
    np.testing.assert_allclose(pooled["std"], cat.std(0), atol=1e-10)
    np.testing.assert_allclose(pooled["min"], cat.min(0))
    np.testing.assert_allclose(pooled["max"], cat.max(0))


def test_reservoir_is_bounded_and_uniform():
    rs = RunningStats(1, reservoir=500, seed=3)
    for _ in range(20):
        rs.add(np.arange(1000, dtype=float)[:, None])
    assert len(rs.sample) == 500 and rs.n == 20000
    assert abs(rs.sample.mean() - 499.5) < 40


def test_reservoir_is_the_bottom_k_of_its_keys():
    """The buffered sample is exactly the rows with the `reservoir` smallest keys of the same key stream
    (a brute-force bottom-k over every row), whatever the chunking."""
    data = np.random.default_rng(1).normal(size=(5000, 3))
    for reservoir, sizes in ((300, (1, 7, 50, 400)), (4999, (2500, 2500)), (6000, (1000,))):
        rs = RunningStats(3, reservoir=reservoir, seed=5)
        start, i = 0, 0
        while start < len(data):
            n = sizes[i % len(sizes)]
            rs.add(data[start:start + n])
            start, i = start + n, i + 1
        rng = np.random.default_rng(5)  # the same stream of keys, drawn in the same chunks
        stream, start, i = [], 0, 0
        while start < len(data):
            n = min(sizes[i % len(sizes)], len(data) - start)
            stream.append(rng.random(n))
            start, i = start + n, i + 1
        order = np.argsort(np.concatenate(stream))[:reservoir]
        expected = data[np.sort(order)]
        got = rs.sample
        assert len(got) == min(reservoir, len(data))
        np.testing.assert_array_equal(got[np.lexsort(got.T)], expected[np.lexsort(expected.T)])


K = [[50.0, 0, 16], [0, 50.0, 12], [0, 0, 1]]


def write_ep(root, ds, ep, T, seed, segments=()):
    rng = np.random.default_rng(seed)
    h = {"global_orient": rng.normal(size=(T, 3)), "hand_pose": rng.normal(size=(T, 15, 3)) * 0.3,
         "betas": rng.normal(size=(T, 10)), "transl": rng.normal(size=(T, 3))}
    StoreWriter(root).write_episode(EpisodeMeta(ds, ep, "x", segments=list(segments), K=K), {"right": h},
                                    np.zeros((T, 24, 32, 3), np.uint8))
    return h


def test_dataset_statistics_hand_computed(tmp_path):
    """horizon 1: states at frames 0..T-2, actions = frame k+1 relative to k; transl stats by hand."""
    h = write_ep(tmp_path, "h2o", "a", 6, seed=0)
    s = dataset_statistics(tmp_path, "h2o", horizon=1)
    tr = h["transl"].astype(np.float32).astype(np.float64)
    assert s["state"]["count"] == 5 and s["action"]["count"] == 5
    np.testing.assert_allclose(s["state"]["mean"][106:109], tr[:5].mean(0), atol=1e-6)
    np.testing.assert_allclose(s["state"]["max"][90:100], h["betas"][:5].max(0), atol=1e-6)
    dt = tr[1:] - tr[:-1]
    np.testing.assert_allclose(s["action"]["min"][96:99], dt.min(0), atol=1e-6)
    np.testing.assert_allclose(s["action"]["std"][96:99], dt.std(0), atol=1e-6)
    # horizon 3 with a segment: masked (padded) actions are not counted
    write_ep(tmp_path, "taco", "b", 8, seed=1, segments=[(2, 6, "y")])
    s = dataset_statistics(tmp_path, "taco", horizon=3)
    assert s["state"]["count"] == 3  # starts 2, 3, 4
    assert s["action"]["count"] == 3 + 2 + 1


def test_store_statistics_files_and_pooling(tmp_path):
    write_ep(tmp_path, "h2o", "a", 10, seed=0)
    write_ep(tmp_path, "h2o", "b", 7, seed=1)
    write_ep(tmp_path, "taco", "c", 9, seed=2)
    out = compute_store_statistics(tmp_path, horizon=4, progress=False)
    assert json.loads(normalizer_path(tmp_path, "right", 4).read_text()) == out
    a = dataset_statistics(tmp_path, "h2o", horizon=4)
    b = dataset_statistics(tmp_path, "taco", horizon=4)
    n = Normalizer.from_dict(out["normalizer"])
    lo = np.minimum(a["action"]["min"], b["action"]["min"])
    np.testing.assert_allclose(n.lo["action"][96:], lo[96:])
    np.testing.assert_allclose(n.lo["action"][:96], -1.0)
    assert load_normalizer(tmp_path, horizon=4) == n
    only = load_normalizer(tmp_path, ["taco"], horizon=4)
    np.testing.assert_allclose(only.hi["state"][106:], b["state"]["max"][106:])
    with pytest.raises(ValueError, match="megohand stats"):
        load_normalizer(tmp_path, horizon=16)

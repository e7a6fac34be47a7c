"""Per-horizon-step action normalisation (min_max_per_step / q99_per_step): statistics against the store's windows,
hand-computed cases, round trips, the device MinMax, checkpoints, and the default mode left unchanged."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from megohand.data.normalize import Normalizer
from megohand.data.stats import (
    compute_store_statistics,
    dataset_statistics,
    load_normalizer,
    pool_statistics,
    stats_path,
)
from megohand.data.windows import WindowDataset
from megohand.models import MEgoHandPolicy
from megohand.models.policy import MinMax, normalizer_bounds

from test_models_policy import compact_cfg
from test_normalize import write_ep

torch.set_num_threads(1)


def per_step_bounds(L=4, seed=0):
    rng = np.random.default_rng(seed)
    lo_s = rng.normal(size=109)
    lo_a = rng.normal(size=(L, 99))
    hi_a = lo_a + rng.uniform(0.1, 2.0, (L, 99))
    hi_a[1, 97] = lo_a[1, 97]  # a constant dim at one step
    return {"state": (lo_s, lo_s + rng.uniform(0.1, 2.0, 109)), "action": (lo_a, hi_a)}


def window_actions(root, ds, L, window_scope="segment"):
    """(N, L, 99) actions and (N, L) masks of every training window (stride 1), via WindowDataset."""
    w = WindowDataset(root, ds, split="train", horizon=L, image_size=8, stored_depth="none", window_scope=window_scope)
    items = [w[i] for i in range(len(w))]
    return (torch.stack([x["action"] for x in items]).double().numpy(),
            torch.stack([x["action_mask"] for x in items]).numpy() > 0)


def ref_per_step(act, mask):
    """numpy reference: per-step min / max / mean over the unmasked actions, (L, 99) each."""
    L = act.shape[1]
    return {k: np.stack([f(act[mask[:, i], i], 0) for i in range(L)]) for k, f in
            (("min", np.min), ("max", np.max), ("mean", np.mean))}


def test_hand_computed_per_step():
    b = per_step_bounds(L=2)
    b["action"][0][0, 96], b["action"][1][0, 96] = 0.0, 0.01  # step 1: x offset in [0, 1 cm]
    b["action"][0][1, 96], b["action"][1][1, 96] = -0.2, 0.2  # step 2: [-20, 20 cm]
    n = Normalizer(b, "min_max_per_step")
    assert n.horizon == 2 and n.lo["action"].shape == (2, 99)
    x = np.zeros((3, 2, 99))
    x[..., 96] = 0.005
    x[..., 5] = 0.3  # a 6D dim: fixed [-1, 1] at every step
    y = n.normalize(x, "action")
    np.testing.assert_allclose(y[:, 0, 96], 0.0)
    np.testing.assert_allclose(y[:, 1, 96], 2 * (0.005 + 0.2) / 0.4 - 1)
    np.testing.assert_allclose(y[..., 5], 0.3)
    assert np.all(y[:, 1, 97] == 0.0)  # constant at step 2 -> 0 (and back to lo)
    np.testing.assert_allclose(n.unnormalize(y, "action")[:, 1, 97], b["action"][0][1, 97])
    np.testing.assert_allclose(n.lo["action"][:, :96], -1.0)
    np.testing.assert_allclose(n.hi["action"][:, :96], 1.0)
    q = Normalizer(b, "q99_per_step")
    assert q.normalize(x * 100, "action")[..., 96].max() == 1.0  # clipped


def test_per_step_round_trip_and_errors():
    n = Normalizer(per_step_bounds(L=4, seed=1), "min_max_per_step")
    x = torch.randn(5, 4, 99, dtype=torch.float64)
    x[:, 1, 97] = n.lo["action"][1, 97]  # the constant dim maps to 0 and back to lo
    np.testing.assert_allclose(n.unnormalize(n.normalize(x, "action"), "action").numpy(), x.numpy(), atol=1e-12)
    xn = x.numpy()
    np.testing.assert_allclose(n.unnormalize(n.normalize(xn, "action"), "action"), xn, atol=1e-12)
    np.testing.assert_allclose(n.normalize(np.stack([n.lo["action"], n.hi["action"]]), "action")[:, [0, 2, 3]],
                               np.stack([-np.ones((3, 99)), np.ones((3, 99))]))
    s = torch.randn(5, 109, dtype=torch.float64)  # state bounds stay per dim
    np.testing.assert_allclose(n.unnormalize(n.normalize(s, "state"), "state").numpy(), s.numpy(), atol=1e-12)
    d = json.loads(json.dumps(n.to_dict()))
    assert d["type"] == "min_max_per_step" and np.shape(d["action"]["lo"]) == (4, 99) and len(d["state"]["lo"]) == 109
    assert Normalizer.from_dict(d) == n
    for bad in (torch.zeros(5, 3, 99), np.zeros(99)):
        with pytest.raises(ValueError, match=r"\(\.\.\., 4, 99\)"):
            n.normalize(bad, "action")
    with pytest.raises(ValueError, match=r"shape \(L, 99\)"):
        Normalizer({"state": per_step_bounds()["state"], "action": (np.zeros(99), np.ones(99))}, "min_max_per_step")
    with pytest.raises(ValueError, match="mode must be"):
        Normalizer(per_step_bounds(), "per_step")


def test_minmax_device_matches_normalizer_per_step():
    for mode in ("min_max_per_step", "q99_per_step"):
        n = Normalizer(per_step_bounds(L=4, seed=2), mode)
        mm = MinMax(normalizer_bounds(n, 109, 99, horizon=4))
        assert mm.action_lo.shape == (4, 99) and mm.clip.item() == float(mode.startswith("q99"))
        g = torch.Generator().manual_seed(0)
        x = torch.randn(6, 4, 99, generator=g) * 3
        torch.testing.assert_close(mm.action(x), n.normalize(x, "action"))
        y = torch.rand(6, 4, 99, generator=g) * 2 - 1
        torch.testing.assert_close(mm.unaction(y), n.unnormalize(y, "action"))
        s = torch.randn(6, 109, generator=g)
        torch.testing.assert_close(mm.state(s), n.normalize(s, "state"))
        mm = mm.to(torch.bfloat16)
        assert mm.action_lo.dtype == torch.float32 and mm.action_lo.shape == (4, 99)
        with pytest.raises(ValueError, match=r"expected \(16, 99\)"):
            normalizer_bounds(n, 109, 99, horizon=16)


def test_per_step_statistics_equal_window_reference(tmp_path):
    L = 4
    write_ep(tmp_path, "h2o", "a", 10, seed=0)
    write_ep(tmp_path, "h2o", "b", 7, seed=1, segments=[(1, 6, "y")])
    write_ep(tmp_path, "taco", "c", 9, seed=2)
    sa = dataset_statistics(tmp_path, "h2o", horizon=L)
    act, mask = window_actions(tmp_path, "h2o", L)
    ref = ref_per_step(act, mask)
    ps = sa["action_per_step"]
    assert sa["version"] == 2 and ps["count"] == mask.sum(0).tolist() and sum(ps["count"]) == sa["action"]["count"]
    for k in ("min", "max", "mean"):
        np.testing.assert_allclose(np.array(ps[k])[:, 96:], ref[k][:, 96:], atol=1e-6)
    # pooled over both datasets = per-step min / max of all their windows; the normaliser takes them
    out = compute_store_statistics(tmp_path, horizon=L, mode="min_max_per_step", progress=False)
    act2, mask2 = window_actions(tmp_path, "taco", L)
    ref = ref_per_step(np.concatenate([act, act2]), np.concatenate([mask, mask2]))
    pooled = out["pooled"]["action_per_step"]
    np.testing.assert_allclose(np.array(pooled["min"])[:, 90:], ref["min"][:, 90:], atol=1e-6)
    np.testing.assert_allclose(np.array(pooled["max"])[:, 90:], ref["max"][:, 90:], atol=1e-6)
    np.testing.assert_allclose(np.array(pooled["mean"])[:, 96:], ref["mean"][:, 96:], atol=1e-6)
    n = Normalizer.from_dict(out["normalizer"])
    assert n.mode == "min_max_per_step" and n.lo["action"].shape == (L, 99)
    np.testing.assert_allclose(n.lo["action"][:, 96:], ref["min"][:, 96:], atol=1e-6)
    np.testing.assert_allclose(n.hi["action"][:, 96:], ref["max"][:, 96:], atol=1e-6)
    np.testing.assert_allclose(n.lo["action"][:, :96], -1.0)
    assert load_normalizer(tmp_path, horizon=L, mode="min_max_per_step") == n
    # the per-step ranges sit inside the shared range (near steps: finer)
    shared = load_normalizer(tmp_path, horizon=L)
    assert np.all(n.lo["action"][:, 96:] >= shared.lo["action"][96:] - 1e-12)
    assert np.all(n.hi["action"][:, 96:] <= shared.hi["action"][96:] + 1e-12)



def test_episode_scope_statistics_cover_the_cross_segment_windows(tmp_path):
    L = 4
    write_ep(tmp_path, "h2o", "b", 12, seed=1, segments=[(0, 3, "x"), (3, 12, "y")])
    seg = compute_store_statistics(tmp_path, horizon=L, mode="min_max_per_step", progress=False)
    out = compute_store_statistics(tmp_path, horizon=L, mode="min_max_per_step", progress=False,
                                   window_scope="episode")
    assert stats_path(tmp_path, "h2o", horizon=L, window_scope="episode").name == "stats_right_h4_episode.json"
    assert out["window_scope"] == "episode" and seg["window_scope"] == "segment"
    act, mask = window_actions(tmp_path, "h2o", L, "episode")
    ref = ref_per_step(act, mask)
    ps = out["pooled"]["action_per_step"]
    assert ps["count"] == mask.sum(0).tolist()
    assert sum(ps["count"]) > sum(seg["pooled"]["action_per_step"]["count"])  # windows no longer cut at frame 3
    np.testing.assert_allclose(np.array(ps["min"])[:, 96:], ref["min"][:, 96:], atol=1e-6)
    np.testing.assert_allclose(np.array(ps["max"])[:, 96:], ref["max"][:, 96:], atol=1e-6)
    n = load_normalizer(tmp_path, horizon=L, mode="min_max_per_step", window_scope="episode")
    np.testing.assert_allclose(n.hi["action"][:, 96:], ref["max"][:, 96:], atol=1e-6)
    assert n != load_normalizer(tmp_path, horizon=L, mode="min_max_per_step")  # the segment files stay apart

def test_pool_per_step_skips_empty_steps():
    def part(count, lo, hi):
        L = len(count)
        z = np.zeros((L, 99))
        return {"dataset": "d", "state": {"count": 1, **{k: np.zeros(109).tolist() for k in
                                                          ("mean", "std", "min", "max", "q01", "q99")}},
                "action": {"count": 1, **{k: np.zeros(99).tolist() for k in ("mean", "std", "min", "max", "q01", "q99")}},
                "action_per_step": {"count": count, "mean": z.tolist(), "std": z.tolist(), "min": (z + lo).tolist(),
                                    "max": (z + hi).tolist(), "q01": (z + lo).tolist(), "q99": (z + hi).tolist()}}
    p = pool_statistics([part([3, 0], -1.0, 1.0), part([2, 0], -5.0, 5.0)])["action_per_step"]
    assert p["count"] == [5, 0]
    assert p["min"][0][0] == -5.0 and p["max"][0][0] == 5.0
    p = pool_statistics([part([3, 2], -1.0, 1.0), part([2, 0], -5.0, 5.0)])["action_per_step"]
    assert p["min"][1][0] == -1.0 and p["max"][1][0] == 1.0  # the empty part's fallback is skipped at step 2


def test_old_stats_files_still_load_and_default_is_unchanged(tmp_path):
    L = 4
    write_ep(tmp_path, "h2o", "a", 10, seed=0)
    write_ep(tmp_path, "taco", "c", 9, seed=2)
    new = compute_store_statistics(tmp_path, horizon=L, progress=False)
    assert new["normalizer"]["type"] == "min_max" and len(new["normalizer"]["action"]["lo"]) == 99
    for ds in ("h2o", "taco"):  # make them version-1 files (no per-step part), newer than the index
        p = stats_path(tmp_path, ds, horizon=L)
        s = json.loads(p.read_text())
        del s["action_per_step"]
        s["version"] = 1
        p.write_text(json.dumps(s))
        os.utime(p, (p.stat().st_mtime + 10,) * 2)
    old = compute_store_statistics(tmp_path, horizon=L, progress=False)
    assert "action_per_step" not in json.loads(stats_path(tmp_path, "h2o", horizon=L).read_text())  # not recomputed
    assert old["normalizer"] == new["normalizer"]  # default normaliser identical with or without per-step data
    assert {k: v for k, v in new["pooled"].items() if k != "action_per_step"} == old["pooled"]
    assert load_normalizer(tmp_path, horizon=L) == Normalizer.from_dict(new["normalizer"])
    with pytest.raises(ValueError, match="megohand stats --force"):
        load_normalizer(tmp_path, horizon=L, mode="min_max_per_step")
    ps = compute_store_statistics(tmp_path, horizon=L, mode="min_max_per_step", progress=False)  # recomputes
    assert json.loads(stats_path(tmp_path, "h2o", horizon=L).read_text())["version"] == 2
    assert ps["normalizer"]["type"] == "min_max_per_step"
    assert load_normalizer(tmp_path, horizon=L) == Normalizer.from_dict(new["normalizer"])


def test_store_normalizer_uses_the_train_option(tmp_path):
    from megohand.train.config import TrainConfig
    from megohand.train.trainer import store_normalizer

    write_ep(tmp_path, "h2o", "a", 10, seed=0)
    acc = SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)
    model = compact_cfg()  # horizon 4
    default = store_normalizer(TrainConfig(store=tmp_path, model=model, progress=False), acc)
    assert TrainConfig().normalizer == "min_max" and default.mode == "min_max" and default.lo["action"].shape == (99,)
    n = store_normalizer(TrainConfig(store=tmp_path, model=model, progress=False, normalizer="min_max_per_step"), acc)
    assert n.mode == "min_max_per_step" and n.lo["action"].shape == (4, 99)
    assert TrainConfig(normalizer="min_max_per_step").to_dict()["normalizer"] == "min_max_per_step"


def test_train_window_scope_reaches_datasets_and_statistics(tmp_path):
    from megohand.train.config import TrainConfig
    from megohand.train.trainer import build_datasets, store_normalizer

    write_ep(tmp_path, "h2o", "a", 12, seed=0, segments=[(0, 3, "x"), (3, 12, "y")])
    acc = SimpleNamespace(is_main_process=True, wait_for_everyone=lambda: None)
    cfg = TrainConfig(store=tmp_path, model=compact_cfg(), progress=False, window_scope="episode")
    train, _ = build_datasets(cfg, image_size=16)
    assert train.window_scope == "episode" and train.window(2)[2] == 12  # the window at frame 2 runs past 3
    n = store_normalizer(cfg, acc)
    assert stats_path(tmp_path, "h2o", horizon=4, window_scope="episode").is_file()
    assert n == load_normalizer(tmp_path, horizon=4, window_scope="episode")
    assert cfg.to_dict()["window_scope"] == "episode" and TrainConfig().window_scope == "segment"


def test_checkpoint_with_per_step_normalizer_round_trips(tmp_path):
    from test_models_fixtures import sample_batch

    torch.manual_seed(0)
    n = Normalizer(per_step_bounds(L=4, seed=3), "min_max_per_step")
    p = MEgoHandPolicy(compact_cfg(), n)
    b = sample_batch(L=4)
    loss, _ = p(b)
    assert torch.isfinite(loss)
    p.save_pretrained(tmp_path / "ck")
    d = json.loads((tmp_path / "ck" / "normalizer.json").read_text())
    assert d["type"] == "min_max_per_step" and np.shape(d["action"]["hi"]) == (4, 99)
    q = MEgoHandPolicy.from_pretrained(tmp_path / "ck")
    assert q.normalizer == n
    np.testing.assert_array_equal(q.normalizer.lo["action"], n.lo["action"])
    np.testing.assert_array_equal(q.normalizer.hi["action"], n.hi["action"])
    for k in ("action_lo", "action_hi", "state_lo", "state_hi"):
        assert torch.equal(getattr(q.norm, k), getattr(p.norm, k))
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    torch.testing.assert_close(q.predict_chunk(b["image"], b["instruction"], b["state"], b["depth"], steps=2, generator=g()),
                               p.predict_chunk(b["image"], b["instruction"], b["state"], b["depth"], steps=2, generator=g()))
    q.set_normalizer(Normalizer(per_step_bounds(L=4, seed=4), "q99_per_step"))
    assert q.norm.action_lo.shape == (4, 99) and q.norm.clip.item() == 1.0
    with pytest.raises(ValueError, match="expected"):  # L of the bounds must match the model's horizon
        q.set_normalizer(Normalizer(per_step_bounds(L=3), "min_max_per_step"))

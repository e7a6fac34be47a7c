"""Per-dataset statistics of states and actions, pooled normalisation metadata (GR00T's stats + metadata.json).

Statistics are taken over what training sees: the state at every window start (stride 1, valid hand, inside
instruction segments) and every unmasked action of those windows (``megohand.data.windows``; the window scope
"episode", whose futures run across segments, has its own files ``..._episode.json``).
Per dim: count, mean, std (population), min, max exactly (streamed, float64); q01, q99 from a uniform random
sample of at most ``reservoir`` rows (exact while the count is below it).

Files (atomic writes)::

    ROOT/<dataset>/stats_<side>_h<horizon>[_episode].json     per dataset
    ROOT/normalizer_<side>_h<horizon>[_episode].json          pooled statistics + Normalizer.to_dict() of the datasets used

Pooling is exact for count, mean, std, min, max; pooled q01/q99 are the min of the q01s / max of the q99s
(a conservative bound: exact pooled quantiles would need the data).

Version 2 files also hold ``action_per_step``: the same statistics per horizon step i = 1..L (count (L,), the
rest (L, 99); quantiles from a sample of ``reservoir // L`` rows per step; a step without any action takes the
all-steps values with count 0). They are pooled the same way, step by step, skipping parts with count 0.
Version 1 files (no per-step part) still load for the shared-bounds modes and are recomputed when a
``*_per_step`` mode needs them.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from megohand.data.normalize import Normalizer
from megohand import io
from megohand.data.store import Store, StoreError
from megohand.data.windows import episode_states, episode_windows, future_indices
from megohand.hand.vector import encode_chunk

STATS_FORMAT = "megohand-stats"
STATS_VERSION = 2  # 2: + action_per_step


class RunningStats:
    """Streaming per-dim count/mean/std/min/max (float64) plus a bounded uniform sample for quantiles.

    The sample is the bottom-``reservoir`` of uniform keys drawn per row (a uniform sample without replacement).
    Rows whose key is above the current cut can never enter it and are dropped on arrival; the rest wait in a
    buffer that is merged once it holds ``reservoir`` rows, so each row is copied O(1) times (merging on every
    ``add`` copied the whole sample each time: quadratic on large datasets).
    """

    def __init__(self, dim: int, reservoir: int = 100_000, seed: int = 0):
        self.dim, self.reservoir = dim, reservoir
        self.n = 0
        self.sum = np.zeros(dim)
        self.sumsq = np.zeros(dim)
        self.min = np.full(dim, np.inf)
        self.max = np.full(dim, -np.inf)
        self.rng = np.random.default_rng(seed)
        self._sample, self._keys = np.zeros((0, dim)), np.zeros(0)
        self._cut = np.inf  # the largest key in a full sample (inf while it is not full)
        self._pending: list[tuple[np.ndarray, np.ndarray]] = []
        self._pending_rows = 0

    def add(self, x: np.ndarray) -> None:
        x = np.asarray(x, dtype=np.float64).reshape(-1, self.dim)
        if len(x) == 0:
            return
        self.n += len(x)
        self.sum += x.sum(0)
        self.sumsq += (x * x).sum(0)
        self.min = np.minimum(self.min, x.min(0))
        self.max = np.maximum(self.max, x.max(0))
        keys = self.rng.random(len(x))
        keep = keys < self._cut
        if keep.any():
            self._pending.append((keys[keep], x[keep]))
            self._pending_rows += int(keep.sum())
            if self._pending_rows >= self.reservoir:
                self._merge()

    def _merge(self) -> None:
        if not self._pending:
            return
        keys = np.concatenate([self._keys, *(k for k, _ in self._pending)])
        rows = np.concatenate([self._sample, *(r for _, r in self._pending)])
        self._pending, self._pending_rows = [], 0
        if len(keys) > self.reservoir:
            keep = np.argpartition(keys, self.reservoir)[: self.reservoir]
            keys, rows = keys[keep], rows[keep]
        if len(keys) == self.reservoir:
            self._cut = float(keys.max())
        self._keys, self._sample = keys, rows

    @property
    def sample(self) -> np.ndarray:
        """(min(n, reservoir), dim) the uniform sample of the rows added so far."""
        self._merge()
        return self._sample

    def result(self) -> dict:
        if self.n == 0:
            raise ValueError("no data")
        mean = self.sum / self.n
        var = np.maximum(self.sumsq / self.n - mean * mean, 0.0)
        q01, q99 = np.quantile(self.sample, [0.01, 0.99], axis=0)
        return {"count": int(self.n), "mean": mean.tolist(), "std": np.sqrt(var).tolist(),
                "min": self.min.tolist(), "max": self.max.tolist(), "q01": q01.tolist(), "q99": q99.tolist()}


def dataset_statistics(store: Store | str | Path, dataset: str, side: str = "right", horizon: int = 16,
                       split: str | None = "train", reservoir: int = 100_000, seed: int = 0,
                       progress: bool = False, window_scope: str = "segment") -> dict:
    """Statistics of one dataset's states (109) and actions (99) over its windows of ``window_scope``; see the
    module docstring."""
    store = store if isinstance(store, Store) else Store(store)
    refs = store.episodes(dataset, split)
    if not refs:
        raise StoreError(f"dataset {dataset!r}: no episodes of split {split!r} in {store.root}")
    st, ac = RunningStats(109, reservoir, seed), RunningStats(99, reservoir, seed + 1)
    steps = [RunningStats(99, max(reservoir // horizon, 1), seed + 2 + i) for i in range(horizon)]
    it = refs
    if progress:
        from tqdm import tqdm

        it = tqdm(refs, desc=f"stats {dataset}", unit="ep")
    for ref in it:
        ep = store.open(ref)
        states = episode_states(ep, side)
        valid = ep.hands(side)["valid"]
        for ks, e, _ in episode_windows(np.asarray(valid, bool), ep.meta.segments, 1, window_scope):
            if len(ks) == 0:
                continue
            idx, mask = future_indices(ks, e, horizon, valid)
            with torch.no_grad():
                act = encode_chunk(states[torch.from_numpy(ks)], states[torch.from_numpy(idx)]).double().numpy()
            st.add(states[torch.from_numpy(ks)].double().numpy())
            ac.add(act[mask > 0])
            for i, rs in enumerate(steps):
                rs.add(act[:, i][mask[:, i] > 0])
    action = ac.result()
    return {"format": STATS_FORMAT, "version": STATS_VERSION, "dataset": dataset, "side": side, "horizon": horizon,
            "split": split, "window_scope": window_scope, "episodes": len(refs), "state": st.result(), "action": action,
            "action_per_step": per_step_result(steps, action),
            "computed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def per_step_result(steps: list[RunningStats], fallback: dict) -> dict:
    """Per-step ``RunningStats.result()`` stacked: count (L,), the rest (L, 99) (empty steps: ``fallback``, count 0)."""
    res = [rs.result() if rs.n else {**fallback, "count": 0} for rs in steps]
    return {k: [r[k] for r in res] for k in fallback}


def pool_per_step(parts: list[dict]) -> dict:
    """Pool ``action_per_step`` dicts step by step (as ``pool_statistics``; parts with count 0 at a step are
    skipped there, and a step empty in every part keeps the parts' fallback values with equal weights)."""
    n = np.array([p["count"] for p in parts], np.float64)  # (P, L)
    N = n.sum(0)
    use = np.where(N > 0, n > 0, True)  # (P, L)
    w = np.where(N > 0, n, 1.0)[..., None]  # (P, L, 1)
    a = {k: np.array([p[k] for p in parts], np.float64) for k in ("mean", "std", "min", "max", "q01", "q99")}
    mu = (w * a["mean"]).sum(0) / w.sum(0)
    var = (w * (a["std"] ** 2 + a["mean"] ** 2)).sum(0) / w.sum(0) - mu ** 2
    u = use[..., None]
    return {"count": N.astype(int).tolist(), "mean": mu.tolist(), "std": np.sqrt(np.maximum(var, 0.0)).tolist(),
            "min": np.where(u, a["min"], np.inf).min(0).tolist(), "max": np.where(u, a["max"], -np.inf).max(0).tolist(),
            "q01": np.where(u, a["q01"], np.inf).min(0).tolist(), "q99": np.where(u, a["q99"], -np.inf).max(0).tolist()}


def pool_statistics(stats: list[dict]) -> dict:
    """Pool per-dataset statistics (exact count/mean/std/min/max; conservative q01/q99)."""
    if not stats:
        raise ValueError("nothing to pool")
    out = {"datasets": [s.get("dataset") for s in stats]}
    for kind in ("state", "action"):
        parts = [s[kind] for s in stats]
        n = np.array([p["count"] for p in parts], np.float64)
        N = n.sum()
        mean = np.array([p["mean"] for p in parts])
        std = np.array([p["std"] for p in parts])
        mu = (n[:, None] * mean).sum(0) / N
        var = (n[:, None] * (std ** 2 + mean ** 2)).sum(0) / N - mu ** 2
        out[kind] = {
            "count": int(N),
            "mean": mu.tolist(),
            "std": np.sqrt(np.maximum(var, 0.0)).tolist(),
            "min": np.min([p["min"] for p in parts], 0).tolist(),
            "max": np.max([p["max"] for p in parts], 0).tolist(),
            "q01": np.min([p["q01"] for p in parts], 0).tolist(),
            "q99": np.max([p["q99"] for p in parts], 0).tolist(),
        }
    if all("action_per_step" in s for s in stats):
        out["action_per_step"] = pool_per_step([s["action_per_step"] for s in stats])
    return out


def _scope_suffix(window_scope: str) -> str:
    return "" if window_scope == "segment" else f"_{window_scope}"


def stats_path(root: str | Path, dataset: str, side: str = "right", horizon: int = 16,
               window_scope: str = "segment") -> Path:
    return Path(root) / dataset / f"stats_{side}_h{horizon}{_scope_suffix(window_scope)}.json"


def normalizer_path(root: str | Path, side: str = "right", horizon: int = 16, window_scope: str = "segment") -> Path:
    return Path(root) / f"normalizer_{side}_h{horizon}{_scope_suffix(window_scope)}.json"


def compute_store_statistics(root: str | Path, datasets: list[str] | None = None, side: str = "right",
                             horizon: int = 16, split: str | None = "train", force: bool = False,
                             mode: str = "min_max", progress: bool = True, window_scope: str = "segment") -> dict:
    """Compute (or reuse, unless ``force``) each dataset's statistics, then write the pooled normaliser file.

    A dataset's file is reused when it is newer than the dataset's index.json (so a resumed run skips done work)
    and, for a ``*_per_step`` mode, holds the per-step part (version 1 files are recomputed then).
    Returns the pooled file's content."""
    store = Store(root)
    names = datasets or store.datasets()
    per = []
    for ds in names:
        p = stats_path(root, ds, side, horizon, window_scope)
        idx = Path(root) / ds / "index.json"
        fresh = p.exists() and (not idx.exists() or p.stat().st_mtime >= idx.stat().st_mtime)
        if fresh and not force:
            s = json.loads(p.read_text())
            if s.get("split") == split and ("action_per_step" in s or not mode.endswith("_per_step")):
                per.append(s)
                continue
        s = dataset_statistics(store, ds, side, horizon, split, progress=progress, window_scope=window_scope)
        io.write_json(p, s)
        per.append(s)
    pooled = pool_statistics(per)
    out = {"format": STATS_FORMAT, "kind": "pooled", "side": side, "horizon": horizon, "split": split,
           "window_scope": window_scope, "datasets": names, "pooled": pooled,
           "normalizer": Normalizer.from_stats(pooled, mode).to_dict()}
    io.write_json(normalizer_path(root, side, horizon, window_scope), out)
    return out


def load_normalizer(root: str | Path, datasets: list[str] | None = None, side: str = "right", horizon: int = 16,
                    mode: str = "min_max", window_scope: str = "segment") -> Normalizer:
    """Normaliser pooled over ``datasets`` (default: all) from the per-dataset files of ``megohand stats``."""
    store = Store(root)
    per = []
    for ds in datasets or store.datasets():
        p = stats_path(root, ds, side, horizon, window_scope)
        if not p.exists():
            raise StoreError(f"{ds} [stats]: {p} missing; run `megohand stats --root {root} --side {side} "
                             f"--horizon {horizon} --window-scope {window_scope}` first")
        per.append(json.loads(p.read_text()))
    return Normalizer.from_stats(pool_statistics(per), mode)

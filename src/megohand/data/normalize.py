"""Per-dimension normalisation of the 109-D state and the 99-D action (GR00T ``min_max``).

``y = 2 (x - lo) / (hi - lo) - 1`` maps [lo, hi] to [-1, 1]; dims with hi = lo map to 0 (and back to lo).
The 6D rotation dims (finger rotations and wrist / relative wrist rotation, slices from megohand.hand.vector)
use the fixed bounds [-1, 1] (identity map), as GR00T does for absolute rotations in 6D. Betas, translation
and relative translation use statistics (``lo, hi`` = min, max; or q01, q99 with clipping in mode "q99"),
pooled over the training datasets (megohand.data.stats). ``to_dict()`` is JSON-able and travels with every
checkpoint.

The ``*_per_step`` modes (opt-in) take the action bounds per horizon step i = 1..L: shape (L, 99), applied to
action tensors (..., L, 99), so the near chunk frames (small wrist offsets t_{k+i} - t_k) get a fine scale.
State bounds stay (109,).
"""

from __future__ import annotations

import numpy as np
import torch

from megohand.hand.vector import (
    ACTION_DIM,
    ACTION_SLICE_FINGERS,
    ACTION_SLICE_WRIST_ROT,
    SLICE_FINGERS,
    SLICE_WRIST_ROT,
    STATE_DIM,
)

MODES = ("min_max", "q99", "min_max_per_step", "q99_per_step")
KINDS = {"state": STATE_DIM, "action": ACTION_DIM}


def rotation_mask(kind: str) -> np.ndarray:
    """(D,) bool: dims of ``kind`` ("state" | "action") that hold 6D rotations (fixed bounds [-1, 1])."""
    m = np.zeros(KINDS[kind], bool)
    for s in (SLICE_FINGERS, SLICE_WRIST_ROT) if kind == "state" else (ACTION_SLICE_FINGERS, ACTION_SLICE_WRIST_ROT):
        m[s] = True
    return m


class Normalizer:
    """min_max (or q99) normalisation of state (..., 109) and action (..., 99) tensors or arrays.

    Args:
        bounds: {"state": (lo (109,), hi (109,)), "action": (lo (99,), hi (99,))}; 6D dims are overridden to [-1, 1].
            In the ``*_per_step`` modes the action bounds have shape (L, 99) (one row per horizon step).
        mode: "min_max", "q99" (clips the normalised value to [-1, 1]), "min_max_per_step" or "q99_per_step".
    """

    def __init__(self, bounds: dict[str, tuple], mode: str = "min_max"):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.per_step = mode.endswith("_per_step")
        self.clip = mode.startswith("q99")
        self.lo, self.hi = {}, {}
        for kind, dim in KINDS.items():
            if kind not in bounds:
                raise ValueError(f"normaliser bounds for {kind!r} missing")
            if self.per_step and kind == "action":
                lo, hi = (np.asarray(b, dtype=np.float64) for b in bounds[kind])
                if lo.ndim != 2 or lo.shape[0] < 1 or lo.shape[1:] != (dim,) or hi.shape != lo.shape:
                    raise ValueError(f"{mode}: action bounds must have shape (L, {dim}), got {lo.shape}, {hi.shape}")
            else:
                lo, hi = (np.asarray(b, dtype=np.float64).reshape(-1) for b in bounds[kind])
                if lo.shape != (dim,) or hi.shape != (dim,):
                    raise ValueError(f"{kind} bounds must have {dim} dims, got {lo.shape}, {hi.shape}")
            if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))) or np.any(hi < lo):
                raise ValueError(f"{kind} bounds must be finite with hi >= lo")
            rot = rotation_mask(kind)
            lo, hi = np.where(rot, -1.0, lo), np.where(rot, 1.0, hi)
            self.lo[kind], self.hi[kind] = lo, hi

    @property
    def horizon(self) -> int | None:
        """L of the per-step action bounds (None when the action bounds are shared by all steps)."""
        return len(self.lo["action"]) if self.per_step else None

    @classmethod
    def from_stats(cls, stats: dict, mode: str = "min_max") -> "Normalizer":
        """From a statistics dict (``megohand.data.stats``: {"state": {"min", "max", "q01", "q99"...}, "action": ...,
        "action_per_step": {... (L, 99)}}; the per-step part is only read by the ``*_per_step`` modes)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        keys = ("q01", "q99") if mode.startswith("q99") else ("min", "max")
        src = {"state": "state", "action": "action_per_step" if mode.endswith("_per_step") else "action"}
        try:
            return cls({k: (stats[src[k]][keys[0]], stats[src[k]][keys[1]]) for k in KINDS}, mode)
        except KeyError as e:
            hint = " (per-step statistics: recompute with `megohand stats --force`)" if "per_step" in mode else ""
            raise ValueError(f"statistics lack {e}; expected {sorted(set(src.values()))} with {keys}{hint}") from None

    def _get(self, kind: str, like):
        if kind not in KINDS:
            raise ValueError(f"kind must be 'state' or 'action', got {kind!r}")
        lo, hi = self.lo[kind], self.hi[kind]
        span = hi - lo
        if isinstance(like, torch.Tensor):
            f = lambda a: torch.as_tensor(a, dtype=like.dtype, device=like.device)  # noqa: E731
            return f(lo), f(np.where(span > 0, span, 1.0)), torch.as_tensor(span > 0, device=like.device)
        return lo, np.where(span > 0, span, 1.0), span > 0

    def normalize(self, x, kind: str):
        """x (..., D) in physical units -> (..., D) in [-1, 1] (dims with min = max -> 0)."""
        self._check(x, kind)
        lo, span, live = self._get(kind, x)
        y = 2.0 * (x - lo) / span - 1.0
        if isinstance(x, torch.Tensor):
            y = torch.where(live, y, torch.zeros_like(y))
            return y.clamp(-1.0, 1.0) if self.clip else y
        y = np.where(live, y, 0.0).astype(np.result_type(x, np.float32), copy=False)
        return np.clip(y, -1.0, 1.0) if self.clip else y

    def unnormalize(self, y, kind: str):
        """Inverse of ``normalize`` (dims with min = max -> min)."""
        self._check(y, kind)
        lo, span, live = self._get(kind, y)
        x = (y + 1.0) * 0.5 * span + lo
        if isinstance(y, torch.Tensor):
            return torch.where(live, x, lo.expand_as(x))
        return np.where(live, x, lo).astype(np.result_type(y, np.float32), copy=False)

    def normalize_state(self, x):
        return self.normalize(x, "state")

    def normalize_action(self, x):
        return self.normalize(x, "action")

    def unnormalize_state(self, y):
        return self.unnormalize(y, "state")

    def unnormalize_action(self, y):
        return self.unnormalize(y, "action")

    def _check(self, x, kind):
        if x.shape[-1] != KINDS.get(kind, -1):
            raise ValueError(f"{kind} must have last dim {KINDS.get(kind)}, got shape {tuple(x.shape)}")
        if kind == "action" and self.per_step and (x.ndim < 2 or x.shape[-2] != self.horizon):
            raise ValueError(f"{self.mode}: action must have shape (..., {self.horizon}, {KINDS[kind]}) "
                             f"(L = {self.horizon} of the bounds), got shape {tuple(x.shape)}")

    def to_dict(self) -> dict:
        """JSON-able: {"type": mode, "state": {"lo", "hi"}, "action": {"lo", "hi"}} (per-step action: nested (L, 99) lists)."""
        return {"type": self.mode, **{k: {"lo": self.lo[k].tolist(), "hi": self.hi[k].tolist()} for k in KINDS}}

    @classmethod
    def from_dict(cls, d: dict) -> "Normalizer":
        try:
            return cls({k: (d[k]["lo"], d[k]["hi"]) for k in KINDS}, d.get("type", "min_max"))
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a Normalizer dict (missing {e})") from None

    def __eq__(self, other) -> bool:
        return isinstance(other, Normalizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Normalizer({self.mode})"

"""Wrist-offset error per horizon step: a checkpoint's raw chunks vs the static pose, on a store's test windows.

    python scripts/horizon_errors.py --store runs/demo/store            # the shipped demo checkpoint
    python scripts/horizon_errors.py --store S --ckpt runs/x/model --windows 256

For each of the L chunk frames k+i: the mean error of the predicted wrist offset t_{k+i} - t_k [cm] (action dims
96:99), the static pose's (offset 0, i.e. the true offset's norm), and the model's error in the normaliser's
units (1 unit = half the min-max span of that dim). Shows where in the chunk a model wins or loses against
the static baseline. Writes benchmarks/results/horizon_errors.json (or --out).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro

from megohand.data.windows import WindowDataset
from megohand.inference.policy import DEMO_CHECKPOINT, load_model
from megohand.io import write_json

T = slice(96, 99)  # wrist offset t_{k+i} - t_k in the action vector (megohand.hand.vector)


@dataclass
class Args:
    store: Path
    """Store whose test split is evaluated."""
    ckpt: Path | None = None
    """Checkpoint folder (default: the shipped demo)."""
    windows: int = 96
    """Test windows drawn at random (window stride 16)."""
    steps: int | None = None
    """Euler steps K (default: the model's)."""
    seed: int = 0
    """Seed of the window draw and the noise."""
    out: Path = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "horizon_errors.json"
    """Result JSON."""


def main(args: Args) -> None:
    torch.set_num_threads(2)
    model = load_model(args.ckpt or DEMO_CHECKPOINT).eval()
    L = model.config.horizon
    # whole futures (across segments), as the window protocol of `megohand eval` compares them
    ds = WindowDataset(args.store, split="test", horizon=L, image_size=model.config.backbone.image_size, stride=16,
                       window_scope="episode")
    idx = np.random.default_rng(args.seed).choice(len(ds), min(args.windows, len(ds)), replace=False)
    items = [ds[int(i)] for i in idx]
    batch = {k: torch.stack([x[k] for x in items]) for k in ("image", "depth", "state", "action", "action_mask")}
    with torch.no_grad():
        pred = model.predict_chunk(batch["image"], [x["instruction"] for x in items], batch["state"], batch["depth"],
                                   steps=args.steps, generator=torch.Generator().manual_seed(args.seed))
    gt, mask = batch["action"], batch["action_mask"].float()
    lo, hi = (torch.tensor(np.asarray(b)[..., T], dtype=torch.float32)
              for b in (model.normalizer.lo["action"], model.normalizer.hi["action"]))
    unit = (hi - lo) / 2  # (3,) shared by the horizon steps, or (L, 3) with a per-step normaliser

    def per_step(x):  # (B, L) -> (L,) mean over valid frames
        return ((x * mask).sum(0) / mask.sum(0).clamp(min=1)).tolist()

    model_cm = per_step((pred[..., T] - gt[..., T]).norm(dim=-1) * 100)
    static_cm = per_step(gt[..., T].norm(dim=-1) * 100)
    model_units = per_step(((pred[..., T] - gt[..., T]) / unit).abs().mean(-1))
    first, last = (unit, unit) if unit.ndim == 1 else (unit[0], unit[-1])
    print(f"normaliser unit of the wrist offset x, y, z [m]: {[round(float(u), 3) for u in first]}"
          + ("" if unit.ndim == 1 else f" at step 1, {[round(float(u), 3) for u in last]} at step {L}"))
    print("step  model [cm]  static [cm]  model [units]")
    for i in range(L):
        print(f"{i + 1:4d}  {model_cm[i]:10.2f}  {static_cm[i]:11.2f}  {model_units[i]:13.3f}")
    write_json(args.out, {
        "benchmark": "horizon_errors", "checkpoint": str(args.ckpt or "demo (shipped)"), "store": str(args.store),
        "windows": len(items), "steps": args.steps, "unit_m": unit.tolist(),
        "model_wrist_offset_error_cm": model_cm, "static_wrist_offset_error_cm": static_cm,
        "model_error_normalised_units": model_units,
        "command": "python scripts/horizon_errors.py " + " ".join(sys.argv[1:]),
    }, allow_nan=True)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__))

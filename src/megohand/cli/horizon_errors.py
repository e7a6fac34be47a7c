"""``megohand horizon-errors``: a checkpoint's wrist-offset error per chunk frame against the static pose."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

T = slice(96, 99)  # wrist offset t_{k+i} - t_k in the action vector (megohand.hand.vector)


@dataclass
class HorizonErrors:
    """Wrist-offset error per chunk frame of a checkpoint against the static pose, on a store's test windows.

    For each of the L chunk frames k+i: the mean error of the predicted wrist offset t_{k+i} - t_k [cm] (action
    dims 96:99), the static pose's (offset 0, i.e. the true offset's norm), and the model's error in the
    normaliser's units (1 unit = half the min-max span of that dim). Shows where in the chunk a model wins or loses
    against the static baseline. Windows run across segments, as the window protocol of ``megohand eval`` compares
    them.

        megohand horizon-errors --store runs/demo/store                       # the shipped demo checkpoint
        megohand horizon-errors --store S --ckpt runs/x/model --windows 256
    """

    store: Path
    """Store whose test split is evaluated."""
    ckpt: Path | None = None
    """Checkpoint folder (default: the demo checkpoint shipped in the package)."""
    windows: int = 96
    """Test windows drawn at random (window stride 16)."""
    steps: int | None = None
    """Euler steps K (default: the model's)."""
    seed: int = 0
    """Seed of the window draw and the noise."""
    threads: int = 2
    """Torch threads."""
    out: Path = Path("horizon_errors.json")
    """Result JSON."""
    overwrite: bool = False
    """Replace an existing --out."""

    def run(self) -> None:
        import numpy as np
        import torch

        from megohand import io
        from megohand.data.windows import WindowDataset
        from megohand.errors import UserError, check_input, check_min
        from megohand.inference.policy import DEMO_CHECKPOINT, load_model

        check_min(1, windows=self.windows, steps=self.steps, threads=self.threads)
        check_input(self.store, "--store", what="store")
        io.check_output_file(self.out, self.overwrite)
        torch.set_num_threads(self.threads)
        model = load_model(self.ckpt or DEMO_CHECKPOINT).eval()
        L = model.config.horizon
        ds = WindowDataset(self.store, split="test", horizon=L, image_size=model.config.backbone.image_size,
                           stride=16, window_scope="episode")
        if len(ds) == 0:
            raise UserError("no test windows", path=self.store, hint="a store with a test split (megohand synth)")
        idx = np.random.default_rng(self.seed).choice(len(ds), min(self.windows, len(ds)), replace=False)
        items = [ds[int(i)] for i in idx]
        batch = {k: torch.stack([x[k] for x in items]) for k in ("image", "depth", "state", "action", "action_mask")}
        batch["has_depth"] = torch.tensor([bool(x["has_depth"]) for x in items])
        with torch.no_grad():
            pred = model.predict_chunk(batch["image"], [x["instruction"] for x in items], batch["state"],
                                       batch["depth"], steps=self.steps, has_depth=batch["has_depth"],
                                       generator=torch.Generator().manual_seed(self.seed))
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
        io.write_json(self.out, {
            "benchmark": "horizon_errors", "checkpoint": str(self.ckpt or "demo (shipped)"), "store": str(self.store),
            "windows": len(items), "steps": self.steps, "unit_m": unit.tolist(),
            "model_wrist_offset_error_cm": model_cm, "static_wrist_offset_error_cm": static_cm,
            "model_error_normalised_units": model_units,
            "command": "megohand horizon-errors " + " ".join(sys.argv[2:]),
        }, allow_nan=True)
        print(f"wrote {self.out}")

"""``megohand stats``: per-dataset statistics and the pooled normalisation metadata of a store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class Stats:
    """Compute per-dataset state/action statistics and write the pooled normaliser JSON into the store."""

    root: Path
    """Store folder."""
    datasets: list[str] | None = None
    """Datasets to include and pool (default: all in the store)."""
    side: str = "right"
    """Hand side."""
    horizon: int = 16
    """Action chunk length L."""
    split: str = "train"
    """Stored split the statistics are taken over."""
    normalizer: Literal["min_max", "q99", "min_max_per_step", "q99_per_step"] = "min_max"
    """Normaliser written with the pooled statistics (the same option as ``megohand train --normalizer``)."""
    window_scope: Literal["segment", "episode"] = "segment"
    """Windows of training: "segment" (futures inside the segment) or "episode" (across segments); see
    megohand.data.windows."""
    force: bool = False
    """Recompute datasets whose statistics file is already up to date."""

    def run(self) -> None:
        import numpy as np

        from megohand.data.stats import compute_store_statistics, normalizer_path, stats_path
        from megohand.errors import check_input, check_min

        check_input(self.root, "--root", what="store")
        check_min(1, horizon=self.horizon)

        out = compute_store_statistics(self.root, self.datasets, self.side, self.horizon, self.split,
                                       force=self.force, mode=self.normalizer, window_scope=self.window_scope)
        print(f"{'dataset':<16}{'states':>10}{'actions':>12}  transl min..max [m]")
        for ds in out["datasets"]:
            import json

            s = json.loads(stats_path(self.root, ds, self.side, self.horizon, self.window_scope).read_text())
            lo, hi = np.array(s["state"]["min"][106:109]), np.array(s["state"]["max"][106:109])
            print(f"{ds:<16}{s['state']['count']:>10}{s['action']['count']:>12}  "
                  f"{np.round(lo, 3).tolist()} .. {np.round(hi, 3).tolist()}")
        p = out["pooled"]
        print(f"{'pooled':<16}{p['state']['count']:>10}{p['action']['count']:>12}")
        print(f"wrote {normalizer_path(self.root, self.side, self.horizon, self.window_scope)}")

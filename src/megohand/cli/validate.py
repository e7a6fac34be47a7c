"""``megohand validate PATH``: check a store and list every problem."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tyro.conf import Positional


@dataclass
class Validate:
    """Check a megohand store and list every problem (dataset, episode, field); exit status 1 if any."""

    path: Positional[Path]
    """Store folder (the one holding store.json)."""
    datasets: list[str] | None = None
    """Only these datasets (default: all)."""
    deep: bool = False
    """Decode every RGB and depth frame (default: check every frame's header, decode first/middle/last)."""
    progress: bool = True
    """Show a progress bar per dataset."""

    def run(self) -> None:
        from megohand.data.validate import validate_store
        from megohand.errors import check_input

        check_input(self.path, "PATH", what="store")
        problems = validate_store(self.path, self.datasets, deep=self.deep, progress=self.progress)
        for p in problems:
            print(p)
        if problems:
            print(f"{len(problems)} problem(s) in {self.path}")
            raise SystemExit(1)
        print(f"{self.path}: OK")

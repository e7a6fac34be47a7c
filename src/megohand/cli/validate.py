"""``megohand validate PATH``: check a store and list every problem."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tyro.conf import Positional


@dataclass
class Validate:
    """Check a megohand store and list every problem (dataset, episode, field); exit status 1 if any.

    Approximate hands (a hand model that could not represent a dataset's poses faithfully, recorded by
    ``convert`` as ``extra.hand_fidelity``) are listed as ``WARNING`` lines and do not fail the check
    unless ``--strict``: the store is sound and says what it holds."""

    path: Positional[Path]
    """Store folder (the one holding store.json)."""
    datasets: list[str] | None = None
    """Only these datasets (default: all)."""
    deep: bool = False
    """Decode every RGB and depth frame (default: check every frame's header, decode first/middle/last)."""
    progress: bool = True
    """Show a progress bar per dataset."""
    strict: bool = False
    """Exit status 1 on warnings too (approximate hands), not only on errors."""

    def run(self) -> None:
        from megohand.data.validate import validate_store
        from megohand.errors import UserError, check_input

        check_input(self.path, "PATH", what="store")
        problems = validate_store(self.path, self.datasets, deep=self.deep, progress=self.progress)
        for p in problems:
            print(p)
        errors = [p for p in problems if not p.warning]
        warnings = len(problems) - len(errors)
        if errors:
            raise UserError(f"{len(errors)} problem(s){f' and {warnings} warning(s)' if warnings else ''}, listed "
                            f"above; the first: {errors[0]}", path=self.path)
        if warnings and self.strict:
            raise UserError(f"{warnings} warning(s), listed above (--strict); the first: {problems[0]}", path=self.path)
        print(f"{self.path}: OK" + (f" ({warnings} warning(s), listed above: approximate hands)" if warnings else ""))

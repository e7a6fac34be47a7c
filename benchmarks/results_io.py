"""What every benchmark script shares: writing its result JSON atomically (``megohand.io``), so that an
interrupted run never leaves half a file in ``benchmarks/results/``, and reading NAME=PATH arguments."""

from __future__ import annotations

import os
from pathlib import Path

from megohand import io


def write_json(result, path: str | os.PathLike, indent: int = 2) -> Path:
    """Write ``result`` as JSON to ``path`` (parents created) atomically; returns the path."""
    return io.write_json(path, result, indent=indent, allow_nan=True)


def named_path(item: str, what: str) -> tuple[str, Path]:
    """A ``NAME=PATH`` argument whose path exists -> (name, path); SystemExit naming ``what`` the path should be."""
    name, sep, path = item.partition("=")
    if not sep or not name or not Path(path).exists():
        raise SystemExit(f"{item!r}: expected NAME=PATH of {what}")
    return name, Path(path)

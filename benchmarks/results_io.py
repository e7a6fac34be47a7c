"""What every benchmark script shares: writing its result JSON atomically (``megohand.io``), so that an
interrupted run never leaves half a file in ``benchmarks/results/``."""

from __future__ import annotations

import os
from pathlib import Path

from megohand import io


def write_json(result, path: str | os.PathLike, indent: int = 2) -> Path:
    """Write ``result`` as JSON to ``path`` (parents created) atomically; returns the path."""
    return io.write_json(path, result, indent=indent, allow_nan=True)

"""What every benchmark script shares: writing its result JSON atomically (temporary name, then rename),
so that an interrupted run never leaves half a file in ``benchmarks/results/``."""

from __future__ import annotations

import json
import os
from pathlib import Path


def write_json(result, path: str | os.PathLike, indent: int = 2) -> Path:
    """Write ``result`` as JSON to ``path`` (parents created) via ``<path>.tmp`` + rename; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=indent) + "\n")
    os.replace(tmp, path)
    return path

"""Dataset converters: one module per source dataset, each reading the released native layout.

``get_source(name)(root)`` -> a :class:`~megohand.data.sources.common.Source` with ``tasks()`` and
``load(task) -> NativeEpisode``; :func:`megohand.data.sources.pipeline.convert_episode` brings an
episode into the canonical form and writes it to the store. ``layout(name)`` is the expected source
layout (shown by ``megohand convert --help``).
"""

from __future__ import annotations

import importlib

# name -> "module:Class" (modules import only numpy at top level, so listing layouts is cheap)
SOURCES: dict[str, str] = {
    "arctic": "megohand.data.sources.arctic:ArcticSource",
    "fpha": "megohand.data.sources.fpha:FPHASource",
    "h2o": "megohand.data.sources.h2o:H2OSource",
    "hoi4d": "megohand.data.sources.hoi4d:HOI4DSource",
    "holoassist": "megohand.data.sources.holoassist:HoloAssistSource",
    "hot3d": "megohand.data.sources.hot3d:Hot3DSource",
    "oakink2": "megohand.data.sources.oakink2:OakInk2Source",
    "taco": "megohand.data.sources.taco:TACOSource",
}


def available() -> list[str]:
    """Names of the sources whose module is present."""
    out = []
    for name, spec in SOURCES.items():
        try:
            importlib.import_module(spec.split(":")[0])
        except ModuleNotFoundError:
            continue
        out.append(name)
    return out


def get_source(name: str):
    """Source class of a dataset name (case-insensitive)."""
    key = name.lower()
    if key not in SOURCES:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(sorted(SOURCES))}")
    module, cls = SOURCES[key].split(":")
    return getattr(importlib.import_module(module), cls)


def layout(name: str) -> str:
    return get_source(name).layout

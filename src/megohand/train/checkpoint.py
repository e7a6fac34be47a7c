"""Training checkpoints without pickles: everything a bit-exact resume needs, as safetensors + JSON.

A checkpoint folder ``out/checkpoints/step-0000100/`` is a loadable policy (``MEgoHandPolicy.from_pretrained``:
model.safetensors, config.json, normalizer.json, aux/) plus

- ``optimizer.safetensors`` (per-parameter state tensors) with ``optimizer.json`` (param groups),
- ``scheduler.json``, ``trainer_state.json`` (step, epoch, batch position, run shape),
- ``rng-rank{r}.safetensors`` per process (torch CPU/CUDA generator states; Python and NumPy states as JSON
  metadata).

Folders are written under a temporary name, fsynced and renamed when complete (``megohand.io``); the newest ``keep_last`` are kept.
"""

from __future__ import annotations

import json
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from megohand import io

STEP_DIR = re.compile(r"^step-(\d+)$")


def step_dir(root: Path, step: int) -> Path:
    return Path(root) / f"step-{step:07d}"


def list_checkpoints(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under root, oldest first (temporary folders are ignored)."""
    root = Path(root)
    if not root.is_dir():
        return []
    out = []
    for p in root.iterdir():
        m = STEP_DIR.match(p.name)
        if m and (p / "trainer_state.json").is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def latest_checkpoint(root: Path) -> Path | None:
    ckpts = list_checkpoints(root)
    return ckpts[-1][1] if ckpts else None


def prune(root: Path, keep_last: int) -> None:
    """Delete all but the newest keep_last complete checkpoints, and stale temporary folders."""
    ckpts = list_checkpoints(root)
    for _, p in ckpts[: max(0, len(ckpts) - keep_last)]:
        shutil.rmtree(p, ignore_errors=True)
    for p in Path(root).glob(".step-*.tmp"):
        if not any(p.name == f".{q.name}.tmp" for _, q in ckpts[-1:]):
            shutil.rmtree(p, ignore_errors=True)


# ------------------------------------------------------------------ optimizer
def optimizer_to_flat(state: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """torch optimizer state_dict -> (tensors, JSON-able rest). Keys: ``state::<param key>::<name>``."""
    tensors, scalars = {}, {}
    for pk, st in state["state"].items():
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"state::{pk}::{name}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{pk}::{name}"] = v
    keys_are_int = all(isinstance(k, int) for k in state["state"])
    meta = {"param_groups": state["param_groups"], "scalars": scalars, "int_keys": keys_are_int}
    return tensors, json.loads(json.dumps(meta))


def optimizer_from_flat(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of optimizer_to_flat."""
    conv = int if meta["int_keys"] else str
    state: dict = {}
    for key, v in tensors.items():
        _, pk, name = key.split("::", 2)
        state.setdefault(conv(pk), {})[name] = v
    for key, v in meta["scalars"].items():
        pk, name = key.split("::", 1)
        state.setdefault(conv(pk), {})[name] = v
    groups = []
    for g in meta["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


# ------------------------------------------------------------------ RNG
def rng_state() -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) capturing Python, NumPy, torch CPU and CUDA generators of this process."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    npst = np.random.get_state()
    meta = {
        "python": json.dumps([py[0], list(py[1]), py[2]]),
        "numpy": json.dumps([npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])]),
    }
    return tensors, meta


def set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = sorted((int(k.rsplit("_", 1)[1]), v) for k, v in tensors.items() if k.startswith("torch_cuda_"))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([v for _, v in cuda][: torch.cuda.device_count()])
    v, st, g = json.loads(meta["python"])
    random.setstate((v, tuple(st), g))
    name, keys, pos, has_gauss, cached = json.loads(meta["numpy"])
    np.random.set_state((name, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def save_rng(path: Path) -> None:
    tensors, meta = rng_state()
    io.save_safetensors(tensors, path, metadata=meta)


def load_rng(path: Path) -> None:
    set_rng_state(*io.load_safetensors(path, with_metadata=True))

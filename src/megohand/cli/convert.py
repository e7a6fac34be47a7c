"""``megohand convert``: a dataset in its native layout -> the unified store (resumable, shardable)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from megohand.data.sources import SOURCES
from megohand.errors import UserError, check


def _layouts() -> str:
    import importlib

    parts = []
    for name, spec in sorted(SOURCES.items()):
        try:
            mod = importlib.import_module(spec.split(":")[0])
            parts.append(getattr(mod, "LAYOUT", "").strip() or f"{name}: (no layout text)")
        except ModuleNotFoundError:
            parts.append(f"{name}: not available in this version")
    return "\n\n".join(parts)


@dataclass
class Convert:
    """Convert one dataset from its released layout into the store (episodes keep native task ids).

    Resumable (episodes already in the store are skipped), with a progress bar; --shard i/n converts
    every n-th task starting at i (for cluster array jobs). Depth: ARCTIC, HOT3D, OakInk2 and HoloAssist
    have no depth at the RGB camera and get rendered virtual depth (hand meshes + object meshes at the RGB
    camera, 2 m background, [0, 2] m, as in the paper); the others keep their sensor depth (FPHA's is
    registered from its depth camera to the RGB camera). FPHA and HoloAssist release hand joints only:
    they go through the retargeting network (--retarget-model, default: the one shipped for the open hand;
    with MANO train one with `megohand retarget train --mano-dir ...`). Expected source layouts:

    LAYOUTS
    """

    dataset: Literal["arctic", "fpha", "h2o", "hoi4d", "holoassist", "hot3d", "oakink2", "taco"]
    """Dataset name."""
    src: Path
    """Folder with the dataset in its native layout (see above)."""
    out: Path
    """Store folder (created)."""
    tasks: list[str] = field(default_factory=list)
    """Native task ids to convert (default: all found under --src)."""
    workers: int = 1
    """Parallel worker processes."""
    shard: str = "0/1"
    """i/n: convert tasks i, i+n, i+2n, ... of the sorted list."""
    depth: Literal["auto", "sensor", "render", "none"] = "auto"
    """auto: sensor depth where the dataset has it, else rendered virtual depth (ARCTIC, HOT3D, OakInk2,
    HoloAssist); render: rendered depth for any dataset; sensor: sensor depth only; none: no depth."""
    mano_dir: Path | None = None
    """MANO folder (default $MANO_MODEL_DIR, else the bundled open hand; the store records which)."""
    retarget_model: Path | None = None
    """Inverse-MANO retargeting checkpoint folder (FPHA, HoloAssist; `megohand retarget train`); default: the
    network shipped for the bundled open hand (refused with MANO, which needs its own)."""
    refine_steps: int = 100
    """Per-sequence refinement steps after the retargeting network (0: network only)."""
    max_short_side: int | None = None
    """Downscale stored frames whose short side is larger (K scaled to match); at least 16."""
    overwrite: bool = False
    """Rewrite episodes already in the store (and write into a non-empty --out that is not a store)."""
    skip_unit_checks: bool = False
    """Store hands farther than 5 m from the camera and sensor depth beyond 20 m (refused by default: such values
    mean millimetres or centimetres were read as metres)."""
    keep_going: bool = False
    """Report failing episodes and continue (exit status 1 at the end) instead of stopping."""

    def run(self) -> None:
        import sys

        from megohand import io
        from megohand.data.sources import get_source
        from megohand.data.store import has_episodes
        from megohand.errors import check, check_input, check_min

        check_min(1, workers=self.workers)
        check_min(0, refine_steps=self.refine_steps)
        check_min(16, max_short_side=self.max_short_side)
        check_input(self.src, "--src", what=f"{self.dataset} source")
        for option, path in (("--mano-dir", self.mano_dir), ("--retarget-model", self.retarget_model)):
            if path is not None:
                check(path.exists(), option, str(path), "an existing path")
        io.check_output_dir(self.out, self.overwrite, accept=lambda p: (p / "store.json").is_file())
        i, n = parse_shard(self.shard)
        src = get_source(self.dataset)(self.src)
        if getattr(src, "joints_only", False) and self.retarget_model is None:
            from megohand.hand.retarget import Retargeter

            try:  # the network shipped for the bundled open hand; with MANO the user trains one
                Retargeter.from_pretrained(None, mano_dir=self.mano_dir)
            except ValueError as e:
                raise UserError(f"{self.dataset} releases hand joints only: {e}") from None
        all_tasks = src.tasks()
        if self.tasks:
            known = set(all_tasks)
            unknown = [t for t in self.tasks if t not in known]
            if unknown:
                raise UserError(f"unknown {self.dataset} task ids {unknown[:5]}", path=self.src, field="--tasks",
                                hint=f"{len(all_tasks)} tasks found there, e.g. {all_tasks[:3]}")
            tasks = list(self.tasks)
        else:
            tasks = all_tasks
        tasks = tasks[i::n]
        with io.cleanup_on_error(self.out, keep=has_episodes):  # no empty store left behind
            failures = run_tasks(self, tasks)
        for task, msg in failures:
            print(f"FAILED {self.dataset}/{task}: {msg}", file=sys.stderr)
        if failures:
            raise SystemExit(1)


if Convert.__doc__:
    Convert.__doc__ = Convert.__doc__.replace("LAYOUTS", _layouts().replace("\n", "\n    "))


def parse_shard(shard: str) -> tuple[int, int]:
    try:
        i, n = (int(x) for x in shard.split("/"))
    except ValueError:
        i, n = -1, 0
    check(n >= 1 and 0 <= i < n, "--shard", shard, "i/n with 0 <= i < n, e.g. 0/4")
    return i, n


_STATE = {}


def _init_worker(cfg: Convert) -> None:
    import torch

    from megohand.data.sources import get_source
    from megohand.data.sources.pipeline import HandModels
    from megohand.data.store import StoreWriter

    torch.set_num_threads(1)
    _STATE["cfg"] = cfg
    _STATE["src"] = get_source(cfg.dataset)(cfg.src)
    _STATE["writer"] = StoreWriter(cfg.out, max_short_side=cfg.max_short_side)
    _STATE["hands"] = HandModels(cfg.mano_dir)
    _STATE["retargeter"] = None
    if cfg.retarget_model is not None or getattr(_STATE["src"], "joints_only", False):
        from megohand.hand.retarget import Retargeter

        _STATE["retargeter"] = Retargeter.from_pretrained(cfg.retarget_model, mano_dir=cfg.mano_dir,
                                                           refine_steps=cfg.refine_steps)


def _convert_one(task: str) -> tuple[str, str | None]:
    from megohand.data.sources.pipeline import convert_episode

    cfg, src, writer = _STATE["cfg"], _STATE["src"], _STATE["writer"]
    if not cfg.overwrite and writer.has_episode(src.name, task):
        return task, None
    try:
        ep = src.load(task)
        convert_episode(ep, writer, _STATE["hands"], depth=cfg.depth, retargeter=_STATE["retargeter"], overwrite=cfg.overwrite,
                        unit_checks=not cfg.skip_unit_checks)
    except (ValueError, OSError) as e:  # SourceError, StoreError: bad input, named in the message
        if not cfg.keep_going:
            raise
        return task, f"{type(e).__name__}: {e}"
    return task, None


def run_tasks(cfg: Convert, tasks: list[str]) -> list[tuple[str, str]]:
    """Convert tasks (skipping those already stored); returns [(task, error)] of failures."""
    from tqdm import tqdm

    failures = []
    if cfg.workers <= 1:
        _init_worker(cfg)
        for task in tqdm(tasks, desc=f"convert {cfg.dataset}", unit="ep"):
            _, err = _convert_one(task)
            if err:
                failures.append((task, err))
        return failures
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing as mp

    with ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=(cfg,)) as ex:
        futs = [ex.submit(_convert_one, t) for t in tasks]
        for fut in tqdm(as_completed(futs), total=len(futs), desc=f"convert {cfg.dataset}", unit="ep"):
            task, err = fut.result()
            if err:
                failures.append((task, err))
    return failures

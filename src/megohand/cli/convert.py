"""``megohand convert``: a dataset in its native layout -> the unified store (resumable, shardable)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from megohand.data import DEFAULT_COPY_SIZES
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
    with MANO train one with `megohand retarget train --mano-dir ...`). HOT3D without MANO goes the same way from its
    UmeTrack annotation (MANO's PCA coefficients need MANO); where a hand model cannot represent a dataset's poses
    faithfully, a WARNING line says so and `megohand validate` lists it. Expected source layouts:

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
    depth: Literal["auto", "sensor", "rendered", "none"] = "auto"
    """Stored depth origin (docs/data_format.md, "Depth: one vocabulary"): auto = sensor depth where the dataset
    has it, else rendered virtual depth (ARCTIC, HOT3D, OakInk2, HoloAssist); rendered = rendered depth for any
    dataset; sensor = sensor depth only; none = no depth."""
    mano_dir: Path | None = None
    """MANO folder (default $MANO_MODEL_DIR, else the bundled open hand; the store records which)."""
    retarget_model: Path | None = None
    """Inverse-MANO retargeting checkpoint folder (FPHA, HoloAssist; `megohand retarget train`); default: the
    network shipped for the bundled open hand (refused with MANO, which needs its own)."""
    refine_steps: int | None = None
    """Per-sequence refinement steps after the retargeting network (0: network only; None: the dataset's default,
    300 for HOT3D without MANO, where it reaches its box-IoU goal (docs/datasets.md, HOT3D), else 100). More
    converge further at proportional cost."""
    max_short_side: int | None = None
    """Downscale stored frames whose short side is larger (K scaled to match); at least 16."""
    copy_sizes: tuple[int, ...] = DEFAULT_COPY_SIZES
    """Short sides [px] of training-size copies written beside the stored frames (RGB, depth, K scaled;
    docs/data_format.md "Training-size copies"): a model of input size S reads the smallest copy >= S, about 3x
    (640x480) to 6x (1080p) faster than the full frames. The default holds one per preset (paper 224, compact
    128). Only where the frames are larger; none: `--copy-sizes` with no value."""
    overwrite: bool = False
    """Rewrite episodes already in the store (and write into a non-empty --out that is not a store)."""
    skip_unit_checks: bool = False
    """Store hands farther than 5 m from the camera and sensor depth beyond 20 m (refused by default: such values
    mean millimetres or centimetres were read as metres)."""
    keep_going: bool = False
    """Report failing episodes and continue (exit status 1 at the end) instead of stopping."""
    units: Literal["auto", "m", "mm"] = "auto"
    """Unit of the source's translations (HOT3D): auto checks that they are metres and stops otherwise (m: as
    they are, like --skip-unit-checks; mm: converted)."""

    def run(self) -> None:
        import sys

        from megohand import io
        from megohand.data.store import has_episodes
        from megohand.data.store import check_copy_sizes_option
        from megohand.errors import check, check_input, check_min

        check_min(1, workers=self.workers)
        check_min(0, refine_steps=self.refine_steps)
        check_min(16, max_short_side=self.max_short_side)
        check_copy_sizes_option(self.copy_sizes)
        check_input(self.src, "--src", what=f"{self.dataset} source")
        for option, path in (("--mano-dir", self.mano_dir), ("--retarget-model", self.retarget_model)):
            if path is not None:
                check(path.exists(), option, str(path), "an existing path")
        io.check_output_dir(self.out, self.overwrite, accept=lambda p: (p / "store.json").is_file())
        i, n = parse_shard(self.shard)
        src = open_source(self)
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


def open_source(cfg: "Convert"):
    """The dataset's source, with ``units`` where the source takes it."""
    import inspect

    from megohand.data.sources import get_source

    cls = get_source(cfg.dataset)
    if "units" in inspect.signature(cls.__init__).parameters:
        return cls(cfg.src, units="m" if cfg.skip_unit_checks and cfg.units == "auto" else cfg.units)
    from megohand.errors import check

    check(cfg.units == "auto", "--units", cfg.units, f"auto ({cfg.dataset} has no units option; see --skip-unit-checks)")
    return cls(cfg.src)


_STATE = {}


def _init_worker(cfg: Convert) -> None:
    import torch

    from megohand.data.sources.pipeline import HandModels
    from megohand.data.store import StoreWriter

    torch.set_num_threads(1)
    _STATE["cfg"] = cfg
    _STATE["src"] = open_source(cfg)
    _STATE["writer"] = StoreWriter(cfg.out, max_short_side=cfg.max_short_side, copy_sizes=cfg.copy_sizes)
    _STATE["hands"] = HandModels(cfg.mano_dir)
    _STATE["retargeter"] = None
    joints_only = getattr(_STATE["src"], "joints_only", False)
    if cfg.retarget_model is not None or joints_only or not _STATE["hands"]["right"].is_mano:
        from megohand.hand.retarget import Retargeter

        steps = _STATE["src"].refine_steps if cfg.refine_steps is None else cfg.refine_steps
        try:  # not joints-only: only needed where a source offers joints for what the hand model cannot decode
            _STATE["retargeter"] = Retargeter.from_pretrained(cfg.retarget_model, mano_dir=cfg.mano_dir,
                                                               refine_steps=steps)
        except ValueError:
            if joints_only or cfg.retarget_model is not None:
                raise


def _convert_one(task: str) -> tuple[str, str | None, str]:
    """(task, error or None, fidelity note or "": what the hand model cannot represent faithfully)."""
    from megohand.data.sources.pipeline import convert_episode, hand_path

    cfg, src, writer = _STATE["cfg"], _STATE["src"], _STATE["writer"]
    if not cfg.overwrite and writer.has_episode(src.name, task):
        return task, None, ""
    note = ""
    try:
        ep = src.load(task)
        note = hand_path(ep, _STATE["hands"])[1]
        convert_episode(ep, writer, _STATE["hands"], depth=cfg.depth, retargeter=_STATE["retargeter"], overwrite=cfg.overwrite,
                        unit_checks=not cfg.skip_unit_checks)
    except (ValueError, OSError) as e:  # SourceError, StoreError: bad input, named in the message
        if not cfg.keep_going:
            raise
        return task, f"{type(e).__name__}: {e}", note
    return task, None, note


def _say_fidelity(cfg: Convert, task: str, note: str, said: set) -> None:
    """One visible line per distinct fidelity note (the store records it per episode; validate lists it)."""
    if note and note not in said:
        import sys

        from tqdm import tqdm

        said.add(note)
        tqdm.write(f"WARNING {cfg.dataset}: {note} (first: {task}; recorded in each such episode, listed by "
                   "megohand validate)", file=sys.stderr)


def run_tasks(cfg: Convert, tasks: list[str]) -> list[tuple[str, str]]:
    """Convert tasks (skipping those already stored); returns [(task, error)] of failures."""
    from tqdm import tqdm

    failures, said = [], set()
    if cfg.workers <= 1:
        _init_worker(cfg)
        for task in tqdm(tasks, desc=f"convert {cfg.dataset}", unit="ep"):
            _, err, note = _convert_one(task)
            _say_fidelity(cfg, task, note, said)
            if err:
                failures.append((task, err))
        return failures
    from concurrent.futures import ProcessPoolExecutor, as_completed
    import multiprocessing as mp

    with ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn"), initializer=_init_worker, initargs=(cfg,)) as ex:
        futs = [ex.submit(_convert_one, t) for t in tasks]
        for fut in tqdm(as_completed(futs), total=len(futs), desc=f"convert {cfg.dataset}", unit="ep"):
            task, err, note = fut.result()
            _say_fidelity(cfg, task, note, said)
            if err:
                failures.append((task, err))
    return failures

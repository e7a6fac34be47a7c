"""Write the synthetic world into the unified store (dataset "synthetic"): resumable, parallel."""

from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
from pathlib import Path

from megohand.data.synthetic.world import (
    DATASET,
    SynthConfig,
    SyntheticEpisode,
    generate_episode,
    make_renderer,
    render_episode,
)

_WORKER: dict = {}


def episode_meta(ep: SyntheticEpisode, cfg: SynthConfig, hand):
    """``EpisodeMeta`` of a generated episode (the world description goes to ``extra``)."""
    from megohand.data.store import EpisodeMeta

    extra = ep.meta_extra()
    extra["synth_config"] = dataclasses.asdict(cfg)
    return EpisodeMeta(
        dataset=DATASET, episode=ep.episode, instruction=ep.instruction, segments=ep.segments, fps=ep.fps,
        width=ep.width, height=ep.height, K=ep.K.tolist(), split=ep.split, hand_source="synthetic",
        depth_source="rendered", hand_model="mano" if hand.is_mano else hand.name, extra=extra,
    )


def _init(root: str, cfg: SynthConfig, mano_dir: str | None, copy_sizes: tuple[int, ...] = ()) -> None:
    import torch

    from megohand.data.store import StoreWriter
    from megohand.hand import load_hand_model

    torch.set_num_threads(1)
    _WORKER.update(cfg=cfg, hand=load_hand_model(mano_dir, side="right"), writer=StoreWriter(root, copy_sizes=copy_sizes),
                   renderer=make_renderer(cfg.width, cfg.height))


def _make(index: int) -> tuple[int, int]:
    """Generate, render and write episode ``index`` (in a worker); returns (index, num_frames)."""
    cfg, hand, writer = _WORKER["cfg"], _WORKER["hand"], _WORKER["writer"]
    ep = generate_episode(cfg, index, hand)
    frames = render_episode(ep, hand, _WORKER["renderer"])
    writer.write_episode(episode_meta(ep, cfg, hand), hands={"right": ep.hands}, rgb=frames["rgb"],
                         depth=frames["depth"], T_cam_from_world=ep.T_cam_from_world, overwrite=True)
    return index, ep.num_frames


def check_config(root: Path, cfg: SynthConfig) -> None:
    """Refuse to resume into a store whose synthetic episodes were drawn with another config."""
    from megohand.data.store import Store

    if not (root / DATASET).is_dir():
        return
    store = Store(root)
    refs = store.episodes(DATASET)
    if not refs:
        return
    old = store.open(refs[0]).meta.extra.get("synth_config")
    if old is not None:
        old = {"world": "classic", **old}  # stores written before there were two worlds hold the classic one
    new = json.loads(json.dumps(dataclasses.asdict(cfg)))
    if old is not None and old != new:
        diff = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
        raise ValueError(f"{root / DATASET}: episodes there were generated with another config "
                         f"(field: (stored, requested)) {diff}; use the same options or another --out")


def synthesize(root: str | Path, episodes: int, cfg: SynthConfig, workers: int = 1, mano_dir: str | None = None,
               progress: bool = True, copy_sizes: tuple[int, ...] = ()) -> list[int]:
    """Write episodes ``0..episodes-1`` of ``cfg`` into the store at ``root``, skipping those already
    written (resume). ``workers`` > 1 uses that many processes (episodes are independent and
    deterministic per index); ``copy_sizes``: training-size copies (``StoreWriter``). Returns the indices written
    now."""
    from tqdm import tqdm

    from megohand.data.store import StoreWriter

    root = Path(root)
    writer = StoreWriter(root)
    check_config(root, cfg)
    todo = [i for i in range(episodes) if not writer.has_episode(DATASET, f"{i:06d}")]
    bar = tqdm(total=episodes, initial=episodes - len(todo), desc="synth", unit="ep", disable=not progress)
    done = []
    if workers <= 1 or len(todo) <= 1:
        _init(str(root), cfg, mano_dir, copy_sizes)
        for i in todo:
            done.append(_make(i)[0])
            bar.update(1)
    else:
        # forkserver: the imports happen once in a clean server process, workers fork from it quickly
        # (plain fork is unsafe once the parent has used torch's OpenMP threads).
        ctx = mp.get_context("forkserver")
        ctx.set_forkserver_preload(["megohand.data.synthetic.build", "megohand.render", "megohand.hand"])
        with ctx.Pool(workers, initializer=_init, initargs=(str(root), cfg, mano_dir, copy_sizes)) as pool:
            for i, _ in pool.imap_unordered(_make, todo):
                done.append(i)
                bar.update(1)
    bar.close()
    return sorted(done)

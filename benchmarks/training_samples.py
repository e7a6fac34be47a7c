"""Training samples per CPU-second of a named experiment's dataset: what one DataLoader worker does per sample
(read the frame and depth from the training-size copy, crop and colour jitter, the action chunk, the grounding and
parsing targets of a synthetic episode).

In one process with one torch thread: a warm-up pass reads one window of every episode (a long-running worker
has the per-episode state and scene-fact caches filled; the store keeps 64 episodes open, so most samples still
reopen theirs, as in training), then ``--samples`` random windows are timed (wall and process CPU time, so other
jobs on the machine do not count), then a profiled pass lists the functions that take the time.

    python benchmarks/training_samples.py --store runs/benchmark/store        # a store of the experiment's world
    python benchmarks/training_samples.py --episodes 300                      # draws one into a temporary folder
    python benchmarks/training_samples.py --store S --modalities T --out results/training_samples_cpu_T.json

Writes benchmarks/results/training_samples_cpu.json.
"""

from __future__ import annotations

import argparse
import cProfile
import dataclasses
import io
import os
import platform
import pstats
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from results_io import write_json  # benchmarks/results_io.py


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default="synthetic", help="named experiment (megohand.train.experiments)")
    ap.add_argument("--store", type=Path, default=None, help="store of the experiment's world (default: draw one)")
    ap.add_argument("--episodes", type=int, default=300, help="episodes to draw without --store")
    ap.add_argument("--samples", type=int, default=3000, help="timed random windows")
    ap.add_argument("--rounds", type=int, default=3, help="timed rounds (the best counts)")
    ap.add_argument("--modalities", default=None, help="the model's inputs (T, V, TI, TID; default: the experiment's):"
                    " what the model does not use is not read")
    ap.add_argument("--note", default="", help="free text stored in the JSON")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "training_samples_cpu.json")
    args = ap.parse_args(argv)

    from megohand.train.experiments import get_experiment
    from megohand.train.trainer import build_datasets

    torch.set_num_threads(1)
    exp = get_experiment(args.config)
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store
        if store is None:
            from megohand.data.synthetic import SynthConfig, synthesize

            store = Path(tmp) / "store"
            synthesize(store, args.episodes, SynthConfig(**exp.world), workers=os.cpu_count() or 1)
        cfg = dataclasses.replace(exp.train, store=str(store))
        if args.modalities:
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, modalities=args.modalities))
        train, _ = build_datasets(cfg, cfg.model.backbone.image_size)
        rng = np.random.default_rng(0)
        first = {int(e): i for i, e in reversed(list(enumerate(train._ep)))}  # one window of every episode
        for i in first.values():
            train[i]
        rounds = []
        for r in range(args.rounds):
            order = rng.integers(0, len(train), args.samples)
            w0, c0 = time.perf_counter(), time.process_time()
            for i in order:
                train[int(i)]
            rounds.append((time.perf_counter() - w0, time.process_time() - c0))
        wall, cpu = min(rounds, key=lambda x: x[1])
        prof = cProfile.Profile()
        prof.enable()
        for i in rng.integers(0, len(train), min(args.samples, 1000)):
            train[int(i)]
        prof.disable()
        text = io.StringIO()
        pstats.Stats(prof, stream=text).sort_stats("tottime").print_stats(15)
    result = dict(
        benchmark="training_samples",
        config=args.config,
        modalities=cfg.model.modalities,
        image_size=cfg.model.backbone.image_size,
        augment=cfg.augment,
        episodes=len(first),
        windows=len(train),
        samples=args.samples,
        samples_per_cpu_s=args.samples / cpu,
        samples_per_wall_s=args.samples / wall,
        ms_per_sample_cpu=1000 * cpu / args.samples,
        rounds_cpu_s=[c for _, c in rounds],
        profile_top=text.getvalue().splitlines()[-22:],
        cpu=platform.processor() or platform.machine(),
        cpu_count=os.cpu_count(),
        load_avg=os.getloadavg(),
        torch=torch.__version__,
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        note=args.note,
    )
    print(f"{args.config}: {len(first)} episodes, {len(train)} windows, image {result['image_size']}, "
          f"augment {cfg.augment}: {result['samples_per_cpu_s']:.0f} samples per CPU-second "
          f"({result['ms_per_sample_cpu']:.2f} ms), {result['samples_per_wall_s']:.0f} per wall second")
    write_json(result, args.out)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

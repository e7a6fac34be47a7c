"""The held-out curve of a training run: every saved checkpoint vs the static pose, on a store's test split.

    python scripts/checkpoint_curve.py --run runs/synthetic_benchmark/train_TID --store runs/demo/store          # so far
    python scripts/checkpoint_curve.py --run runs/synthetic_benchmark/train_TID --store runs/demo/store --watch  # alongside

For each checkpoint ``run/checkpoints/step-N`` (and the final ``run/model``): the window protocol of ``megohand
eval`` (GT state h_k, raw chunk, frames k+1..k+L; no rollouts) for the model and, once, the static and
constant-velocity baselines; plus the run's validation flow-matching loss at that step and its whole validation
curve (``metrics.jsonl``).
Checkpoints already in the output are skipped, so ``--watch`` can follow a run whose trainer deletes old ones
(``--keep-last``); it stops when ``run/model`` has been evaluated. Writes --out (JSON, rewritten atomically).
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from megohand.data.store import Store
from megohand.evaluate.evaluator import EvalConfig, baseline_factories, evaluate_store
from megohand.hand import load_hand_model
from megohand.inference.policy import load_policy
from megohand.io import write_json
from megohand.train.checkpoint import list_checkpoints

REPO = Path(__file__).resolve().parents[1]

KEYS = ("mpjpe_cm", "mpjpe_pa_cm", "mwte_cm", "mre_rad", "jitter_m_s3")
GROUP = "[synthetic]"


def window_metrics(store: Store, methods: dict, hand, cfg: EvalConfig) -> dict[str, dict[str, float]]:
    """methods (name -> factory) -> {name: {metric: value}} on the synthetic group's test windows."""
    res = evaluate_store(store, methods, hand, cfg, log=lambda *a: None)["results"]["window"]
    return {name: {k: r[GROUP][k] for k in KEYS} for name, r in res.items()}


def val_losses(run: Path) -> dict[int, float]:
    """step -> validation flow-matching loss, from the run's metrics.jsonl."""
    path, out = run / "metrics.jsonl", {}
    if path.is_file():
        for line in path.read_text().splitlines():
            rec = json.loads(line)
            if "eval/loss_fm" in rec:
                out[int(rec["step"])] = float(rec["eval/loss_fm"])
    return out


@dataclass
class Args:
    run: Path
    """A `megohand train --out` folder."""
    store: Path
    """Store whose test split is evaluated."""
    out: Path | None = None
    """Result JSON (default: benchmarks/results/curve_<run name>.json)."""
    watch: bool = False
    """Poll for new checkpoints until run/model is evaluated."""
    poll_s: float = 30.0
    """Seconds between polls."""
    threads: int = 1
    """Torch threads (leave the rest to a training run)."""
    device: str = "cpu"
    """Where the checkpoints run (cpu, cuda)."""
    noise_scale: float | None = None
    """Initial-noise scale of the sampler (default: the checkpoint's, 1; 0 = deterministic)."""


def main(args: Args) -> None:
    torch.set_num_threads(args.threads)
    out = args.out or REPO / "benchmarks" / "results" / f"curve_{args.run.name}.json"
    report = json.loads(out.read_text()) if out.is_file() else {"benchmark": "checkpoint_curve", "points": []}
    if report.get("noise_scale", args.noise_scale) != args.noise_scale:
        raise SystemExit(f"{out} holds points at noise scale {report['noise_scale']}: pass another --out")
    report.update(run=str(args.run), store=str(args.store), protocol="window (GT h_k, raw chunk)",
                  noise_scale=args.noise_scale, command="python scripts/checkpoint_curve.py " + " ".join(sys.argv[1:]))
    train_config = args.run / "train_config.json"  # how the run was trained (megohand train writes it at the start)
    while args.watch and not train_config.is_file():  # started alongside `megohand train`: wait for it
        time.sleep(args.poll_s)
    if not train_config.is_file():
        raise SystemExit(f"{train_config} not found: --run must be a `megohand train --out` folder")
    report["train_config"] = json.loads(train_config.read_text())
    store, hand = Store(args.store), load_hand_model()
    report["hand_model"] = hand.name
    done = {p["checkpoint"] for p in report["points"]}
    while True:
        todo = [(s, p) for s, p in list_checkpoints(args.run / "checkpoints") if p.name not in done]
        final = args.run / "model"
        if (final / "config.json").is_file() and "model" not in done:
            last = report["train_config"]["steps"]
            if any(p["step"] == last for p in report["points"]) or any(s == last for s, _ in todo):
                done.add("model")  # the final checkpoint holds the same weights as run/model
            else:
                todo.append((last, final))
        for step, path in todo:
            try:
                policy = load_policy(path, args.device, noise_scale=args.noise_scale)
            except FileNotFoundError:  # pruned by the trainer meanwhile
                continue
            cfg = EvalConfig(horizon=policy.horizon, rollout_frames=0, batch_size=64, seed=0, reliance=())
            if "baselines" not in report:
                report["baselines"] = window_metrics(store, baseline_factories(policy.horizon), hand, cfg)
            t = time.time()
            metrics = window_metrics(store, {"model": lambda prev, s: policy}, hand, cfg)["model"]
            point = {"checkpoint": path.name, "step": step, "val_loss_fm": val_losses(args.run).get(step), **metrics,
                     "eval_s": round(time.time() - t, 1)}
            report["points"] = sorted([*report["points"], point], key=lambda p: (p["step"], p["checkpoint"]))
            done.add(path.name)
            write_json(out, report, allow_nan=True)
            static = report["baselines"]["static"]["mpjpe_cm"]
            print(f"step {step:6d}  window MPJPE {metrics['mpjpe_cm']:6.2f} cm (static {static:.2f})  "
                  f"MWTE {metrics['mwte_cm']:6.2f}  val loss {point['val_loss_fm']}", flush=True)
        if not args.watch or "model" in done:
            break
        time.sleep(args.poll_s)
    report["val_loss_fm_curve"] = [[step, loss] for step, loss in sorted(val_losses(args.run).items())]
    write_json(out, report, allow_nan=True)
    print(f"wrote {out}")


if __name__ == "__main__":
    main(tyro.cli(Args, description=__doc__))

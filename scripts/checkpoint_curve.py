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

import argparse
import json
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
sys.path.insert(0, str(REPO / "benchmarks"))

from megohand.data.store import Store  # noqa: E402
from megohand.evaluate.evaluator import EvalConfig, baseline_factories, evaluate_store  # noqa: E402
from megohand.hand import load_hand_model  # noqa: E402
from megohand.inference.policy import load_policy  # noqa: E402
from megohand.train.checkpoint import list_checkpoints  # noqa: E402
from results_io import write_json  # noqa: E402

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="a `megohand train --out` folder")
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/curve_<run name>.json")
    ap.add_argument("--watch", action="store_true", help="poll for new checkpoints until run/model is evaluated")
    ap.add_argument("--poll-s", type=float, default=30.0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (leave the rest to a training run)")
    ap.add_argument("--device", default="cpu", help="where the checkpoints run (cpu, cuda)")
    ap.add_argument("--noise-scale", type=float, default=None,
                    help="initial-noise scale of the sampler (default: the checkpoint's, 1; 0 = deterministic)")
    args = ap.parse_args()

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
            cfg = EvalConfig(horizon=policy.horizon, rollout_frames=0, batch_size=64, seed=0)
            if "baselines" not in report:
                report["baselines"] = window_metrics(store, baseline_factories(policy.horizon), hand, cfg)
            t = time.time()
            metrics = window_metrics(store, {"model": lambda prev, s: policy}, hand, cfg)["model"]
            point = {"checkpoint": path.name, "step": step, "val_loss_fm": val_losses(args.run).get(step), **metrics,
                     "eval_s": round(time.time() - t, 1)}
            report["points"] = sorted([*report["points"], point], key=lambda p: (p["step"], p["checkpoint"]))
            done.add(path.name)
            write_json(report, out)
            static = report["baselines"]["static"]["mpjpe_cm"]
            print(f"step {step:6d}  window MPJPE {metrics['mpjpe_cm']:6.2f} cm (static {static:.2f})  "
                  f"MWTE {metrics['mwte_cm']:6.2f}  val loss {point['val_loss_fm']}", flush=True)
        if not args.watch or "model" in done:
            break
        time.sleep(args.poll_s)
    report["val_loss_fm_curve"] = [[step, loss] for step, loss in sorted(val_losses(args.run).items())]
    write_json(report, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""The synthetic benchmark: full model vs the T, V and TI ablations vs the baselines, with and without
TOF, on the synthetic world's test split (object-action-colour combinations never seen in training).

    python scripts/synthetic_benchmark.py                          # all variants, GPU if present
    python scripts/synthetic_benchmark.py --steps 3000 --episodes 600 --variants TID TI T V
    python scripts/synthetic_benchmark.py --parallel --workers 3   # the four trainings at once on one GPU

For each variant: ``megohand train`` (compact preset, ``--model.modalities`` = the variant, same data,
steps and seed), then the eval protocols of ``megohand eval`` (per-window raw chunks from GT states;
closed-loop rollouts with TOF and with the raw latest chunk). Training resumes when re-run; a variant
whose ``model/`` exists is not retrained. Writes benchmarks/results/synthetic_benchmark.json and .md.

Expected pattern (paper): T (text only) worst, TID (full) best; TOF lowers acceleration error and jitter.
"""

from __future__ import annotations

import argparse
import math
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from megohand import io  # noqa: E402
from megohand.data.synthetic import TRAIN_OPTIONS  # noqa: E402

VARIANTS = ("TID", "TI", "V", "T")
COLS = (("mpjpe_cm", "MPJPE (cm)"), ("mpjpe_pa_cm", "MPJPE-PA (cm)"), ("mpve_cm", "MPVE (cm)"),
        ("mwte_cm", "MWTE (cm)"), ("mre_rad", "MRE (rad)"), ("accel_error_m_s2", "Accel (m/s²)"),
        ("jitter_m_s3", "Jitter (m/s³)"))
PROTOS = (("window", "window (GT h_k, raw chunk)"), ("rollout-tof", "closed loop + TOF"),
          ("rollout-raw", "closed loop, no TOF"))


def sh(cmd: list[str]) -> None:
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def fmt(v) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.3f}"


def markdown(report: dict) -> str:
    res, key = report["results"], "[synthetic]"
    lines = ["# Synthetic benchmark (held-out object-action-colour combinations)", "",
             f"{report['datasets']['synthetic']['episodes']} test episodes, {report['datasets']['synthetic']['windows']} "
             f"windows; compact preset, {report['train']['steps']} steps, batch {report['train']['batch_size']}, "
             f"seed {report['train']['seed']}; Euler steps {report['config']['steps'] or 'default'}; closed loop "
             f"{report['config']['rollout_frames']} frames at stride {report['config']['stride']}. "
             f"GT jitter: {fmt(res['window'][report['methods'][0]][key].get('jitter_gt_m_s3'))} m/s³ (windows).", ""]
    for proto, title in PROTOS:
        if not res.get(proto):  # e.g. no rollouts (--rollout-frames 0)
            continue
        lines += [f"## {title}", "", "| Method | " + " | ".join(c[1] for c in COLS) + " |",
                  "|---|" + "---|" * len(COLS)]
        for m in report["methods"]:
            r = res.get(proto, {}).get(m, {}).get(key)
            if r:
                lines.append(f"| {m} | " + " | ".join(fmt(r.get(k)) for k, _ in COLS) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("runs/synthetic_benchmark"))
    ap.add_argument("--store", type=Path, default=None, help="existing synthetic store (default: --work/store)")
    ap.add_argument("--episodes", type=int, default=600)
    ap.add_argument("--image-size", type=int, default=128)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=VARIANTS)
    ap.add_argument("--steps", type=int, default=6000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=4)
    ap.add_argument("--eval-steps", type=int, default=None, help="Euler steps K at evaluation (default: model's)")
    ap.add_argument("--rollout-frames", type=int, default=64)
    ap.add_argument("--stride", type=int, default=1)
    ap.add_argument("--device", default=None)
    ap.add_argument("--parallel", action="store_true",
                    help="train the variants at the same time (one process each; for a large GPU)")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    ap.add_argument("--train-arg", action="append", default=list(TRAIN_OPTIONS), dest="extra",
                    help="one more `megohand train` option (repeatable; after the synthetic world's defaults "
                         f"{' '.join(TRAIN_OPTIONS)}), e.g. --train-arg=--mixed-precision=no")
    ap.add_argument("--model-arg", action="append", default=[], dest="model_args",
                    help="one compact-preset override (repeatable), e.g. --model-arg=--model.dit.num-layers=4")
    args = ap.parse_args()

    import torch

    from megohand.data.store import Store
    from megohand.evaluate.evaluator import EvalConfig, baseline_factories, evaluate_store
    from megohand.hand import load_hand_model
    from megohand.inference.policy import load_policy

    exe = [sys.executable, "-m", "megohand.cli.main"]
    store = args.store or args.work / "store"
    t0 = time.time()
    if args.store is None:
        sh([*exe, "synth", "--out", str(store), "--episodes", str(args.episodes), "--seed", "0",
            "--image-size", str(args.image_size), "--workers", str(args.workers)])
    train_minutes, jobs = {}, {}
    for v in args.variants:
        run = args.work / f"train_{v}"
        if (run / "model" / "config.json").is_file():
            continue
        cmd = [*exe, "train", "--store", str(store), "--out", str(run), "--steps", str(args.steps),
               "--batch-size", str(args.batch_size), "--lr", str(args.lr), "--seed", str(args.seed),
               "--num-workers", str(args.workers), *args.extra, "model:compact", "--model.modalities", v,
               *args.model_args]
        t = time.time()
        if args.parallel:  # each variant logs to its run folder
            run.mkdir(parents=True, exist_ok=True)
            print("+", " ".join(cmd), f"> {run / 'train.log'}", flush=True)
            jobs[v] = (subprocess.Popen(cmd, stdout=open(run / "train.log", "a"), stderr=subprocess.STDOUT), t)
        else:
            sh(cmd)
            train_minutes[v] = (time.time() - t) / 60
    for v, (proc, t) in jobs.items():
        if proc.wait() != 0:
            raise SystemExit(f"training of variant {v} failed: see {args.work / f'train_{v}' / 'train.log'}")
        train_minutes[v] = (time.time() - t) / 60

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    policies = {v: load_policy(args.work / f"train_{v}" / "model", device) for v in args.variants}
    horizon = next(iter(policies.values())).horizon
    methods = {f"MEgoHand-{v}" if v != "TID" else "MEgoHand (TID)": (lambda p: lambda prev, s: p)(p)
               for v, p in policies.items()}
    methods.update(baseline_factories(horizon))
    cfg = EvalConfig(horizon=horizon, window_stride=16, rollout_frames=args.rollout_frames, stride=args.stride,
                     steps=args.eval_steps, batch_size=64, seed=args.seed)
    hand = load_hand_model()
    report = evaluate_store(Store(store), methods, hand, cfg)
    report["train"] = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                       "episodes": args.episodes, "minutes": train_minutes, "extra": args.extra,
                       "model_args": args.model_args}
    report["hand_model"] = hand.name
    report["device"] = torch.cuda.get_device_name() if device.startswith("cuda") else "cpu"
    report["command"] = "python scripts/synthetic_benchmark.py " + " ".join(sys.argv[1:])
    report["minutes"] = (time.time() - t0) / 60
    md = markdown(report)
    io.write_json(args.out / "synthetic_benchmark.json", report, allow_nan=True)
    io.write_text(args.out / "synthetic_benchmark.md", md)
    print(md)
    print(f"wrote {args.out / 'synthetic_benchmark.json'} and .md")


if __name__ == "__main__":
    main()

"""Training speed of runs that trained at the same time, from their ``metrics.jsonl`` (median samples/s and share of
wall time waiting for batches, ``megohand.cli.benchmark.training_speed``), up to a step all of them reached together.

    python benchmarks/train_speed.py V_s0=runs/b/V_s0 T_s1=runs/b/T_s1/metrics.jsonl --max-step 2000 \\
        --device "NVIDIA H100 80GB HBM3" --note "six at once, 4 loader workers each" --out benchmarks/results/x.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

from results_io import named_path, write_json

from megohand.cli.benchmark import training_speed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", help="NAME=PATH: a run folder or its metrics.jsonl")
    ap.add_argument("--max-step", type=int, default=None, help="only the intervals up to this step")
    ap.add_argument("--device", default="", help="the card the runs trained on (recorded)")
    ap.add_argument("--note", default="", help="how they ran (recorded)")
    ap.add_argument("--out", type=Path, default=None, help="result JSON")
    a = ap.parse_args()
    runs = {}
    for item in a.runs:
        name, path = named_path(item, "an existing run folder or metrics.jsonl")
        runs[name] = training_speed(path, a.max_step)
        if not runs[name]:
            raise SystemExit(f"{path}: no logged train/samples_per_s")
    total = sum(v["samples_per_s"] for v in runs.values())
    print("| run | samples/s | waiting for data |\n|---|---|---|")
    for name, v in runs.items():
        print(f"| {name} | {v['samples_per_s']:.0f} | {100 * v.get('data_wait_share', float('nan')):.0f} % |")
    print(f"| all at once | {total:.0f} | |")
    if a.out:
        write_json({"runs": runs, "total_samples_per_s": total, "max_step": a.max_step, "device": a.device,
                    "note": a.note}, a.out)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

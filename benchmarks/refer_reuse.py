"""Training-step time of the referring question with and without reusing the main pass's image encodings.

The referring question (``--model.grounding.refer``) asks the cerebrum about another object of the same pictures.
Since 2026-12 the policy encodes the pictures once (``MEgoHandPolicy.encode_pixels``) and runs only the fusion with
the question's text; ``recompute`` restores the earlier behaviour (every pass encodes its pictures) by ignoring
the shared encodings. Both variants run the ``synthetic`` recipe's model with ``--model.grounding.refer 0.5
--model.grounding.parse 0.5`` on one real batch of a synthetic store, forward + backward + AdamW step, in
alternating pairs (the medians of the pairs after the first).

    megohand synth --out runs/g300 --episodes 300 && megohand stats --root runs/g300
    python benchmarks/refer_reuse.py --store runs/g300            # CPU: about 1 minute

Prints a table and writes benchmarks/results/refer_reuse_<device>.json.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from pathlib import Path

import torch
from results_io import write_json  # benchmarks/results_io.py


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--store", type=Path, required=True)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2, help="CPU threads (0: torch's default)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from megohand.data.windows import WindowDataset
    from megohand.models import MEgoHandPolicy
    from megohand.train.experiments import get_experiment
    from megohand.train.trainer import collate

    cfg = get_experiment("synthetic").train.model
    cfg = dataclasses.replace(cfg, grounding=dataclasses.replace(cfg.grounding, refer=0.5, parse=0.5))
    ds = WindowDataset(args.store, image_size=cfg.backbone.image_size)
    step_between = max(1, len(ds) // args.batch_size)
    batch = collate([ds[i * step_between] for i in range(args.batch_size)])
    policy = MEgoHandPolicy(cfg).to(args.device).train()
    opt = torch.optim.AdamW([q for q in policy.parameters() if q.requires_grad], lr=1e-4)
    shared = policy.encode_tokens

    def step():
        opt.zero_grad()
        loss, _ = policy(batch)
        loss.backward()
        opt.step()
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    times: dict[str, list[float]] = {"reuse": [], "recompute": []}
    for _ in range(args.pairs):
        for name in times:
            if name == "reuse":
                policy.__dict__.pop("encode_tokens", None)
            else:  # every pass encodes its pictures itself
                policy.encode_tokens = lambda *a, pixels=None, **k: shared(*a, **k)
            step()  # untimed: the first step after a switch
            t = time.perf_counter()
            step()
            step()
            times[name].append((time.perf_counter() - t) / 2)
    med = {k: statistics.median(v[1:]) for k, v in times.items()}
    print(f"| variant | s / step (batch {args.batch_size}, {args.device}) |\n|---|---|")
    for k, v in med.items():
        print(f"| {k} | {v:.3f} |")
    print(f"speed-up: {med['recompute'] / med['reuse']:.2f}x")
    out = args.out or Path(__file__).parent / "results" / f"refer_reuse_{'gpu' if args.device.startswith('cuda') else 'cpu'}.json"
    write_json({"command": "python benchmarks/refer_reuse.py --store runs/g300", "batch_size": args.batch_size,
                     "device": args.device, "threads": torch.get_num_threads(), "host": platform.node(),
                     "seconds_per_step": times, "median": med, "speedup": med["recompute"] / med["reuse"]}, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()

"""One table of several ``megohand eval`` reports on the same test episodes: window and closed-loop errors, target
accuracy with its standard error, and, for every pair of models, in how many episodes both, only one or neither
reached the instructed object (paired by episode: two models' accuracies can differ by chance less than their
standard errors suggest). Writes the summary, the pairs, each episode's outcome and the reports into one JSON.

    megohand eval --root STORE --ckpt EXPORT --protocol.window-stride 16 --protocol.rollout-frames 64 \\
        --protocol.batch-size 64 --out runs/all/TI_s1          # one per model, every test episode
    python benchmarks/eval_summary.py TI_s1=runs/all/TI_s1/eval.json V_s0=runs/all/V_s0/eval.json \\
        --extend benchmarks/results/synthetic_cpu_eval_5000x256_all_test.json --out benchmarks/results/x.json

``--extend``: a JSON this script wrote earlier; its models join the table (the protocol must be the same).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
from pathlib import Path

from results_io import named_path, write_json

PROTOCOL_SKIP = {"reliance", "frame_cache_mb"}  # how an evaluation ran, not what it measured
# a model's inference settings (None: its checkpoint's)
SAMPLER = ("noise_scale", "text_guidance", "ground_guidance", "steps", "tof_decay")


def model_entry(report: dict) -> dict:
    """{'config', 'results', 'datasets', 'outcomes'} of one `megohand eval` report's model (TOF rollouts)."""
    return {"config": report["config"], "results": report["results"], "datasets": report["datasets"],
            "outcomes": report["task_outcomes"]["rollout-tof"]["model"]}


def summary(entry: dict) -> dict:
    r = entry["results"]
    pick = lambda proto, method, key: r[proto][method]["synthetic"].get(key)  # noqa: E731
    hits = sum(o["hit"] for o in entry["outcomes"])
    n = len(entry["outcomes"])
    p = hits / n
    return {"window_mpjpe_cm": pick("window", "model", "mpjpe_cm"), "tof_mpjpe_cm": pick("rollout-tof", "model", "mpjpe_cm"),
            "tof_target_acc": pick("rollout-tof", "model", "target_acc"), "tof_dest_cm": pick("rollout-tof", "model", "dest_cm"),
            "raw_mpjpe_cm": pick("rollout-raw", "model", "mpjpe_cm"), "raw_target_acc": pick("rollout-raw", "model", "target_acc"),
            "hits": hits, "episodes": n, "standard_error": math.sqrt(p * (1 - p) / n),
            "sampler": {k: entry["config"].get(k) for k in SAMPLER}}


def paired(a: list[dict], b: list[dict]) -> dict:
    key = lambda o: (o["dataset"], o["episode"])  # noqa: E731
    hb = {key(o): o["hit"] for o in b}
    if set(hb) != {key(o) for o in a}:
        raise SystemExit("the reports hold different test episodes")
    counts = {"both": 0, "only_first": 0, "only_second": 0, "neither": 0}
    for o in a:
        x, y = o["hit"], hb[key(o)]
        counts["both" if x and y else "only_first" if x else "only_second" if y else "neither"] += 1
    return counts


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("reports", nargs="+", help="NAME=PATH of a `megohand eval` eval.json")
    ap.add_argument("--extend", type=Path, default=None, help="an earlier JSON of this script")
    ap.add_argument("--sampler-may-differ", action="store_true", help="the models may differ in their inference "
                    "settings (noise scale, guidance, Euler steps, TOF decay; each row records its own): a table of "
                    "settings")
    ap.add_argument("--note", default="", help="where the checkpoints came from, on what they ran (recorded)")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    entries, base = {}, {}
    if a.extend:
        base = json.loads(a.extend.read_text())
        for name, rep in base["reports"].items():
            entries[name] = {**rep, "outcomes": base["task_outcomes"][name]}
    for item in a.reports:
        name, path = named_path(item, "an existing eval.json")
        entries[name] = model_entry(json.loads(path.read_text()))
    first_name, first = next(iter(entries.items()))
    skip = PROTOCOL_SKIP | (set(SAMPLER) if a.sampler_may_differ else set())
    for name, e in entries.items():
        # a key only one report has is not compared: the older one predates that option, whose default keeps the
        # behaviour from before it
        keys = (e["config"].keys() & first["config"].keys()) - skip
        diff = {k: (e["config"][k], first["config"][k]) for k in keys if e["config"][k] != first["config"][k]}
        if diff:
            raise SystemExit(f"{name} was evaluated under another protocol than {first_name}: {diff}")
    table = {name: summary(e) for name, e in entries.items()}
    static = first["results"]
    table["static"] = {"window_mpjpe_cm": static["window"]["static"]["synthetic"]["mpjpe_cm"],
                       "tof_target_acc": static["rollout-tof"]["static"]["synthetic"].get("target_acc")}
    pairs = {f"{x} vs {y}": paired(entries[x]["outcomes"], entries[y]["outcomes"])
             for x, y in itertools.combinations(entries, 2)}
    print("| model | window MPJPE (cm) | TOF MPJPE (cm) | TOF target acc. | episodes |\n|---|---|---|---|---|")
    for name, s in table.items():
        acc = f"{100 * s['tof_target_acc']:.0f} %" + (f" ± {100 * s['standard_error']:.1f}" if "standard_error" in s else "")
        print(f"| {name} | {s['window_mpjpe_cm']:.3f} | {s.get('tof_mpjpe_cm') or float('nan'):.2f} | {acc} | "
              f"{s.get('episodes', '')} |")
    for k, v in pairs.items():
        print(f"{k}: {v}")
    out = {**{k: v for k, v in base.items() if k not in ("summary", "paired_target_hits", "task_outcomes", "reports")},
           "note": a.note or base.get("note", ""), "summary": table, "paired_target_hits": pairs,
           "task_outcomes": {n: e["outcomes"] for n, e in entries.items()},
           "reports": {n: {k: e[k] for k in ("config", "results", "datasets")} for n, e in entries.items()}}
    write_json(out, a.out, indent=1)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()

"""Merge `megohand benchmark` reports of the same protocol into one table (runs trained in different sessions).

    python benchmarks/merge_benchmark.py NEW.json OLD.json --out benchmarks/results/synthetic_matrix

Every run and baseline comes from the first report that has it (its rows, input-reliance rows, training minutes and
speed); ``sources`` in the JSON names the report of each. The reports must share the test set (episodes, windows),
the protocol (``config``) and the training recipe (``train`` but for where it ran, its seed, modalities and loader
workers; a setting only one report has is not compared: older reports predate it), else the script stops naming
what differs. Writes OUT.json and OUT.md (``megohand.cli.benchmark.summary_markdown``).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from megohand.cli.benchmark import VARIANTS, ablation_args, parse_run, summary_markdown
from megohand.io import write_text


RUN_SPECIFIC = {"out", "store", "seed", "model.modalities", "num_workers", "save_every", "eval_every", "progress"}
"""Training settings that may differ between merged runs: where a run went, its seed and variant, how it was fed."""


def ablated(report: dict) -> set[str]:
    """The ``train.*`` settings that the ablation of a report's first run changes: the report records that run's
    training config (``megohand benchmark``), so they differ from the recipe by the run's name, not by the recipe."""
    run = parse_run(next(iter(report.get("runs") or {}), ""))
    args = ablation_args(run[2]) if run else ()
    return {"train." + a.lstrip("-").split("=")[0].replace("-", "_") for a in args}


def flat(d: dict, prefix: str = "") -> dict:
    """Nested dict -> {"a.b": value}."""
    out = {}
    for k, v in d.items():
        out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
    return out


def differences(a: dict, b: dict, skip=frozenset()) -> dict:
    """{key: (a's, b's)} of the flattened dicts where they differ. A key only one of them has is not compared: an
    older report predates that option, whose default keeps the behaviour from before it."""
    fa, fb = flat(a), flat(b)
    keys = sorted((fa.keys() & fb.keys()) - skip)
    return {k: (fa.get(k), fb.get(k)) for k in keys if fa.get(k) != fb.get(k)}


def method_order(method: str) -> tuple:
    """Runs first, by variant (the order of VARIANTS: TID, TI, T, V), ablation and seed; then the baselines in their
    order."""
    run = parse_run(method)
    if run is None or run[0] not in VARIANTS:
        return (1,)
    variant, seed, ablation = run
    return 0, VARIANTS.index(variant), ablation, seed


def merge_reports(reports: dict[str, dict]) -> dict:
    """{name: benchmark report} -> one report; each method from the first report (in order) that has it."""
    first_name, first = next(iter(reports.items()))
    merged = {k: v for k, v in first.items() if k not in ("results", "methods", "reliance")}
    merged.update(methods=[], reliance=[], results={}, sources={}, runs={}, train_minutes={}, train_speed={})
    for name, r in reports.items():
        for key in ("datasets", "config", "experiment", "hand_model", "train"):
            skip = {f"train.{k}" for k in RUN_SPECIFIC} | ablated(r) | ablated(first)
            diff = differences({key: r.get(key)}, {key: first.get(key)}, skip)
            if diff:
                raise SystemExit(f"{name} differs from {first_name} ({name}'s, {first_name}'s): {diff}")
        for method in r["methods"]:
            if method in merged["sources"]:
                continue
            merged["sources"][method] = name
            merged["methods"].append(method)
            rows = [method, *(x for x in r["reliance"] if x.split(" · ")[0] == method)]
            merged["reliance"] += rows[1:]
            for proto, table in r["results"].items():
                merged["results"].setdefault(proto, {}).update({x: table[x] for x in rows if x in table})
            for key in ("runs", "train_minutes", "train_speed"):
                if method in r.get(key, {}):
                    merged[key][method] = r[key][method]
    merged["methods"].sort(key=method_order)
    merged["device"] = " / ".join(dict.fromkeys(r["device"] for r in reports.values()))
    merged["command"] = "; ".join(dict.fromkeys(r["command"] for r in reports.values()))
    return merged


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("reports", nargs="+", type=Path, help="benchmark JSON reports, the first wins")
    ap.add_argument("--out", type=Path, required=True, help="output path without suffix (.json and .md are written)")
    ap.add_argument("--note", default="", help="a note stored in the JSON")
    args = ap.parse_args()
    merged = merge_reports({str(p): json.loads(p.read_text()) for p in args.reports})
    if args.note:
        merged["note"] = args.note
    md = summary_markdown(merged)
    write_text(args.out.with_suffix(".json"), json.dumps(merged, indent=1, allow_nan=True))
    write_text(args.out.with_suffix(".md"), md)
    print(md)


if __name__ == "__main__":
    main()

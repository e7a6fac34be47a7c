"""Markdown tables of evaluation results (the dict of ``megohand.evaluate.evaluator.evaluate_store``)."""

from __future__ import annotations

import math

COLUMNS = (
    ("mpjpe_cm", "MPJPE (cm)"),
    ("mpjpe_pa_cm", "MPJPE-PA (cm)"),
    ("mpve_cm", "MPVE (cm)"),
    ("mpve_pa_cm", "MPVE-PA (cm)"),
    ("mwte_cm", "MWTE (cm)"),
    ("mre_rad", "MRE (rad)"),
    ("accel_error_m_s2", "Accel (m/s²)"),
    ("jitter_m_s3", "Jitter (m/s³)"),
    ("jitter_gt_m_s3", "GT jitter (m/s³)"),
    ("target_acc", "Target acc."),
    ("dest_cm", "Dest. (cm)"),
)

PROTOCOLS = {
    "window": "per L-frame window from the GT state h_k, raw chunk, frame k excluded (primary)",
    "rollout-tof": "closed loop from a GT initial state, TOF",
    "rollout-raw": "closed loop from a GT initial state, raw latest chunk (no TOF)",
}


def _fmt(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.3f}" if abs(v) < 100 else f"{v:.1f}"


def metrics_table(rows: list[tuple[str, dict]], columns=COLUMNS) -> str:
    """rows: (label, {metric: value}) -> a Markdown table with one column per metric."""
    head = "| Method | " + " | ".join(c[1] for c in columns) + " |"
    sep = "|---|" + "---|" * len(columns)
    body = ["| " + label + " | " + " | ".join(_fmt(m.get(k)) for k, _ in columns) + " |" for label, m in rows]
    return "\n".join([head, sep, *body])


def results_markdown(report: dict, title: str = "Evaluation") -> str:
    """One table per dataset group (and per dataset): rows = method x protocol."""
    res = report["results"]
    subsets = sorted({ds for proto in res.values() for per in proto.values() for ds in per})
    groups = [s for s in subsets if s.startswith("[")]
    datasets = [s for s in subsets if not s.startswith("[")]
    lines = [f"# {title}", ""]
    lines.append("Protocols: " + "; ".join(f"**{p}** = {d}" for p, d in PROTOCOLS.items() if p in res) + ".")
    cfg = report.get("config", {})
    if cfg:
        lines.append(
            f"Horizon L = {cfg.get('horizon')}, window stride {cfg.get('window_stride')}, rollout "
            f"{cfg.get('rollout_frames')} frames at query stride {cfg.get('stride')}, Euler steps "
            f"{cfg.get('steps') or 'model default'}. Acceleration error and jitter use the 21 joints at the dataset fps; "
            "the ground truth's own jitter (GT jitter, same frames) is the floor."
        )
    lines.append("")
    info = report.get("datasets", {})
    group_size: dict[str, int] = {}
    for d in info.values():
        group_size[d["group"]] = group_size.get(d["group"], 0) + 1
    methods = report.get("methods") or sorted({m for proto in res.values() for m in proto})
    for subset in groups + datasets:
        if subset in info and group_size.get(info[subset]["group"], 0) == 1 and f"[{info[subset]['group']}]" in groups:
            continue  # the group table already is this dataset's table
        rows = []
        for method in methods:
            for proto in PROTOCOLS:
                per = res.get(proto, {}).get(method, {})
                if subset in per:
                    rows.append((f"{method} · {proto}", per[subset]))
        if not rows:
            continue
        if subset.startswith("["):
            members = [d for d, v in info.items() if f"[{v['group']}]" == subset]
            name = f"Group {subset[1:-1]}"
            eps, wins = sum(info[d]["episodes"] for d in members), sum(info[d]["windows"] for d in members)
            extra = f": {', '.join(members)} ({eps} episodes, {wins} windows)" if members else ""
        else:
            name = f"Dataset {subset}"
            extra = f" ({info[subset]['episodes']} episodes, {info[subset]['windows']} windows)" if subset in info else ""
        lines += [f"## {name}{extra}", "", metrics_table(rows), ""]
        rel = reliance_table(res, report.get("reliance", []), subset)
        if rel:
            lines += ["Input reliance (the same windows, rollouts and noise; one input taken from another test episode):",
                      "", rel, ""]
    misses = miss_table(report.get("task_outcomes", {}).get("rollout-tof", {}))
    if misses:
        lines += ["Closed loop + TOF, what the hand reached (episodes; a miss of the right colour and wrong shape, of "
                  "the right shape and wrong colour, or neither):", "", misses, ""]
    tasks = task_table(report.get("task_outcomes", {}).get("rollout-tof", {}))
    if tasks:
        lines += ["Closed loop + TOF, target accuracy per task (episodes that reached the instructed object / "
                  "episodes):", "", tasks, ""]
    if any(k in res.get(p, {}).get(m, {}).get(s, {}) for p in res for m in res[p] for s in res[p][m]
           for k in ("target_acc",)):
        lines.append("Target acc. = share of episodes whose closest object to the grip point (mean of thumb, index and "
                     "middle tips) at the contact frame is the instructed one; Dest. = distance from where the hand "
                     "leaves the instructed object to its destination.")
    return "\n".join(lines)


def miss_kind(target: str, reached: str) -> str:
    """"hit", "colour" (right colour, wrong shape), "shape" (right shape, wrong colour) or "other", from two
    "<colour> <shape>" names."""
    if target == reached:
        return "hit"
    (tc, ts), (rc, rs) = target.rsplit(" ", 1), reached.rsplit(" ", 1)
    return "colour" if tc == rc else "shape" if ts == rs else "other"


def miss_table(outcomes: dict[str, list[dict]]) -> str:
    """Per method, its task outcomes (``evaluate_store``'s ``task_outcomes[protocol]``) counted by ``miss_kind``;
    "" when no outcome names its objects."""
    rows = []
    for method, outs in outcomes.items():
        kinds = [miss_kind(o["target_object"], o["reached_object"]) for o in outs if "target_object" in o]
        if kinds:
            rows.append(f"| {method} | {len(kinds)} | {kinds.count('hit')} | {kinds.count('colour')} | "
                        f"{kinds.count('shape')} | {kinds.count('other')} |")
    if not rows:
        return ""
    return "\n".join(["| method | episodes | reached the instructed object | right colour, wrong shape | "
                      "right shape, wrong colour | neither |", "|---|---|---|---|---|---|", *rows])


def task_table(outcomes: dict[str, list[dict]]) -> str:
    """Per method, its task outcomes (``evaluate_store``'s ``task_outcomes[protocol]``) counted per task (the
    synthetic world's scripts: a push's contact is the fingers against the object's far side, a grasp's the grip
    around it); "" when no outcome names its task."""
    names = sorted({o["task"] for outs in outcomes.values() for o in outs if o.get("task")})
    if not names:
        return ""
    rows = []
    for method, outs in outcomes.items():
        cells = []
        for t in names:
            hits = [o["hit"] for o in outs if o.get("task") == t]
            cells.append(f"{sum(hits)} / {len(hits)} ({100 * sum(hits) / len(hits):.0f} %)" if hits else "–")
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return "\n".join([f"| method | {' | '.join(names)} |", "|---|" + "---|" * len(names), *rows])


def reliance_table(res: dict, reliance: list[str], subset: str) -> str:
    """Rows per input-reliance result ("<method> · <swap>"): window MPJPE and TOF target accuracy, normal vs swap,
    with the change; "" when there are none."""
    rows = []
    for method in reliance:
        base = method.split(" · ")[0]
        w0 = res.get("window", {}).get(base, {}).get(subset, {}).get("mpjpe_cm")
        w1 = res.get("window", {}).get(method, {}).get(subset, {}).get("mpjpe_cm")
        a0 = res.get("rollout-tof", {}).get(base, {}).get(subset, {}).get("target_acc")
        a1 = res.get("rollout-tof", {}).get(method, {}).get(subset, {}).get("target_acc")
        if w1 is None and a1 is None:
            continue
        rel = "–" if w0 in (None, 0) or w1 is None else f"{100 * (w1 - w0) / w0:+.1f} %"
        rows.append(f"| {method} | {_fmt(w1)} | {rel} | {_fmt(a1)} | "
                    f"{'–' if a0 is None or a1 is None else f'{a1 - a0:+.3f}'} |")
    if not rows:
        return ""
    head = "| Method · input | window MPJPE (cm) | vs normal | TOF target acc. | vs normal |\n|---|---|---|---|---|"
    return "\n".join([head, *rows])

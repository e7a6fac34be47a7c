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
)

PROTOCOLS = {
    "window": "per 16-frame window from GT h_k, raw chunk, frame 0 excluded (primary)",
    "rollout-tof": "closed loop from GT h_0, TOF",
    "rollout-raw": "closed loop from GT h_0, raw latest chunk (no TOF)",
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
            f"{cfg.get('steps') or 'model default'}. Acceleration and jitter use 21 joints at the dataset fps; "
            "jitter of the ground truth is the floor."
        )
    lines.append("")
    for subset in groups + datasets:
        rows = []
        gt_jitter = None
        for proto in PROTOCOLS:
            for method, per in res.get(proto, {}).items():
                if subset in per:
                    rows.append((f"{method} · {proto}", per[subset]))
                    gt_jitter = per[subset].get("jitter_gt_m_s3", gt_jitter)
        if not rows:
            continue
        name = f"Group {subset[1:-1]}" if subset.startswith("[") else f"Dataset {subset}"
        info = report.get("datasets", {}).get(subset, {})
        extra = f" ({info['episodes']} episodes, {info['windows']} windows)" if info else ""
        lines += [f"## {name}{extra}", "", metrics_table(rows)]
        if gt_jitter is not None:
            lines.append(f"\nGround-truth jitter: {_fmt(gt_jitter)} m/s³.")
        lines.append("")
    return "\n".join(lines)

"""``megohand eval``: metrics of a checkpoint and the baselines on a store's test split."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from megohand.evaluate.evaluator import EvalConfig


@dataclass
class Eval:
    """Evaluate a checkpoint and the static / constant-velocity baselines on the test split of a store.

    Protocols (paper.md §13.3): per 16-frame window from the GT state with the raw chunk (primary) and
    closed-loop rollouts with and without TOF (secondary). Writes ``eval.md`` and ``eval.json`` in --out.
    """

    root: Path
    """Store root (the folder given to ``megohand synth`` / ``convert``)."""
    out: Path = Path("eval_out")
    """Output folder for eval.md and eval.json."""
    ckpt: Path | None = None
    """Checkpoint folder (MEgoHandPolicy.save_pretrained); None = the demo checkpoint shipped in the package."""
    baselines_only: bool = False
    """Evaluate only the static and constant-velocity baselines (no checkpoint needed)."""
    mano_dir: Path | None = None
    """MANO folder for the metrics' hand model; default: $MANO_MODEL_DIR, else the bundled open hand."""
    device: str = "cpu"
    """Torch device of the model (cpu, cuda, cuda:1, ...)."""
    protocol: EvalConfig = field(default_factory=EvalConfig)
    """Protocol knobs."""

    def run(self) -> None:
        import dataclasses

        from megohand.data.store import Store
        from megohand.evaluate.evaluator import baseline_factories, evaluate_store
        from megohand.hand import load_hand_model
        from megohand.inference.policy import load_policy

        if not self.root.is_dir():
            raise SystemExit(f"{self.root}: store folder not found")
        cfg = self.protocol
        methods = {}
        if not self.baselines_only:
            policy = load_policy(self.ckpt, self.device, cfg.noise_scale)
            cfg = dataclasses.replace(cfg, horizon=policy.horizon)
            methods["model"] = lambda prev, stride: policy
        methods.update(baseline_factories(cfg.horizon))
        hand = load_hand_model(self.mano_dir)
        report = evaluate_store(Store(self.root), methods, hand, cfg)
        report["hand_model"] = hand.name
        report["checkpoint"] = None if self.baselines_only else str(self.ckpt or "demo (shipped)")
        write_report(report, self.out, "eval", f"Evaluation of {self.root}")


def write_report(report: dict, out: Path, stem: str, title: str) -> None:
    """Write ``<stem>.json`` and ``<stem>.md`` in ``out`` atomically and print the Markdown."""
    from megohand import io
    from megohand.evaluate.tables import results_markdown

    md = results_markdown(report, title)
    io.write_json(out / f"{stem}.json", report, allow_nan=True)
    io.write_text(out / f"{stem}.md", md)
    print(md)
    print(f"wrote {out / (stem + '.md')} and {out / (stem + '.json')}")

"""``megohand eval``: metrics of a checkpoint and the baselines on a store's test split (or its val split)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from megohand.evaluate.evaluator import EvalConfig


@dataclass
class Eval:
    """Evaluate a checkpoint and the static / constant-velocity baselines on the test split of a store.

    ``--protocol.split val`` evaluates its val split instead, to choose inference settings. Protocols (arXiv
    2505.16602, section 4; docs/metrics.md): per 16-frame window from the GT state with the raw chunk (primary) and
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
    overwrite: bool = False
    """Replace an existing eval.md / eval.json in --out."""

    def run(self) -> None:
        import dataclasses

        from megohand import io
        from megohand.data.store import Store
        from megohand.errors import check_input
        from megohand.evaluate.evaluator import baseline_factories, evaluate_store
        from megohand.hand import load_hand_model
        from megohand.inference.policy import load_policy

        check_input(self.root, "--root", what="store")
        check_protocol(self.protocol)
        for name in ("eval.json", "eval.md"):
            io.check_output_file(self.out / name, self.overwrite)
        if self.ckpt is not None and not self.baselines_only:
            check_input(self.ckpt, "--ckpt", what="checkpoint")
        cfg = self.protocol
        methods = {}
        if not self.baselines_only:
            policy = load_policy(self.ckpt, self.device, cfg.noise_scale, cfg.text_guidance, cfg.ground_guidance)
            cfg = dataclasses.replace(cfg, horizon=policy.horizon,
                                      image_size=cfg.image_size or policy.model.config.backbone.image_size)
            methods["model"] = lambda prev, stride: policy
        methods.update(baseline_factories(cfg.horizon))
        hand = load_hand_model(self.mano_dir)
        report = evaluate_store(Store(self.root), methods, hand, cfg, progress=True)
        report["hand_model"] = hand.name
        report["checkpoint"] = None if self.baselines_only else str(self.ckpt or "demo (shipped)")
        write_report(report, self.out, "eval", f"Evaluation of {self.root}")


def check_protocol(cfg: EvalConfig, prefix: str = "--protocol.") -> None:
    """Protocol knobs in range (UserError naming the option otherwise)."""
    from megohand.errors import check

    opts = {"horizon": cfg.horizon, "window_stride": cfg.window_stride, "stride": cfg.stride,
            "batch_size": cfg.batch_size, "steps": cfg.steps}
    for name, value in opts.items():
        if value is not None:
            check(value >= 1, prefix + name.replace("_", "-"), value, "an integer >= 1")
    for name in ("rollout_frames", "max_episodes", "noise_scale", "text_guidance", "ground_guidance", "tof_decay"):
        value = getattr(cfg, name)
        if value is not None:
            check(value >= 0, prefix + name.replace("_", "-"), value, "a number >= 0")


def write_report(report: dict, out: Path, stem: str, title: str) -> None:
    """Write ``<stem>.json`` and ``<stem>.md`` in ``out`` atomically and print the Markdown."""
    from megohand import io
    from megohand.evaluate.tables import results_markdown

    md = results_markdown(report, title)
    io.write_json(out / f"{stem}.json", report, allow_nan=True)
    io.write_text(out / f"{stem}.md", md)
    print(md)
    print(f"wrote {out / (stem + '.md')} and {out / (stem + '.json')}")

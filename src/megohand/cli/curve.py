"""``megohand curve``: the held-out curve of a training run, every saved checkpoint against the static pose."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import tyro
from tyro.conf import Positional

KEYS = ("mpjpe_cm", "mpjpe_pa_cm", "mwte_cm", "mre_rad", "jitter_m_s3")


@dataclass
class Curve:
    """Evaluate every saved checkpoint of a training run on a store's test split (window protocol).

    For each checkpoint ``RUN_DIR/checkpoints/step-N`` (and the final ``RUN_DIR/model``): the window protocol of
    ``megohand eval`` (GT state h_k, raw chunk, frames k+1..k+L; no rollouts) for the model and, once, the static
    and constant-velocity baselines; plus the run's validation flow-matching loss at that step and its whole
    validation curve (``metrics.jsonl``). Checkpoints already in --out are skipped: an existing --out is continued,
    and ``--watch`` follows a run whose trainer deletes old checkpoints (``--keep-last``), stopping once
    ``RUN_DIR/model`` is evaluated. --out is rewritten atomically after every checkpoint.

        megohand curve runs/s/TID --store runs/s/store            # the checkpoints so far
        megohand curve runs/s/TID --store runs/s/store --watch    # alongside `megohand train`
    """

    run_dir: Annotated[Positional[Path], tyro.conf.arg(metavar="RUN_DIR")]
    """A ``megohand train --out`` folder."""
    store: Path
    """Store whose test split is evaluated."""
    out: Path | None = None
    """Result JSON (default: RUN_DIR/curve.json); an existing one is continued."""
    group: str | None = None
    """Dataset group whose metrics are kept, e.g. "[synthetic]" (default: the group of the store's first dataset)."""
    watch: bool = False
    """Poll for new checkpoints until RUN_DIR/model is evaluated."""
    poll_s: float = 30.0
    """Seconds between polls."""
    threads: int = 1
    """Torch threads (leave the rest to a training run)."""
    device: str = "cpu"
    """Where the checkpoints run (cpu, cuda)."""
    mano_dir: Path | None = None
    """MANO folder or file for the metrics (default: $MANO_MODEL_DIR, else the bundled open hand)."""
    noise_scale: float | None = None
    """Initial-noise scale of the sampler (default: the checkpoint's, 1; 0 = deterministic)."""

    def run(self) -> None:
        import json
        import time

        import torch

        from megohand import io
        from megohand.data.store import Store
        from megohand.errors import UserError, check, check_input, check_min
        from megohand.evaluate.evaluator import EvalConfig, baseline_factories, evaluate_store, group_of
        from megohand.hand import load_hand_model
        from megohand.inference.policy import load_policy
        from megohand.train.checkpoint import list_checkpoints

        check(self.poll_s > 0, "--poll-s", self.poll_s, "seconds > 0")
        check_min(1, threads=self.threads)
        check_input(self.store, "--store", what="store")
        torch.set_num_threads(self.threads)
        run = self.run_dir
        out = self.out or run / "curve.json"
        report = io.read_json(out, "curve JSON") if out.is_file() else {"benchmark": "checkpoint_curve", "points": []}
        if report.get("noise_scale", self.noise_scale) != self.noise_scale:
            raise UserError(f"holds points at noise scale {report['noise_scale']}", path=out,
                            hint="pass another --out, or the same --noise-scale")
        report.update(run=str(run), store=str(self.store), protocol="window (GT h_k, raw chunk)",
                      noise_scale=self.noise_scale, command="megohand curve " + " ".join(sys.argv[2:]))
        train_config = run / "train_config.json"  # how the run was trained (megohand train writes it at the start)
        while self.watch and not train_config.is_file():  # started alongside `megohand train`: wait for it
            time.sleep(self.poll_s)
        if not train_config.is_file():
            raise UserError("has no train_config.json", path=run, expected="a `megohand train --out` folder")
        report["train_config"] = io.read_json(train_config, "training config")
        store, hand = Store(self.store), load_hand_model(self.mano_dir)
        report["hand_model"] = hand.name
        group = self.group or report.get("group") or f"[{group_of(store.datasets()[0])}]"
        report["group"] = group

        def window_metrics(methods: dict) -> dict[str, dict[str, float]]:
            res = evaluate_store(store, methods, hand, cfg, log=lambda *a: None)["results"]["window"]
            if group not in next(iter(res.values())):
                raise UserError(f"--group {group!r} is not among {sorted(next(iter(res.values())))}", path=self.store)
            return {name: {k: r[group][k] for k in KEYS} for name, r in res.items()}

        def val_losses() -> dict[int, float]:
            recs = io.read_jsonl(run / "metrics.jsonl") if (run / "metrics.jsonl").is_file() else []
            return {int(r["step"]): float(r["eval/loss_fm"]) for r in recs if "eval/loss_fm" in r}

        done = {p["checkpoint"] for p in report["points"]}
        while True:
            todo = [(s, p) for s, p in list_checkpoints(run / "checkpoints") if p.name not in done]
            final = run / "model"
            if (final / io.CONFIG).is_file() and "model" not in done:
                last = report["train_config"]["steps"]
                if any(p["step"] == last for p in report["points"]) or any(s == last for s, _ in todo):
                    done.add("model")  # the final checkpoint holds the same weights as run/model
                else:
                    todo.append((last, final))
            for step, path in todo:
                try:
                    policy = load_policy(path, self.device, noise_scale=self.noise_scale)
                except (FileNotFoundError, UserError):  # pruned by the trainer meanwhile
                    if path.exists():
                        raise
                    continue
                cfg = EvalConfig(horizon=policy.horizon, rollout_frames=0, batch_size=64, seed=0, reliance=())
                if "baselines" not in report:
                    report["baselines"] = window_metrics(baseline_factories(policy.horizon))
                t = time.time()
                metrics = window_metrics({"model": lambda prev, s: policy})["model"]
                point = {"checkpoint": path.name, "step": step, "val_loss_fm": val_losses().get(step), **metrics,
                         "eval_s": round(time.time() - t, 1)}
                report["points"] = sorted([*report["points"], point], key=lambda p: (p["step"], p["checkpoint"]))
                done.add(path.name)
                io.write_json(out, report, allow_nan=True)
                static = report["baselines"]["static"]["mpjpe_cm"]
                print(f"step {step:6d}  window MPJPE {metrics['mpjpe_cm']:6.2f} cm (static {static:.2f})  "
                      f"MWTE {metrics['mwte_cm']:6.2f}  val loss {point['val_loss_fm']}", flush=True)
            if not self.watch or "model" in done:
                break
            time.sleep(self.poll_s)
        report["val_loss_fm_curve"] = [[step, loss] for step, loss in sorted(val_losses().items())]
        io.write_json(out, report, allow_nan=True)
        print(f"wrote {out}")

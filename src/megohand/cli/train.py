"""``megohand train``: train a MEgoHand policy on a unified store (presets compact / paper, every field overridable).

One GPU: ``megohand train --store S --out runs/x model:compact``; several GPUs / nodes:
``accelerate launch [--multi_gpu | --config_file fsdp.yaml] -m megohand.cli.main train ...`` (docs/model.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import tyro

from megohand.models.config import PolicyConfig, compact, paper
from megohand.train.config import TrainConfig

if TYPE_CHECKING:
    ModelPreset = PolicyConfig
else:
    ModelPreset = tyro.extras.subcommand_type_from_defaults(
        {"compact": compact(), "paper": paper()},
        {
            "compact": "MiniLM text + small CNNs + small DiT; runs anywhere (default).",
            "paper": "SigLIP-2 + SmolLM2 (12 layers) eagle backbone, ResNet-50 depth, DiT 16 x 1536 "
                     "(needs --model.backbone.vision-path/--llm-path, or --model.backbone.random-init).",
        },
    )


class _Run:
    def run(self) -> None:
        import contextlib
        import os

        from megohand import io
        from megohand.train.trainer import train

        main = int(os.environ.get("RANK", "0")) == 0
        # a run folder is resumed; one holding only the lock file is what a run killed before its first write leaves
        is_run = lambda p: ((p / "checkpoints").is_dir() or (p / "train_config.json").is_file()  # noqa: E731
                            or {q.name for q in p.iterdir()} == {io.LOCK})
        io.check_output_dir(self.out, self.overwrite, accept=is_run)
        fresh = not self.out.exists()
        # one trainer per run folder (the main process holds the lock): a second `megohand train` on the same --out
        # would interleave its checkpoints and metrics with the first one's
        with (io.folder_lock(self.out) if main else contextlib.nullcontext()), \
                io.cleanup_on_error(self.out, keep=lambda p: (p / "checkpoints").is_dir(), fresh=fresh):
            out = train(self)
        if main:
            print(f"policy written to {out}")


@dataclass(frozen=True)
class Train(_Run, TrainConfig):
    """Train a MEgoHand policy (flow matching, AdamW + cosine, bf16 on GPU, exact resume from out/checkpoints).

    ``--config NAME`` first starts from a named recipe (megohand.train.experiments: paper, synthetic,
    synthetic-classic, demo); every other option then overrides it field by field (``--model.modalities T``)."""

    model: ModelPreset = field(default_factory=compact)
    """Policy preset (model:compact or model:paper) and its overrides (--model.dit.num-layers 8, ...)."""
    overwrite: bool = False
    """Write into a non-empty --out that is not a megohand run folder (a run folder is resumed)."""

    named_default = staticmethod(lambda argv: named_default(argv))


@dataclass(frozen=True)
class TrainFromConfig(_Run, TrainConfig):
    """Train a MEgoHand policy from a named recipe (``--config NAME``, megohand.train.experiments); every option
    overrides the recipe field by field."""

    overwrite: bool = False
    """Write into a non-empty --out that is not a megohand run folder (a run folder is resumed)."""


def named_default(argv: list[str]):
    """Split ``--config NAME`` (or ``--config=NAME``) off the options: (TrainFromConfig, that experiment's
    TrainConfig as its defaults, the other options), or (Train, None, argv) without it."""
    import dataclasses

    from megohand.train.experiments import get_experiment

    name, rest, i = None, [], 0
    while i < len(argv):
        if argv[i] == "--config" and i + 1 < len(argv):
            name, i = argv[i + 1], i + 2
            continue
        if argv[i].startswith("--config="):
            name = argv[i].split("=", 1)[1]
        else:
            rest.append(argv[i])
        i += 1
    if name is None:
        return Train, None, argv
    base = dataclasses.replace(get_experiment(name).train, config=name)
    return TrainFromConfig, TrainFromConfig(**{f.name: getattr(base, f.name) for f in dataclasses.fields(TrainConfig)}), rest

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


@dataclass(frozen=True)
class Train(TrainConfig):
    """Train a MEgoHand policy (flow matching, AdamW + cosine, bf16 on GPU, exact resume from out/checkpoints)."""

    model: ModelPreset = field(default_factory=compact)
    """Policy preset (model:compact or model:paper) and its overrides (--model.dit.num-layers 8, ...)."""
    overwrite: bool = False
    """Write into a non-empty --out that is not a megohand run folder (a run folder is resumed)."""

    def run(self) -> None:
        import os

        from megohand import io
        from megohand.train.trainer import train

        is_run = lambda p: (p / "checkpoints").is_dir() or (p / "train_config.json").is_file()  # noqa: E731
        io.check_output_dir(self.out, self.overwrite, accept=is_run)
        with io.cleanup_on_error(self.out, keep=lambda p: (p / "checkpoints").is_dir()):
            out = train(self)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"policy written to {out}")

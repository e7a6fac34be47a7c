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

    def run(self) -> None:
        from megohand.train.trainer import train

        import os

        out = train(self)
        if int(os.environ.get("RANK", "0")) == 0:
            print(f"policy written to {out}")

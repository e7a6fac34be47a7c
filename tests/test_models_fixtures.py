"""Tiny random transformers checkpoints saved with save_pretrained, for the model tests (no hub access)."""

from __future__ import annotations

from pathlib import Path

import torch


def tiny_siglip(folder: Path) -> Path:
    from transformers import SiglipVisionConfig, SiglipVisionModel

    cfg = SiglipVisionConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8
    )
    torch.manual_seed(0)
    SiglipVisionModel(cfg).save_pretrained(folder)
    return folder


def tiny_llm(folder: Path, family: str = "llama", layers: int = 3) -> Path:
    """Tiny causal LM + a tokenizer (the bundled MiniLM WordPiece tokenizer, vocab 30522)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, Qwen2Config

    from megohand.models.backbones import bundled_text_path

    tok = AutoTokenizer.from_pretrained(bundled_text_path())
    kw = dict(
        vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=layers, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=512,
    )
    cfg = LlamaConfig(**kw) if family == "llama" else Qwen2Config(**kw)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def tiny_resnet(folder: Path) -> Path:
    from transformers import ResNetConfig, ResNetModel

    cfg = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16, 16, 32], depths=[1, 1, 1, 1], layer_type="basic")
    torch.manual_seed(0)
    ResNetModel(cfg).save_pretrained(folder)
    return folder


def tiny_depth_anything(folder: Path) -> Path:
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config

    backbone = Dinov2Config(
        hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32, patch_size=14,
        image_size=28, out_features=["stage1", "stage2", "stage3", "stage4"], reshape_hidden_states=False,
    )
    cfg = DepthAnythingConfig(
        backbone_config=backbone, reassemble_hidden_size=16, neck_hidden_sizes=[8, 8, 16, 16], fusion_hidden_size=8,
        head_hidden_size=8, depth_estimation_type="metric", max_depth=2,
    )
    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(cfg).save_pretrained(folder)
    return folder


def sample_batch(B: int = 2, L: int = 4, H: int = 40, W: int = 48, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return dict(
        image=torch.randint(0, 256, (B, 3, H, W), dtype=torch.uint8, generator=g),
        depth=torch.rand(B, 1, H, W, generator=g) * 2,
        has_depth=torch.tensor([True] + [False] * (B - 1)),
        instruction=["pick up the cup", "open the drawer"][:B] + ["x"] * max(0, B - 2),
        state=torch.randn(B, 109, generator=g),
        action=torch.randn(B, L, 99, generator=g),
        action_mask=torch.ones(B, L),
    )

"""The compact backbone: frozen pretrained MiniLM text encoder + small CNN vision encoder + fusion transformer.

Tokens: ``[text tokens (<= max_text_tokens) | image tokens (grid^2)]`` with type embeddings, fused by a small
pre-norm transformer encoder, projected to ``out_dim``. Depth tokens are added to the image tokens before fusion.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from megohand.models.backbones import bundled_text_path, use_sdpa
from megohand.models.depth import SmallCNN


class CompactBackbone(nn.Module):
    def __init__(self, cfg, image_size: int, out_dim: int, use_text: bool, use_image: bool, aux_dir: Path | None = None):
        """cfg: a CompactBackboneConfig; image_size: square input side [px] (a multiple of 16)."""
        super().__init__()
        from transformers import AutoConfig, AutoModel, AutoTokenizer

        if image_size % 16:
            raise ValueError(f"compact backbone needs image_size divisible by 16, got {image_size}")
        self.cfg, self.use_text, self.use_image = cfg, use_text, use_image
        self.image_size = image_size
        self.image_grid = image_size // 16
        self.image_token_dim = cfg.width
        w = cfg.width
        self.text = self.tokenizer = self.vision = self.text_cache = None
        if use_text:
            if aux_dir is not None:  # rebuild from the checkpoint; weights come from its safetensors
                self.tokenizer = AutoTokenizer.from_pretrained(aux_dir / "text")
                self.text = AutoModel.from_config(AutoConfig.from_pretrained(aux_dir / "text"))
            else:
                path = Path(cfg.text_path) if cfg.text_path else bundled_text_path()
                if not (path / "config.json").is_file():
                    raise FileNotFoundError(f"text encoder folder {path} has no config.json")
                self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                self.text = AutoModel.from_pretrained(path, local_files_only=True)
            use_sdpa(self.text).requires_grad_(cfg.tune_text)
            self.text_proj = nn.Linear(self.text.config.hidden_size, w)
            self.use_text_cache()
        if use_image:
            self.vision = SmallCNN(3, w, num_down=4, cond_dim=w if (cfg.film and use_text) else 0)
            self.image_pos = nn.Parameter(torch.randn(self.image_grid**2, w) * 0.02)
        self.type_embed = nn.Embedding(2, w)
        layer = nn.TransformerEncoderLayer(
            w, cfg.fusion_heads, 4 * w, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.fusion = nn.TransformerEncoder(layer, cfg.fusion_layers, enable_nested_tensor=False)
        self.out = nn.Sequential(nn.LayerNorm(w), nn.Linear(w, out_dim))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.text is not None and not self.cfg.tune_text:
            self.text.eval()  # frozen modules stay in eval mode (no dropout)
        return self

    def export(self, folder: Path) -> None:
        if self.text is not None:
            self.text.config.save_pretrained(folder / "text")
            self.tokenizer.save_pretrained(folder / "text")

    def use_text_cache(self, on: bool = True) -> bool:
        """Encode each distinct string once with the frozen text encoder and gather its tokens after
        (``FrozenTextCache``; on from the start, off when the encoder trains). Returns whether it is on."""
        from megohand.models.backbones.text_cache import FrozenTextCache

        on = on and self.text is not None and not self.cfg.tune_text
        self.text_cache = FrozenTextCache() if on else None
        return on

    def prepare_text(self, instructions: list[str] | None, batch: int, device) -> dict:
        """The CPU part of forward: B strings -> {input_ids (B, S) long, mask (B, S) bool, padded: bool} on
        device ({} without text); with the text cache, {hidden (B, S, H), mask, padded} instead."""
        if not self.use_text:
            return {}
        if self.text_cache is not None:
            text = self.text_cache.lookup(list(instructions), self.tokenizer, self.text, self.cfg.max_text_tokens,
                                          device)
            if text is not None:
                return text
        enc = self.tokenizer(
            list(instructions), padding=True, truncation=True, max_length=self.cfg.max_text_tokens, return_tensors="pt"
        )
        mask = enc["attention_mask"].bool()
        return {"input_ids": enc["input_ids"].to(device, non_blocking=True), "mask": mask.to(device, non_blocking=True),
                "padded": not bool(mask.all())}

    def text_tokens(self, text: dict) -> torch.Tensor:
        """text from prepare_text -> MiniLM tokens projected to (B, S, width)."""
        if "hidden" in text:  # from the text cache
            h = text["hidden"]
        else:
            attn = text["mask"].long() if text["padded"] else None  # no padding: None = the same full attention
            with torch.set_grad_enabled(self.cfg.tune_text and torch.is_grad_enabled()):
                h = self.text(input_ids=text["input_ids"], attention_mask=attn).last_hidden_state
        return self.text_proj(h.to(self.text_proj.weight.dtype))

    def encode_text(self, instructions: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
        """list of B strings -> (tokens (B, S, width), mask (B, S) bool)."""
        text = self.prepare_text(instructions, len(instructions), device)
        return self.text_tokens(text), text["mask"]

    @property
    def vision_reads_text(self) -> bool:
        """True when the image tokens depend on the instruction (FiLM): then vision_tokens cannot be reused."""
        return self.vision is not None and self.vision.film is not None

    def vision_tokens(self, image: torch.Tensor, sentence: torch.Tensor | None = None) -> torch.Tensor:
        """image (B, 3, S, S) [0, 1] -> image tokens (B, grid^2, width) with their positions; ``sentence``
        (B, width): the mean text token, FiLM's condition (only and always with FiLM)."""
        return self.vision(image * 2 - 1, sentence).flatten(2).transpose(1, 2) + self.image_pos

    def forward_tokens(self, image, text: dict, depth_tokens=None, vision=None):
        """The tensor part of forward (no host syncs): image (B, 3, S, S) [0, 1], text from prepare_text,
        depth_tokens (B, grid^2, width) or None -> (tokens (B, S', out_dim), mask (B, S') bool). ``vision``:
        vision_tokens(image), when already computed."""
        parts, masks = [], []
        sentence = None
        if self.use_text:
            t = self.text_tokens(text)
            parts.append(t + self.type_embed.weight[0])
            masks.append(text["mask"])
            if self.vision is not None and self.vision.film is not None:  # mean over the real (unpadded) tokens
                m = text["mask"].to(t.dtype)[..., None]
                sentence = (t * m).sum(1) / m.sum(1).clamp(min=1.0)
        if self.use_image:
            x = self.vision_tokens(image, sentence) if vision is None else vision
            if depth_tokens is not None:
                x = x + depth_tokens
            parts.append(x + self.type_embed.weight[1])
            masks.append(torch.ones(x.shape[:2], dtype=torch.bool, device=x.device))
        tokens, mask = torch.cat(parts, dim=1), torch.cat(masks, dim=1)
        padded = self.use_text and text["padded"]
        tokens = self.fusion(tokens, src_key_padding_mask=~mask if padded else None)
        return self.out(tokens), mask

    def image_tokens(self, tokens: torch.Tensor, text: dict) -> torch.Tensor:
        """The output tokens (B, S', out_dim) at the image positions: (B, grid^2, out_dim), row-major."""
        return tokens[:, -self.image_grid**2:]

    def forward(self, image=None, instructions=None, depth_tokens=None):
        B = image.shape[0] if image is not None else len(instructions)
        return self.forward_tokens(image, self.prepare_text(instructions, B, self.type_embed.weight.device), depth_tokens)

"""Cerebellum: the GR00T-N1 diffusion transformer and its state/action encoders (arXiv 2505.16602; docs/model.md).

Query tokens: ``[state token (1) | action tokens (L)]``; the last L outputs are the velocity.
Even blocks cross-attend to the vision-language tokens, odd blocks self-attend (no causal mask);
every block has AdaLN on the flow time, dropout on the attention output and a GELU-tanh feed-forward.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from megohand.models.config import DiTConfig


def timestep_sinusoid(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """diffusers ``Timesteps(dim, flip_sin_to_cos=True, downscale_freq_shift=1)``: (B,) -> (B, dim) [cos | sin]."""
    half = dim // 2
    exponent = -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / (half - 1)
    args = t.float()[:, None] * exponent.exp()[None]
    return torch.cat([args.cos(), args.sin()], dim=-1)


def action_sinusoid(t: torch.Tensor, dim: int) -> torch.Tensor:
    """GR00T ``SinusoidalPositionalEncoding``: (...) -> (..., dim) [sin | cos], base 10000."""
    half = dim // 2
    exponent = -torch.arange(half, dtype=torch.float32, device=t.device) * (math.log(10000.0) / half)
    args = t.float()[..., None] * exponent.exp()
    return torch.cat([args.sin(), args.cos()], dim=-1)


class AdaLayerNorm(nn.Module):
    """Non-affine LayerNorm modulated by time: LN(x) (1 + scale) + shift, (scale, shift) = Linear(SiLU(temb))."""

    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.linear = nn.Linear(dim, 2 * dim)
        self.norm = nn.LayerNorm(dim, eps=eps, elementwise_affine=False)

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        scale, shift = self.linear(F.silu(temb)).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale[:, None]) + shift[:, None]


class Attention(nn.Module):
    """Multi-head attention with F.scaled_dot_product_attention; K/V may come from another width (cross)."""

    def __init__(self, dim: int, heads: int, kv_dim: int | None = None, dropout: float = 0.0):
        super().__init__()
        kv_dim = kv_dim or dim
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(kv_dim, dim, bias=False)
        self.to_v = nn.Linear(kv_dim, dim, bias=False)
        self.to_out = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, -1)).transpose(1, 2)  # (B, H, N, d)

    def project_kv(self, context: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """context (B, S, kv_dim) -> (k, v) each (B, H, S, d); cacheable across flow steps."""
        return self._split(self.to_k(context)), self._split(self.to_v(context))

    def forward(self, x: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None = None):
        """x (B, N, dim), kv from project_kv, mask (B, S) bool (True = attend) or None -> (B, N, dim)."""
        k, v = kv
        attn_mask = None if mask is None else mask[:, None, None, :]
        out = F.scaled_dot_product_attention(self._split(self.to_q(x)), k, v, attn_mask=attn_mask)
        return self.dropout(self.to_out(out.transpose(1, 2).flatten(-2)))


class FeedForward(nn.Sequential):
    """Linear -> GELU(tanh) -> Dropout -> Linear -> Dropout."""

    def __init__(self, dim: int, inner: int, dropout: float):
        super().__init__(
            nn.Linear(dim, inner), nn.GELU(approximate="tanh"), nn.Dropout(dropout), nn.Linear(inner, dim),
            nn.Dropout(dropout),
        )


class DiTBlock(nn.Module):
    """x += Drop(Attn(AdaLN(x, temb), kv)); x += FF(LN(x)). Cross-attention when ``cross``."""

    def __init__(self, dim: int, heads: int, ff_mult: int, dropout: float, cross: bool, context_dim: int):
        super().__init__()
        self.cross = cross
        self.norm1 = AdaLayerNorm(dim)
        self.attn = Attention(dim, heads, kv_dim=context_dim if cross else dim, dropout=dropout)
        self.final_dropout = nn.Dropout(dropout)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False)
        self.ff = FeedForward(dim, ff_mult * dim, dropout)

    def forward(self, x, temb, kv=None, mask=None):
        h = self.norm1(x, temb)
        if self.cross:
            out = self.attn(h, kv, mask)
        else:
            out = self.attn(h, self.attn.project_kv(h))
        x = x + self.final_dropout(out)
        return x + self.ff(self.norm3(x))


class DiT(nn.Module):
    """Interleaved cross/self-attention DiT: x (B, N, D), time (B,) long, context (B, S, C) -> (B, N, output_dim)."""

    def __init__(self, cfg: DiTConfig, context_dim: int):
        super().__init__()
        d = cfg.width
        self.cfg = cfg
        self.time_embed = nn.Sequential(nn.Linear(cfg.timestep_dim, d), nn.SiLU(), nn.Linear(d, d))
        self.blocks = nn.ModuleList(
            DiTBlock(d, cfg.num_heads, cfg.ff_mult, cfg.dropout, cross=(i % 2 == 0), context_dim=context_dim)
            for i in range(cfg.num_layers)
        )
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False)
        self.proj_out_1 = nn.Linear(d, 2 * d)
        self.proj_out_2 = nn.Linear(d, cfg.output_dim)

    def context_kv(self, context: torch.Tensor) -> list:
        """Per-block cross-attention K/V of the vision-language tokens (None for self-attention blocks)."""
        return [blk.attn.project_kv(context) if blk.cross else None for blk in self.blocks]

    def forward(self, x, time, context=None, mask=None, kv_cache=None):
        """x (B, N, D); time (B,) discretised flow time; context (B, S, C) or kv_cache from context_kv."""
        if kv_cache is None:
            kv_cache = self.context_kv(context)
        temb = self.time_embed(timestep_sinusoid(time, self.cfg.timestep_dim).to(x.dtype))
        for blk, kv in zip(self.blocks, kv_cache):
            x = blk(x, temb, kv, mask)
        shift, scale = self.proj_out_1(F.silu(temb)).chunk(2, dim=-1)
        x = self.norm_out(x) * (1 + scale[:, None]) + shift[:, None]
        return self.proj_out_2(x)


class ActionHead(nn.Module):
    """State encoder + action encoder (with flow time) + DiT + action decoder -> velocity (B, L, A)."""

    def __init__(self, cfg: DiTConfig, state_dim: int, action_dim: int, horizon: int, context_dim: int):
        super().__init__()
        d = cfg.width
        self.horizon = horizon
        self.state_encoder = nn.Sequential(nn.Linear(state_dim, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, d))
        self.W1 = nn.Linear(action_dim, d)
        self.W2 = nn.Linear(2 * d, d)
        self.W3 = nn.Linear(d, d)
        self.pos_embed = nn.Embedding(cfg.max_positions, d)
        nn.init.normal_(self.pos_embed.weight, std=0.02)
        self.dit = DiT(cfg, context_dim)
        self.decoder = nn.Sequential(
            nn.Linear(cfg.output_dim, cfg.head_hidden), nn.ReLU(), nn.Linear(cfg.head_hidden, action_dim)
        )

    def encode_actions(self, x: torch.Tensor, time: torch.Tensor) -> torch.Tensor:
        """x (B, L, A) noisy actions, time (B,) long -> (B, L, D) with positional embedding."""
        a = self.W1(x)
        tau = action_sinusoid(time[:, None].expand(-1, x.shape[1]), a.shape[-1]).to(a.dtype)
        h = self.W3(F.silu(self.W2(torch.cat([a, tau], dim=-1))))
        pos = torch.arange(x.shape[1], device=x.device)
        return h + self.pos_embed(pos)[None].to(h.dtype)

    def forward(self, state_token, x, time, context=None, mask=None, kv_cache=None):
        """state_token (B, 1, D) from state_encoder; x (B, L, A); time (B,) long -> velocity (B, L, A)."""
        tokens = torch.cat([state_token, self.encode_actions(x, time)], dim=1)
        out = self.dit(tokens, time, context, mask, kv_cache)
        return self.decoder(out[:, -x.shape[1]:])

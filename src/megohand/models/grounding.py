"""Grounding supervision: where the instructed object and its destination are, read from the image tokens.

``GroundingHead`` maps the vision-language tokens at the G x G image-token positions (B, G^2, D) to two logits per
position (instructed object, destination). ``grounding_loss`` is the soft cross-entropy between the softmax over
the G^2 positions and a Gaussian around each target's projected centre, so the tokens must say where the named
object is: text and pixels have to be matched (the synthetic world's instructions name *what*, never *where*).
"""

from __future__ import annotations

import torch
from torch import nn

TARGETS = ("object", "destination")


class GroundingHead(nn.Module):
    """(B, G^2, D) image tokens -> (B, G^2, 2) logits (instructed object, destination)."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, len(TARGETS)))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)


def gaussian_targets(uv: torch.Tensor, grid: int, sigma: float) -> torch.Tensor:
    """Target distributions over the token grid: uv (B, K, 2) in [0, 1] image coordinates (x right, y down; 0 and 1
    at the image's outer edges) -> (B, K, G^2), row-major over (row y, column x), each summing to 1; sigma in cells."""
    centres = (torch.arange(grid, device=uv.device, dtype=uv.dtype) + 0.5) / grid
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    d2 = (cx.reshape(-1) - uv[..., :1]) ** 2 + (cy.reshape(-1) - uv[..., 1:2]) ** 2  # (B, K, G^2)
    logits = -d2 * (grid**2) / (2 * sigma**2)
    return torch.softmax(logits, dim=-1)


def grounding_loss(logits: torch.Tensor, uv: torch.Tensor, valid: torch.Tensor, sigma: float) -> torch.Tensor:
    """Soft cross-entropy over the G^2 positions. logits (B, G^2, K), uv (B, K, 2) in [0, 1], valid (B, K) bool
    -> scalar, the mean over valid (sample, target) pairs (0 when there are none)."""
    B, N, K = logits.shape
    grid = int(round(N**0.5))
    if grid * grid != N:
        raise ValueError(f"grounding needs a square token grid, got {N} image tokens")
    target = gaussian_targets(uv.float().clamp(0, 1), grid, sigma)  # (B, K, N)
    logp = torch.log_softmax(logits.float().transpose(1, 2), dim=-1)  # (B, K, N)
    ce = -(target * logp).sum(-1)  # (B, K)
    w = valid.float()
    return (ce * w).sum() / w.sum().clamp(min=1.0)

"""Grounding supervision: where the instructed object and its destination are, read from the image tokens.

``GroundingHead`` maps the vision-language tokens at the G x G image-token positions (B, G^2, D) to two logits per
position (instructed object, destination); ``QueryGroundingHead`` does it by matching each position against a
query pooled from all the vision-language tokens (the instruction's among them). ``grounding_loss`` is the soft
cross-entropy between the softmax over the G^2 positions and a Gaussian around each target's projected centre, so
the tokens must say where the named object is: text and pixels have to be matched (the synthetic world's
instructions name *what*, never *where*).
``ParseHead`` (optional) says, at every image position, the colour and shape of the object there (or none):
dense supervision of what the picture shows where, from the scene facts (``cell_labels``).
``GroundingTokens`` (optional) turns the head's prediction into one token per target for the action head: the
expected location, the depth there and the peak probability, so the flow head reads where to go as a few numbers;
``GroundingState`` (optional) adds the same numbers to the action head's state token instead.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

TARGETS = ("object", "destination")


class GroundingHead(nn.Module):
    """(B, G^2, D) image tokens -> (B, G^2, 2) logits (instructed object, destination)."""

    def __init__(self, dim: int):
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, len(TARGETS)))

    def forward(self, tokens: torch.Tensor, context: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """tokens (B, G^2, D) -> (B, G^2, 2); context and mask are ignored (the same call as QueryGroundingHead)."""
        return self.net(tokens)


class QueryGroundingHead(nn.Module):
    """(image tokens (B, G^2, D), vision-language tokens (B, S, D), their mask (B, S) bool) -> (B, G^2, 2) logits.

    Per target, a learned query attends over the vision-language tokens (the instruction's tokens among them) and
    each image position's logit is the scaled dot product of its key with that pooled query: the answer is a match
    between what the words ask for and what each position shows, as in open-vocabulary detectors' text-region
    alignment (MDETR, GLIP). Measured by ``benchmarks/grounding_probe.py``: no better than ``GroundingHead``; without
    the referring question it does not read the words either."""

    def __init__(self, dim: int, heads: int = 4):
        super().__init__()
        self.query = nn.Parameter(torch.randn(len(TARGETS), dim) * 0.02)
        self.context_norm = nn.LayerNorm(dim)
        self.pool = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.q = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))
        self.k = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim))

    def forward(self, tokens: torch.Tensor, context: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B = tokens.shape[0]
        ctx = self.context_norm(context)
        query = self.query.to(ctx.dtype).expand(B, -1, -1)
        pooled = self.pool(query, ctx, ctx, key_padding_mask=~mask, need_weights=False)[0]  # (B, K, D)
        return self.k(tokens) @ self.q(pooled).transpose(1, 2) / tokens.shape[-1] ** 0.5  # (B, G^2, K)


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


def teacher_logits(logits: torch.Tensor, uv: torch.Tensor, use: torch.Tensor, sigma: float) -> torch.Tensor:
    """Teacher forcing of the grounding tokens: logits (B, G^2, K), uv (B, K, 2) in [0, 1], use (B, K) bool -> logits
    whose channel k of sample b, where ``use[b, k]``, is the log of the head's training target (``gaussian_targets``
    around uv; its soft-argmax is uv up to the grid's edges), the head's own logits elsewhere."""
    grid = int(round(logits.shape[1] ** 0.5))
    target = torch.log(gaussian_targets(uv.float().clamp(0, 1), grid, sigma).clamp(min=1e-12)).transpose(1, 2)
    return torch.where(use[:, None, :], target.to(logits.dtype), logits)


def expected_locations(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-argmax over the G x G grid: logits (B, G^2, K) -> (uv (B, K, 2) in [0, 1] image coordinates, x right,
    y down, cell centres at (i + 0.5) / G; peak probability (B, K))."""
    B, N, K = logits.shape
    grid = int(round(N**0.5))
    prob = torch.softmax(logits.float().transpose(1, 2), dim=-1)  # (B, K, N)
    centres = (torch.arange(grid, device=logits.device, dtype=prob.dtype) + 0.5) / grid
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    uv = torch.stack([prob @ cx.reshape(-1), prob @ cy.reshape(-1)], dim=-1)
    return uv, prob.amax(dim=-1)


def grounding_features(logits: torch.Tensor, depth: torch.Tensor | None, valid: torch.Tensor | None,
                       max_depth: float) -> torch.Tensor:
    """What the action head reads of the head's answer: logits (B, G^2, K) [+ the depth the model reads (B, 1, S, S) m,
    valid (B,)] -> (B, K, 5) per target (u, v in [0, 1], depth at (u, v) / max_depth, peak probability, depth valid);
    depth entries 0 without depth. Detached: the grounding loss alone trains the head."""
    uv, peak = expected_locations(logits.detach())
    B, K, _ = uv.shape
    z = uv.new_zeros(B, K)
    has = uv.new_zeros(B, K)
    if depth is not None:
        grid = (uv * 2 - 1)[:, :, None]  # (B, K, 1, 2) in grid_sample's [-1, 1], align_corners=False
        z = F.grid_sample(depth.float(), grid, mode="bilinear", align_corners=False)[:, 0, :, 0] / max_depth
        has = (uv.new_ones(B) if valid is None else valid.to(uv.dtype))[:, None].expand(B, K)
        z = z * has
    return torch.cat([uv, z[..., None], peak[..., None], has[..., None]], dim=-1)


class GroundingTokens(nn.Module):
    """Grounding logits (B, G^2, K) [+ the depth the model reads (B, 1, S, S) m, valid (B,)] -> K tokens (B, K, D).

    Per target: ``grounding_features`` through a small MLP, plus a learned embedding of the target. The features are
    detached: the grounding loss alone trains the head, the flow loss trains the use of its answer (the action head
    sees at test time what it saw in training: predictions)."""

    def __init__(self, dim: int, max_depth: float, norm: bool = False):
        super().__init__()
        self.max_depth = max_depth
        self.mlp = nn.Sequential(nn.Linear(5, dim), nn.GELU(), nn.Linear(dim, dim))
        self.target = nn.Parameter(torch.zeros(len(TARGETS), dim))
        # ``norm``: a LayerNorm on the tokens, so that their scale matches the vision-language tokens' (the DiT's
        # cross-attention reads its context unnormalised)
        self.norm = nn.LayerNorm(dim) if norm else None

    def forward(self, logits: torch.Tensor, depth: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        w = self.mlp[0].weight
        feats = grounding_features(logits, depth, valid, self.max_depth).to(w.dtype)  # (B, K, 5)
        tokens = self.mlp(feats) + self.target.to(w.dtype)
        return tokens if self.norm is None else self.norm(tokens)


class GroundingState(nn.Module):
    """Grounding logits (B, G^2, K) [+ depth (B, 1, S, S) m, valid (B,)] -> (B, D), added to the action head's state
    token: the head's answer (``grounding_features`` of every target, concatenated) through a small MLP whose last
    layer starts at zero, so a trained policy fine-tuned with it starts as it was. The state token is a query of the
    DiT's self-attention that every block reads, unlike a context token among a hundred others."""

    def __init__(self, dim: int, hidden: int, max_depth: float):
        super().__init__()
        self.max_depth = max_depth
        self.mlp = nn.Sequential(nn.Linear(5 * len(TARGETS), hidden), nn.GELU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def forward(self, logits: torch.Tensor, depth: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        w = self.mlp[0].weight
        return self.mlp(grounding_features(logits, depth, valid, self.max_depth).flatten(1).to(w.dtype))


class ParseHead(nn.Module):
    """(B, G^2, D) image tokens -> (B, G^2, C + 1 + H + 1) logits: colour (C and "none") then shape (H and "none")."""

    def __init__(self, dim: int, colours: int, shapes: int):
        super().__init__()
        self.colours, self.shapes = colours, shapes
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, colours + 1 + shapes + 1))

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.net(tokens)


def cell_labels(uv: torch.Tensor, attr: torch.Tensor, grid: int, colours: int, shapes: int) -> torch.Tensor:
    """Scene-parsing targets: object centres uv (B, N, 2) in [0, 1] and attributes (B, N, 2) long (colour, shape;
    -1 = no object) -> (B, G^2, 2) long, row-major cells: the attributes of the object whose centre is nearest the
    cell's centre within one cell, else (colours, shapes), the "none" classes."""
    centres = (torch.arange(grid, device=uv.device, dtype=torch.float32) + 0.5) / grid
    cy, cx = torch.meshgrid(centres, centres, indexing="ij")
    cells = torch.stack([cx.reshape(-1), cy.reshape(-1)], dim=-1)  # (G^2, 2)
    d = (cells[None, :, None] - uv.float()[:, None]).norm(dim=-1) * grid  # (B, G^2, N) in cells
    d = d.masked_fill((attr[:, None, :, 0] < 0), float("inf"))
    near, j = d.min(dim=-1)  # (B, G^2)
    picked = torch.gather(attr, 1, j[..., None].expand(-1, -1, 2))  # (B, G^2, 2)
    none = torch.tensor([colours, shapes], device=attr.device)
    return torch.where((near < 1)[..., None], picked, none)


def parse_loss(logits: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor, colours: int) -> torch.Tensor:
    """Cross-entropy of colour and shape per cell: logits (B, G^2, C + 1 + H + 1), labels (B, G^2, 2), valid (B,)
    bool -> scalar, the mean over the valid samples' cells of colour CE + shape CE (0 when none is valid)."""
    c = colours + 1
    ce = F.cross_entropy(logits[..., :c].float().flatten(0, 1), labels[..., 0].flatten(), reduction="none") + \
        F.cross_entropy(logits[..., c:].float().flatten(0, 1), labels[..., 1].flatten(), reduction="none")
    w = valid.float()[:, None].expand(labels.shape[:2]).flatten()
    return (ce * w).sum() / (w.sum().clamp(min=1.0))

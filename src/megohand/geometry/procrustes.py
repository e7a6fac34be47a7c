"""Similarity Procrustes (Umeyama 1991), reflections forbidden."""

from __future__ import annotations

import torch


def similarity_procrustes(A: torch.Tensor, B: torch.Tensor):
    """Best s, R, t with ``s * A @ R^T + t ~= B`` in the least-squares sense.

    Args:
        A, B: (..., N, 3) corresponding points (A is moved onto B).
    Returns:
        s (...,), R (..., 3, 3) with det +1, t (..., 3), and ``A_aligned`` (..., N, 3).
    """
    mu_a, mu_b = A.mean(-2, keepdim=True), B.mean(-2, keepdim=True)
    a, b = A - mu_a, B - mu_b
    K = b.transpose(-1, -2) @ a  # (...,3,3) = sum_i b_i a_i^T
    U, S, Vh = torch.linalg.svd(K)
    d = torch.sign(torch.det(U @ Vh))
    d = torch.where(d == 0, torch.ones_like(d), d)
    D = torch.ones_like(S)
    D[..., 2] = d
    R = U @ torch.diag_embed(D) @ Vh  # rotation applied to a (column vectors)
    var_a = (a * a).sum(dim=(-1, -2))
    s = (S * D).sum(-1) / var_a.clamp_min(torch.finfo(A.dtype).tiny)
    t = mu_b.squeeze(-2) - s[..., None] * (R @ mu_a.transpose(-1, -2))[..., 0]
    aligned = s[..., None, None] * (A @ R.transpose(-1, -2)) + t[..., None, :]
    return s, R, t, aligned

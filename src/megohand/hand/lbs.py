"""Batched linear blend skinning for a 16-joint MANO-format hand (torch, differentiable).

Same maths as MANO / smplx ``lbs``, arranged for speed:

* rest joints come from precomputed ``J_template`` (16,3) and ``J_shapedirs`` (16*3, Nb), so the
  778-vertex regression is never run per call (``J_regressor`` is linear);
* the kinematic chain is composed **level by level** (MANO's tree has depth 3: one batched
  3x3 matmul per level instead of 15 sequential 4x4 products);
* skinning uses 3x4 transforms (no homogeneous row) in one (V,16) @ (...,16,12) product.
"""

from __future__ import annotations

import torch


class KinematicChain:
    """A joint tree grouped by depth so forward kinematics runs one batched step per level.

    Args:
        parents: parent index per joint, ``parents[0] == -1`` (the root), one root only.
    """

    def __init__(self, parents: list[int]):
        parents = [int(p) for p in parents]
        if parents[0] != -1 or any(p < 0 for p in parents[1:]):
            raise ValueError(f"kinematic tree must have joint 0 as its only root, got parents {parents}")
        depth = []
        for j in range(len(parents)):
            d, p = 0, parents[j]
            while p >= 0:
                d, p = d + 1, parents[p]
                if d > len(parents):
                    raise ValueError(f"kinematic tree has a cycle: parents {parents}")
            depth.append(d)
        self.parents = parents
        self.levels: list[list[int]] = [[0]]
        for d in range(1, max(depth) + 1):
            self.levels.append([j for j in range(len(parents)) if depth[j] == d])
        # parent position inside the previous level, per level >= 1
        self.local_parents = [
            [self.levels[d - 1].index(parents[j]) for j in self.levels[d]] for d in range(1, len(self.levels))
        ]
        order = [j for lev in self.levels for j in lev]
        self.inverse_order = sorted(range(len(order)), key=lambda i: order[i])
        n, D = len(self.levels[1]), len(self.levels) - 1
        self.finger_major = all(
            len(lev) == n and lev == [1 + i * D + d for i in range(n)] for d, lev in enumerate(self.levels[1:])
        )

    def forward_kinematics(self, R: torch.Tensor, J: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Global joint frames from local rotations.

        Args:
            R: (..., J, 3, 3) local rotations (row 0 = global orientation about joint 0).
            J: (..., J, 3) rest joint positions [m].
        Returns:
            G_R (..., J, 3, 3) global rotations, G_t (..., J, 3) posed joint positions [m]
            (before ``transl``); the root pivots about its rest position J[0].
        """
        # G_R[j] = G_R[p] R[j];  G_t[j] = G_t[p] + G_R[p] (J[j] - J[p]),  one level at a time.
        GR = [R[..., 0:1, :, :]]
        Gt = [J[..., 0:1, :]]
        prev_ids = [0]
        for ids, par in zip(self.levels[1:], self.local_parents):
            prev_R, prev_t = GR[-1], Gt[-1]
            if len(prev_ids) > 1 and par != list(range(len(par))):
                prev_R, prev_t = prev_R[..., par, :, :], prev_t[..., par, :]
            Jp = J[..., 0:1, :] if len(prev_ids) == 1 else _take(J, [self.parents[j] for j in ids], -2)
            bone = _take(J, ids, -2) - Jp
            GR.append(prev_R @ _take(R, ids, -3))
            Gt.append(prev_t + (prev_R @ bone.unsqueeze(-1)).squeeze(-1))
            prev_ids = ids
        if self.finger_major:  # MANO: level d holds joint 1 + 3i + (d-1) of finger i -> interleave
            G_R = torch.cat([GR[0], torch.stack(GR[1:], dim=-3).flatten(-4, -3)], dim=-3)
            G_t = torch.cat([Gt[0], torch.stack(Gt[1:], dim=-2).flatten(-3, -2)], dim=-2)
            return G_R, G_t
        G_R, G_t = torch.cat(GR, dim=-3), torch.cat(Gt, dim=-2)
        if self.inverse_order != list(range(len(self.inverse_order))):
            G_R, G_t = _take(G_R, self.inverse_order, -3), _take(G_t, self.inverse_order, -2)
        return G_R, G_t


def _take(x: torch.Tensor, ids: list[int], dim: int) -> torch.Tensor:
    """x indexed along ``dim`` by ``ids``: a strided view when ids are an arithmetic progression."""
    if len(ids) == 1:
        return x.narrow(dim, ids[0], 1)
    step = ids[1] - ids[0]
    if step > 0 and all(b - a == step for a, b in zip(ids, ids[1:])):
        idx = [slice(None)] * x.dim()
        idx[dim] = slice(ids[0], ids[-1] + 1, step)
        return x[tuple(idx)]
    return x.index_select(dim, torch.tensor(ids, device=x.device))


def rest_joints(betas: torch.Tensor, J_template: torch.Tensor, J_shapedirs: torch.Tensor) -> torch.Tensor:
    """Shaped rest joints: betas (..., Nb) -> (..., J, 3) [m]; J_shapedirs is (J*3, Nb)."""
    return J_template + (betas @ J_shapedirs.T).unflatten(-1, J_template.shape)


def skin(
    G_R: torch.Tensor, G_t: torch.Tensor, J: torch.Tensor, v_posed: torch.Tensor, weights: torch.Tensor
) -> torch.Tensor:
    """LBS: v = sum_k w_k (G_R_k (v - J_k) + G_t_k).

    Args:
        G_R: (..., J, 3, 3); G_t: (..., J, 3); J: (..., J, 3) rest joints; v_posed (..., V, 3);
        weights: (V, J), rows sum to 1.
    Returns:
        (..., V, 3) skinned vertices [m].
    """
    t = G_t - (G_R @ J.unsqueeze(-1)).squeeze(-1)  # (..., J, 3) rest-pose removal
    A = torch.cat([G_R, t.unsqueeze(-1)], dim=-1).flatten(-2)  # (..., J, 12)
    T = (weights @ A).unflatten(-1, (3, 4))  # (..., V, 3, 4)
    return (T[..., :3] * v_posed.unsqueeze(-2)).sum(-1) + T[..., 3]

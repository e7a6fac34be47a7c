"""Model-free chunk policies, the reference points every model number is compared with.

Both satisfy :class:`megohand.inference.rollout.Policy` (they ignore image, text, depth and steps):

* :class:`StaticPolicy`: the hand stays at the current state (the "static initial pose" baseline).
* :class:`ConstantVelocityPolicy`: extrapolates the current per-frame velocity: translation linearly,
  every rotation (wrist and 15 finger joints) at a constant body-frame angular velocity,
  ``R_{k+i} = R_k exp(i w)``, ``w = log(R_prev^T R_k) / gap``.

What the constant-velocity baseline may see: a policy sees only the current state, so the velocity
needs one earlier state. At its first query it uses ``prev_state``, the ground-truth state one frame
before the initial frame when the caller has it (evaluation passes GT h_{k-1}; NaN rows or None mean
"unknown" and give zero velocity, i.e. the static baseline). Later queries use the state it was
given at its previous query, ``stride`` frames earlier (in a closed loop: its own fed-back output).
It never sees ground truth beyond h_{k-1} and h_k.
"""

from __future__ import annotations

import torch

from megohand.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle
from megohand.hand.vector import HandRotations, encode_chunk, rotations_to_state, state_to_rotations


class StaticPolicy:
    """Predicts no motion: every future frame equals the current state. horizon: L."""

    def __init__(self, horizon: int = 16):
        self.horizon = horizon

    def predict_chunk(self, image, instructions, state, depth=None, steps=None, generator=None) -> torch.Tensor:
        """state (B, 109) -> (B, L, 99)."""
        future = state.unsqueeze(-2).expand(*state.shape[:-1], self.horizon, state.shape[-1])
        return encode_chunk(state, future)


def _extrapolate(R_prev: torch.Tensor, R_cur: torch.Tensor, gap: float, L: int) -> torch.Tensor:
    """(..., 3, 3) x2 -> (..., L, 3, 3): R_cur exp(i w), i = 1..L, w = log(R_prev^T R_cur) / gap."""
    w = matrix_to_axis_angle(R_prev.transpose(-1, -2) @ R_cur) / gap  # (..., 3)
    i = torch.arange(1, L + 1, dtype=w.dtype, device=w.device)
    steps = axis_angle_to_matrix(w.unsqueeze(-2) * i[:, None])  # (..., L, 3, 3)
    return R_cur.unsqueeze(-3) @ steps


class ConstantVelocityPolicy:
    """Constant-velocity extrapolation of translation and all 16 rotations (see the module docstring).

    Args:
        horizon: L, frames per chunk.
        prev_state: (B, 109) state one frame before the first query's state, or None / NaN rows.
        stride: frames between successive queries (the gap to the state remembered from the last call).
    """

    def __init__(self, horizon: int = 16, prev_state: torch.Tensor | None = None, stride: int = 1):
        self.horizon = horizon
        self.stride = stride
        self._prev = prev_state
        self._gap = 1

    def predict_chunk(self, image, instructions, state, depth=None, steps=None, generator=None) -> torch.Tensor:
        """state (B, 109) -> (B, L, 99)."""
        prev = state if self._prev is None else self._prev.to(state)
        known = ~torch.isnan(prev).any(-1, keepdim=True)
        prev = torch.where(known, prev, state)
        cur_h, prev_h = state_to_rotations(state), state_to_rotations(prev)
        L, gap = self.horizon, float(self._gap)
        i = torch.arange(1, L + 1, dtype=state.dtype, device=state.device)[:, None]
        v = (cur_h.transl - prev_h.transl) / gap
        future = HandRotations(
            wrist_R=_extrapolate(prev_h.wrist_R, cur_h.wrist_R, gap, L),
            fingers_R=_extrapolate(prev_h.fingers_R, cur_h.fingers_R, gap, L).transpose(-4, -3),
            betas=cur_h.betas.unsqueeze(-2).expand(*cur_h.betas.shape[:-1], L, cur_h.betas.shape[-1]),
            transl=cur_h.transl.unsqueeze(-2) + i * v.unsqueeze(-2),
        )
        self._prev, self._gap = state, self.stride
        return encode_chunk(state, rotations_to_state(future))

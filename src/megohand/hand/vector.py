"""The model's hand vector and its relative action chunk (one place for the layout).

State (109 numbers, right hand, camera frame), paper slice order ``[theta | beta | r | t]``:

=========  =======  ==================================================================
slice      dims     content
=========  =======  ==================================================================
0:90       15 x 6   finger rotations, 6D (first two columns of R), MANO joint order,
                    absolute local rotations (flat_hand_mean=True)
90:100     10       betas
100:106    6        wrist (global) rotation, 6D
106:109    3        smplx ``transl`` [m] (wrist joint = J0(betas) + transl)
=========  =======  ==================================================================

Action (99 numbers per future frame k+i, i = 1..L), relative to the current state h_k:

=========  =======  ==================================================================
0:90       15 x 6   finger rotations at k+i, absolute local 6D (as in the state)
90:96      6        relative wrist rotation ``R_k^T R_{k+i}`` in 6D (identity = no motion)
96:99      3        ``t_{k+i} - t_k`` in the camera frame [m]
=========  =======  ==================================================================

Betas are not predicted: the decoded chunk repeats the betas of h_k. Because J0 depends only on
betas, ``t_{k+i} - t_k`` is also the wrist-joint displacement.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from megohand.geometry.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_rot6d,
    rot6d_to_matrix,
)

STATE_DIM = 109
ACTION_DIM = 99
SLICE_FINGERS = slice(0, 90)
SLICE_BETAS = slice(90, 100)
SLICE_WRIST_ROT = slice(100, 106)
SLICE_TRANSL = slice(106, 109)
ACTION_SLICE_FINGERS = slice(0, 90)
ACTION_SLICE_WRIST_ROT = slice(90, 96)
ACTION_SLICE_TRANSL = slice(96, 99)


@dataclass
class HandParams:
    """MANO-style parameters of one side, any leading batch shape (...).

    global_orient (..., 3) axis-angle; hand_pose (..., 15, 3) axis-angle, absolute local
    rotations; betas (..., 10); transl (..., 3) metres, smplx meaning.
    """

    global_orient: torch.Tensor
    hand_pose: torch.Tensor
    betas: torch.Tensor
    transl: torch.Tensor

    def to(self, *args, **kwargs) -> "HandParams":
        return HandParams(*(x.to(*args, **kwargs) for x in self.as_tuple()))

    def as_tuple(self):
        return self.global_orient, self.hand_pose, self.betas, self.transl


@dataclass
class HandRotations:
    """Hand parameters with rotation matrices: what TOF averages and metrics compare.

    wrist_R (..., 3, 3); fingers_R (..., 15, 3, 3); betas (..., 10); transl (..., 3) [m].
    """

    wrist_R: torch.Tensor
    fingers_R: torch.Tensor
    betas: torch.Tensor
    transl: torch.Tensor

    def to_params(self) -> HandParams:
        return HandParams(
            matrix_to_axis_angle(self.wrist_R), matrix_to_axis_angle(self.fingers_R), self.betas, self.transl
        )

    @staticmethod
    def from_params(p: HandParams) -> "HandRotations":
        return HandRotations(
            axis_angle_to_matrix(p.global_orient), axis_angle_to_matrix(p.hand_pose), p.betas, p.transl
        )


def rotations_to_state(h: HandRotations) -> torch.Tensor:
    """HandRotations (...) -> state (..., 109)."""
    fingers = matrix_to_rot6d(h.fingers_R).flatten(-2)
    return torch.cat([fingers, h.betas, matrix_to_rot6d(h.wrist_R), h.transl], dim=-1)


def wrist_rotations(states: torch.Tensor) -> torch.Tensor:
    """states (..., 109) -> wrist rotation matrices (..., 3, 3) (6D decoded by Gram-Schmidt)."""
    return rot6d_to_matrix(states[..., SLICE_WRIST_ROT])


def state_to_rotations(state: torch.Tensor) -> HandRotations:
    """state (..., 109) -> HandRotations (6D decoded by Gram-Schmidt)."""
    fingers = rot6d_to_matrix(state[..., SLICE_FINGERS].unflatten(-1, (15, 6)))
    return HandRotations(wrist_rotations(state), fingers, state[..., SLICE_BETAS], state[..., SLICE_TRANSL])


def params_to_state(p: HandParams) -> torch.Tensor:
    """HandParams (...) -> state (..., 109)."""
    return rotations_to_state(HandRotations.from_params(p))


def state_to_params(state: torch.Tensor) -> HandParams:
    """state (..., 109) -> HandParams (...)."""
    return state_to_rotations(state).to_params()


def encode_chunk(state: torch.Tensor, future: torch.Tensor, state_R: torch.Tensor | None = None,
                 future_R: torch.Tensor | None = None) -> torch.Tensor:
    """Relative action chunk from absolute states.

    Args:
        state: (..., 109) current state h_k.
        future: (..., L, 109) absolute states h_{k+1..k+L}.
        state_R, future_R: their ``wrist_rotations`` (..., 3, 3) and (..., L, 3, 3) when already at hand (the
            training windows decode each episode's once, not every sample's).
    Returns:
        (..., L, 99) actions (layout in the module docstring).
    """
    cur_R = wrist_rotations(state) if state_R is None else state_R  # only the wrist is relative: fingers are copied
    fut_R = wrist_rotations(future) if future_R is None else future_R
    rel_R = cur_R.unsqueeze(-3).transpose(-1, -2) @ fut_R
    dt = future[..., SLICE_TRANSL] - state[..., SLICE_TRANSL].unsqueeze(-2)
    return torch.cat([future[..., SLICE_FINGERS], matrix_to_rot6d(rel_R), dt], dim=-1)


def decode_chunk_rotations(state: torch.Tensor, action: torch.Tensor) -> HandRotations:
    """Absolute hand rotations of a chunk: state (..., 109), action (..., L, 99) -> HandRotations (..., L)."""
    cur = state_to_rotations(state)
    L = action.shape[-2]
    fingers = rot6d_to_matrix(action[..., ACTION_SLICE_FINGERS].unflatten(-1, (15, 6)))
    wrist = cur.wrist_R.unsqueeze(-3) @ rot6d_to_matrix(action[..., ACTION_SLICE_WRIST_ROT])
    transl = cur.transl.unsqueeze(-2) + action[..., ACTION_SLICE_TRANSL]
    betas = cur.betas.unsqueeze(-2).expand(*cur.betas.shape[:-1], L, cur.betas.shape[-1])
    return HandRotations(wrist, fingers, betas, transl)


def decode_chunk(state: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
    """Absolute states of a chunk: state (..., 109), action (..., L, 99) -> (..., L, 109)."""
    return rotations_to_state(decode_chunk_rotations(state, action))


def perturb_start(state: torch.Tensor, action: torch.Tensor, transl: torch.Tensor,
                  rot: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A corrective chunk (DART, Laskey et al. 2017): the same window started from a displaced wrist, its chunk
    returning to the recorded path by the chunk's end.

    state (..., 109) and its action chunk (..., L, 99); transl (..., 3) [m] added to the wrist translation, rot
    (..., 3) axis-angle [rad] applied in the wrist's own frame (R' = R exp(rot)). Returns (state', action') whose
    frame i = 1..L lies at the recorded frame displaced by (1 - i / L) of the start's displacement: translation
    t_i + (1 - i / L) transl, rotation R_i exp((1 - i / L) rot); fingers and betas unchanged. Zero displacements
    give back the inputs.
    """
    L = action.shape[-2]
    rest = 1 - torch.arange(1, L + 1, dtype=action.dtype, device=action.device) / L  # (L,) displacement left
    R = wrist_rotations(state)
    delta = axis_angle_to_matrix(rot)  # (..., 3, 3)
    state_p = state.clone()
    state_p[..., SLICE_WRIST_ROT] = matrix_to_rot6d(R @ delta)
    state_p[..., SLICE_TRANSL] = state[..., SLICE_TRANSL] + transl
    rel = rot6d_to_matrix(action[..., ACTION_SLICE_WRIST_ROT])  # (..., L, 3, 3) = R^T R_i
    back = axis_angle_to_matrix(rest[:, None] * rot.unsqueeze(-2))  # (..., L, 3, 3) = exp((1 - i / L) rot)
    action_p = action.clone()
    action_p[..., ACTION_SLICE_WRIST_ROT] = matrix_to_rot6d(delta.transpose(-1, -2).unsqueeze(-3) @ rel @ back)
    action_p[..., ACTION_SLICE_TRANSL] = action[..., ACTION_SLICE_TRANSL] - (1 - rest)[:, None] * transl.unsqueeze(-2)
    return state_p, action_p

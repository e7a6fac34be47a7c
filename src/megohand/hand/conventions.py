"""Conversions from the datasets' MANO conventions to the project's canonical one (the rules that
``megohand.data.sources.common.canonical_hands`` applies).

Canonical: axis-angle, **absolute** local joint rotations (smplx ``flat_hand_mean=True``),
``use_pca=False``, smplx ``transl`` (posed wrist joint at ``J0(betas) + transl``), metres.

* flat_hand_mean: ``pose_False = pose_True - hands_mean`` (smplx adds ``hands_mean`` when False).
* PCA: ``pose_False = pca @ hands_components[:n]`` (relative to the mean, as smplx / HOT3D).
* quaternions (OakInk2): 16 x wxyz, row 0 = global orient, rows 1..15 = MANO joints.
* wrist-position translation (TACO, OakInk2): ``transl = tsl - J0(betas)``.
* joint orders: index arrays in :mod:`megohand.hand.joints`, applied by :func:`remap_joints`.

All functions are torch, batched over leading dims and differentiable.
"""

from __future__ import annotations

import numpy as np
import torch

from megohand.geometry.rotations import matrix_to_axis_angle, quat_wxyz_to_matrix


def _as45(pose: torch.Tensor) -> tuple[torch.Tensor, bool]:
    if pose.shape[-2:] == (15, 3):
        return pose.flatten(-2), True
    if pose.shape[-1] != 45:
        raise ValueError(f"hand pose must be (..., 45) or (..., 15, 3), got {tuple(pose.shape)}")
    return pose, False


def _like(pose45: torch.Tensor, was_15x3: bool) -> torch.Tensor:
    return pose45.unflatten(-1, (15, 3)) if was_15x3 else pose45


def flat_to_mean_relative(hand_pose: torch.Tensor, hands_mean: torch.Tensor) -> torch.Tensor:
    """Absolute pose (flat_hand_mean=True) -> smplx flat_hand_mean=False input: ``pose - hands_mean``.

    hand_pose (..., 45) or (..., 15, 3) [rad]; hands_mean (45,). Same shape out.
    """
    p, s = _as45(hand_pose)
    return _like(p - hands_mean.to(p), s)


def mean_relative_to_flat(hand_pose: torch.Tensor, hands_mean: torch.Tensor) -> torch.Tensor:
    """smplx flat_hand_mean=False pose (ARCTIC, HOT3D) -> absolute pose: ``pose + hands_mean``."""
    p, s = _as45(hand_pose)
    return _like(p + hands_mean.to(p), s)


def pca_to_full(
    pca: torch.Tensor,
    ncomps: int | None,
    hands_components: torch.Tensor,
    hands_mean: torch.Tensor | None = None,
) -> torch.Tensor:
    """PCA pose coefficients -> 45-D axis-angle pose (what smplx ``use_pca=True`` does).

    Args:
        pca: (..., ncomps) coefficients of the first ncomps components.
        ncomps: number of components (checked against ``pca``; None = ``pca.shape[-1]``).
        hands_components: (45, 45) MANO ``hands_components`` (rows are components), e.g.
            ``hand.hands_components``.
        hands_mean: if given, add it (result absolute, flat_hand_mean=True, the canonical form);
            if None the result is relative to the mean (smplx's ``flat_hand_mean=False`` input).
    Returns:
        (..., 45) [rad].
    """
    n = pca.shape[-1] if ncomps is None else int(ncomps)
    if pca.shape[-1] != n or not 0 < n <= hands_components.shape[0]:
        raise ValueError(f"pca has {pca.shape[-1]} coefficients, ncomps={ncomps}, {hands_components.shape[0]} components")
    pose = pca @ hands_components[:n].to(pca)
    return pose if hands_mean is None else pose + hands_mean.to(pose)


def full_to_pca(
    hand_pose: torch.Tensor, ncomps: int, hands_components: torch.Tensor, hands_mean: torch.Tensor | None = None
) -> torch.Tensor:
    """45-D pose -> first ``ncomps`` PCA coefficients (least squares; exact inverse of
    :func:`pca_to_full` when the pose lies in their span). ``hands_mean`` as in :func:`pca_to_full`."""
    p, _ = _as45(hand_pose)
    if hands_mean is not None:
        p = p - hands_mean.to(p)
    C = hands_components[:ncomps].to(p)  # (n, 45)
    return p @ torch.linalg.pinv(C)  # (..., 45) @ (45, n)


def quat_wxyz_to_axis_angle(quats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """OakInk2-style 16 quaternions (..., 16, 4) **wxyz** -> (global_orient (..., 3), hand_pose (..., 15, 3))."""
    if quats.shape[-2:] != (16, 4):
        raise ValueError(f"expected (..., 16, 4) wxyz quaternions, got {tuple(quats.shape)}")
    aa = matrix_to_axis_angle(quat_wxyz_to_matrix(quats))
    return aa[..., 0, :], aa[..., 1:, :]


def wrist_to_transl(tsl: torch.Tensor, J0: torch.Tensor) -> torch.Tensor:
    """Wrist-position translation (TACO ``hand_trans``, OakInk2 ``tsl``) -> smplx transl: ``tsl - J0``.

    tsl (..., 3) [m] posed wrist position; J0 (..., 3) rest wrist joint ``hand.rest_joints(betas)[..., 0, :]``.
    """
    return tsl - J0


def transl_to_wrist(transl: torch.Tensor, J0: torch.Tensor) -> torch.Tensor:
    """smplx transl -> posed wrist position: ``transl + J0`` [m]."""
    return transl + J0


def remap_joints(joints: torch.Tensor, index: np.ndarray | torch.Tensor, fill: float = float("nan")) -> torch.Tensor:
    """Reorder joints (..., J_src, C) with an index array from :mod:`megohand.hand.joints`.

    Entries of -1 (no counterpart in the source order) are filled with ``fill`` (NaN by default).
    Returns (..., len(index), C).
    """
    idx = torch.as_tensor(np.asarray(index), dtype=torch.long, device=joints.device)
    out = joints.index_select(-2, idx.clamp(min=0))
    missing = idx < 0
    if bool(missing.any()):
        out = out.masked_fill(missing.view(*([1] * (out.dim() - 2)), -1, 1), fill)
    return out

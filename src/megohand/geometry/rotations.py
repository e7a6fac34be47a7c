"""The project's one rotation convention.

* Rotation matrices act on column vectors: ``x' = R @ x``; shape (..., 3, 3).
* Axis-angle (rotation vector): (..., 3), angle = norm in radians.
* 6D: the **first two columns** of R, concatenated column-major as
  ``[R[:,0], R[:,1]]`` -> (..., 6) (Zhou et al. 2019); decoded by Gram-Schmidt.
* Quaternions only at dataset boundaries, always named by order: ``wxyz`` (real first; HOT3D,
  OakInk2) or ``xyzw`` (scipy, roma). Nothing inside the project keeps quaternions.

roma does the numerics (batched, differentiable, numerically careful); we only pin the layouts.
"""

from __future__ import annotations

from typing import Literal

import roma
import torch

RotationFormat = Literal["axis_angle", "rot6d", "matrix"]


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """(..., 3) rotation vectors [rad] -> (..., 3, 3) rotation matrices."""
    return roma.rotvec_to_rotmat(aa)


def matrix_to_axis_angle(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) rotation matrices -> (..., 3) rotation vectors, angle in [0, pi]."""
    return roma.rotmat_to_rotvec(R)


def matrix_to_rot6d(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 6) = [first column, second column]."""
    return torch.cat([R[..., :, 0], R[..., :, 1]], dim=-1)


def rot6d_to_matrix(r6: torch.Tensor) -> torch.Tensor:
    """(..., 6) = [a1, a2] -> (..., 3, 3) by Gram-Schmidt: b1 = a1/|a1|, b2 = a2 - (b1.a2) b1
    normalised, b3 = b1 x b2; R = [b1 b2 b3] as columns."""
    a = torch.stack([r6[..., 0:3], r6[..., 3:6]], dim=-1)  # (..., 3, 2) columns
    return roma.special_gramschmidt(a)


def quat_xyzw_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternion x, y, z, w (normalised here) -> (..., 3, 3)."""
    return roma.unitquat_to_rotmat(q / q.norm(dim=-1, keepdim=True))


def quat_wxyz_to_matrix(q: torch.Tensor) -> torch.Tensor:
    """(..., 4) quaternion w, x, y, z (real first) -> (..., 3, 3)."""
    return quat_xyzw_to_matrix(torch.cat([q[..., 1:4], q[..., 0:1]], dim=-1))


def matrix_to_quat_xyzw(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) unit quaternion x, y, z, w."""
    return roma.rotmat_to_unitquat(R)


def matrix_to_quat_wxyz(R: torch.Tensor) -> torch.Tensor:
    """(..., 3, 3) -> (..., 4) unit quaternion w, x, y, z."""
    q = roma.rotmat_to_unitquat(R)
    return torch.cat([q[..., 3:4], q[..., 0:3]], dim=-1)


def to_matrix(rot: torch.Tensor, fmt: RotationFormat) -> torch.Tensor:
    """Any supported format -> (..., 3, 3). ``fmt`` names the layout of the last dims."""
    if fmt == "axis_angle":
        return axis_angle_to_matrix(rot)
    if fmt == "rot6d":
        return rot6d_to_matrix(rot)
    if fmt == "matrix":
        return rot
    raise ValueError(f"unknown rotation format {fmt!r}; expected axis_angle, rot6d or matrix")


def project_to_so3(M: torch.Tensor) -> torch.Tensor:
    """Nearest rotation in Frobenius norm to each (..., 3, 3) matrix: U diag(1, 1, det(UV^T)) V^T.

    The determinant fix keeps the result a rotation (never a reflection). Batched in one SVD call.
    """
    return roma.special_procrustes(M)


def geodesic_angle(R1: torch.Tensor, R2: torch.Tensor) -> torch.Tensor:
    """Angle [rad, 0..pi] of R1^T R2 for (..., 3, 3) inputs, stable near 0 and near pi.

    Uses atan2(|vee(R - R^T)|/2, (tr R - 1)/2) rather than arccos, which loses precision near 0.
    """
    R = R1.transpose(-1, -2) @ R2
    tr = R[..., 0, 0] + R[..., 1, 1] + R[..., 2, 2]
    vee = torch.stack(
        [R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]], dim=-1
    )
    return torch.atan2(vee.norm(dim=-1) / 2, (tr - 1) / 2)

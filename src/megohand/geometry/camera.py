"""Pinhole cameras (OpenCV: x right, y down, z forward) and rigid frame changes."""

from __future__ import annotations

import torch


def project_points(X, K):
    """Pinhole projection. X (..., N, 3) camera-frame metres, K (..., 3, 3) -> (..., N, 2) pixels; torch tensors or
    numpy arrays (the data loaders project a few points per sample, where a round trip through torch costs more
    than the projection)."""
    uvw = X @ K.swapaxes(-1, -2)
    return uvw[..., :2] / uvw[..., 2:3]


def transform_points(T: torch.Tensor, X: torch.Tensor) -> torch.Tensor:
    """Apply 4x4 rigid transforms T (..., 4, 4) to points X (..., N, 3)."""
    return X @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def invert_rigid(T: torch.Tensor) -> torch.Tensor:
    """Inverse of rigid 4x4 transforms (..., 4, 4)."""
    R, t = T[..., :3, :3], T[..., :3, 3]
    out = torch.zeros_like(T)
    out[..., :3, :3] = R.transpose(-1, -2)
    out[..., :3, 3] = -(R.transpose(-1, -2) @ t[..., None])[..., 0]
    out[..., 3, 3] = 1
    return out


def hand_to_camera(
    global_orient_R: torch.Tensor, transl: torch.Tensor, J0: torch.Tensor, T_cam_from_world: torch.Tensor
):
    """Move MANO global rotation and smplx ``transl`` from world to camera frame.

    MANO's global rotation pivots about the rest wrist joint ``J0(betas)``, so the posed wrist sits
    at ``J0 + transl``. With ``T_cam_from_world = [R_cw | t_cw]``:
    ``R_cam = R_cw @ R_world`` and ``transl_cam = R_cw (J0 + transl_w) + t_cw - J0``.

    Args:
        global_orient_R: (..., 3, 3) world-frame global rotation.
        transl: (..., 3) world-frame smplx translation [m].
        J0: (..., 3) rest wrist joint for the hand's betas [m].
        T_cam_from_world: (..., 4, 4).
    Returns:
        (R_cam (..., 3, 3), transl_cam (..., 3)).
    """
    R_cw, t_cw = T_cam_from_world[..., :3, :3], T_cam_from_world[..., :3, 3]
    R_cam = R_cw @ global_orient_R
    wrist_cam = (R_cw @ (J0 + transl)[..., None])[..., 0] + t_cw
    return R_cam, wrist_cam - J0

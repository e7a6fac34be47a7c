"""Hand-motion metrics (definitions and units: docs/metrics.md).

Every function takes torch tensors in metres / radians / seconds, any leading batch shape, and an
optional boolean ``mask`` over the leading dims (False = invalid frame, excluded; invalid frames may
hold NaN). ``reduction="mean"`` returns the masked mean as a 0-dim tensor, ``"none"`` the per-frame
values (invalid ones set to NaN). Positions come out in metres; :func:`hand_metrics` converts to the
paper's units (cm, rad, plus degrees for MRE).

Shapes: points (..., N, 3) (joints, N = 21, or vertices, N = 778); rotations (..., 16, 3, 3);
sequences put time at dim -3 for points ((..., T, N, 3)) and at dim -2 for trajectories ((..., T, 3)).
"""

from __future__ import annotations

import math
from typing import Literal

import torch

from megohand.geometry.procrustes import similarity_procrustes
from megohand.geometry.rotations import geodesic_angle, to_matrix

Reduction = Literal["mean", "none"]


def _reduce(err: torch.Tensor, mask: torch.Tensor | None, reduction: Reduction) -> torch.Tensor:
    """Masked mean of ``err`` (...) over all dims, or per-element values with NaN where masked."""
    if mask is not None:
        mask = torch.as_tensor(mask, device=err.device).bool()
        if mask.shape != err.shape:
            raise ValueError(f"mask shape {tuple(mask.shape)} does not match the frames {tuple(err.shape)}")
    if reduction == "none":
        return err if mask is None else torch.where(mask, err, torch.full_like(err, math.nan))
    if reduction != "mean":
        raise ValueError(f"unknown reduction {reduction!r}; expected 'mean' or 'none'")
    if mask is None:
        return err.mean()
    n = mask.sum()
    if n == 0:
        return torch.full((), math.nan, dtype=err.dtype, device=err.device)
    return torch.where(mask, err, torch.zeros_like(err)).sum() / n


def _check_pair(pred: torch.Tensor, gt: torch.Tensor, what: str) -> None:
    if pred.shape != gt.shape:
        raise ValueError(f"{what}: pred shape {tuple(pred.shape)} != gt shape {tuple(gt.shape)}")
    if pred.shape[-1] != 3:
        raise ValueError(f"{what}: expected (..., 3) points, got {tuple(pred.shape)}")


def _zero_invalid(x: torch.Tensor, mask: torch.Tensor | None, ndim_item: int) -> torch.Tensor:
    """Replace items of invalid frames (and any NaN inside them) by zeros, so numerics stay finite."""
    if mask is None:
        return x
    m = torch.as_tensor(mask, device=x.device).bool().reshape(mask.shape + (1,) * ndim_item)
    return torch.where(m, x, torch.zeros_like(x))


def point_error(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    """Mean Euclidean distance over points: (..., N, 3) x2 -> (...) [m]."""
    _check_pair(pred, gt, "point_error")
    return (pred - gt).norm(dim=-1).mean(-1)


def mpjpe(pred, gt, mask=None, reduction: Reduction = "mean") -> torch.Tensor:
    """Absolute MPJPE [m]: mean over joints and frames of ||pred - gt|| in the camera frame.

    pred, gt: (..., J, 3) joints [m]; mask: (...) bool.
    """
    return _reduce(point_error(pred, gt), mask, reduction)


def mpjpe_rr(pred, gt, mask=None, reduction: Reduction = "mean", root: int = 0) -> torch.Tensor:
    """Root-relative MPJPE [m]: the joint ``root`` (wrist) is subtracted from both before the norm.

    pred, gt: (..., J, 3) joints [m]; mask: (...) bool.
    """
    _check_pair(pred, gt, "mpjpe_rr")
    return _reduce(point_error(pred - pred[..., root : root + 1, :], gt - gt[..., root : root + 1, :]), mask, reduction)


def pa_point_error(pred: torch.Tensor, gt: torch.Tensor, mask=None) -> torch.Tensor:
    """Per-item mean point error after similarity Procrustes (Umeyama, no reflection), in float64.

    pred, gt: (..., N, 3) -> (...) [m] in pred's dtype. The transform is fitted per item on all N points.
    """
    _check_pair(pred, gt, "pa_point_error")
    a = _zero_invalid(pred.double(), mask, 2)
    b = _zero_invalid(gt.double(), mask, 2)
    _, _, _, aligned = similarity_procrustes(a, b)
    return (aligned - b).norm(dim=-1).mean(-1).to(pred.dtype)


def mpjpe_pa(pred, gt, mask=None, reduction: Reduction = "mean") -> torch.Tensor:
    """PA-MPJPE [m]: per-frame similarity Procrustes of pred onto gt (reflections forbidden), then MPJPE.

    pred, gt: (..., J, 3) joints [m]; mask: (...) bool. Computed in float64.
    """
    return _reduce(pa_point_error(pred, gt, mask), mask, reduction)


def mpve(pred, gt, mask=None, reduction: Reduction = "mean") -> torch.Tensor:
    """MPVE [m]: absolute mean per-vertex error. pred, gt: (..., V, 3) vertices [m]; mask: (...) bool."""
    return _reduce(point_error(pred, gt), mask, reduction)


def mpve_pa(pred, gt, mask=None, reduction: Reduction = "mean") -> torch.Tensor:
    """PA-MPVE [m]: per-frame similarity Procrustes fitted on the vertices, then MPVE (float64)."""
    return _reduce(pa_point_error(pred, gt, mask), mask, reduction)


def mwte(pred, gt, mask=None, reduction: Reduction = "mean", wrist: int = 0) -> torch.Tensor:
    """Mean wrist translation error [m]: ||pred wrist joint - gt wrist joint||.

    pred, gt: (..., J, 3) joints [m] (the wrist joint ``J0(betas) + transl``, not raw ``transl``).
    """
    _check_pair(pred, gt, "mwte")
    return _reduce((pred[..., wrist, :] - gt[..., wrist, :]).norm(dim=-1), mask, reduction)


def mre(pred, gt, mask=None, reduction: Reduction = "mean", fmt: str = "matrix") -> torch.Tensor:
    """Mean rotation error [rad]: geodesic angle of pred^T gt averaged over joints, then frames.

    pred, gt: (..., K, 3, 3) matrices (or (..., K, 3) axis-angle / (..., K, 6) 6D with ``fmt``); the
    project's MRE uses K = 16 (global wrist rotation + 15 local finger rotations). Stable near 0
    (atan2 form of :func:`megohand.geometry.rotations.geodesic_angle`).
    """
    R1, R2 = to_matrix(pred, fmt), to_matrix(gt, fmt)
    if R1.shape != R2.shape:
        raise ValueError(f"mre: pred shape {tuple(pred.shape)} != gt shape {tuple(gt.shape)}")
    return _reduce(geodesic_angle(R1, R2).mean(-1), mask, reduction)


def _diff_mask(mask: torch.Tensor | None, order: int) -> torch.Tensor | None:
    """A finite difference of ``order`` over t..t+order is valid only if all its frames are: (..., T) -> (..., T-order)."""
    if mask is None:
        return None
    m = torch.as_tensor(mask).bool()
    T = m.shape[-1]
    out = m[..., : T - order]
    for k in range(1, order + 1):
        out = out & m[..., k : T - order + k]
    return out


def _second_diff(x: torch.Tensor) -> torch.Tensor:
    """x_{t+1} - 2 x_t + x_{t-1} along dim -3: (..., T, N, 3) -> (..., T-2, N, 3)."""
    return x[..., 2:, :, :] - 2 * x[..., 1:-1, :, :] + x[..., :-2, :, :]


def _third_diff(x: torch.Tensor) -> torch.Tensor:
    """x_{t+3} - 3 x_{t+2} + 3 x_{t+1} - x_t along dim -3: (..., T, N, 3) -> (..., T-3, N, 3)."""
    return x[..., 3:, :, :] - 3 * x[..., 2:-1, :, :] + 3 * x[..., 1:-2, :, :] - x[..., :-3, :, :]


def _check_seq(x: torch.Tensor, order: int, what: str) -> None:
    if x.dim() < 3 or x.shape[-1] != 3 or x.shape[-3] <= order:
        raise ValueError(f"{what}: expected (..., T, N, 3) with T > {order}, got {tuple(x.shape)}")


def accel_error(pred, gt, fps: float, mask=None, reduction: Reduction = "mean") -> torch.Tensor:
    """Acceleration error [m/s^2]: mean_{t,n} ||a_pred - a_gt||, a_t = (x_{t+1} - 2x_t + x_{t-1}) * fps^2.

    pred, gt: (..., T, N, 3) [m]; fps: the sequence's true frame rate; mask (..., T) bool: a step counts
    only if frames t-1, t, t+1 are all valid. ``"none"`` returns (..., T-2) values for t = 1..T-2.
    """
    _check_pair(pred, gt, "accel_error")
    _check_seq(pred, 2, "accel_error")
    m = _diff_mask(mask, 2)
    a = _zero_invalid(pred, mask, 2)
    b = _zero_invalid(gt, mask, 2)
    err = (_second_diff(a) - _second_diff(b)).norm(dim=-1).mean(-1) * fps**2
    return _reduce(err, m, reduction)


def jitter(x, fps: float, mask=None, reduction: Reduction = "mean") -> torch.Tensor:
    """Jitter [m/s^3] of one sequence: mean_{t,n} ||x_{t+3} - 3x_{t+2} + 3x_{t+1} - x_t|| * fps^3 (AGRoL).

    x: (..., T, N, 3) [m]; mask (..., T) bool (a step needs its 4 frames valid). Report the GT's
    jitter as the floor. ``"none"`` returns (..., T-3) values.
    """
    _check_seq(x, 3, "jitter")
    m = _diff_mask(mask, 3)
    err = _third_diff(_zero_invalid(x, mask, 2)).norm(dim=-1).mean(-1) * fps**3
    return _reduce(err, m, reduction)


def ade(pred, gt, mask=None, reduction: Reduction = "mean") -> torch.Tensor:
    """Average displacement error [m]: mean over time (and batch) of the trajectory point's L2 error.

    pred, gt: (..., T, 3) trajectories (the wrist joint); mask (..., T) bool.
    """
    _check_pair(pred, gt, "ade")
    return _reduce((pred - gt).norm(dim=-1), mask, reduction)


def fde(pred, gt, mask=None, reduction: Reduction = "mean") -> torch.Tensor:
    """Final displacement error [m]: L2 error at the last (valid) step of each trajectory.

    pred, gt: (..., T, 3); mask (..., T) bool. ``"none"`` returns (...) values (NaN if no valid step).
    """
    _check_pair(pred, gt, "fde")
    err = (pred - gt).norm(dim=-1)  # (..., T)
    T = err.shape[-1]
    if mask is None:
        return _reduce(err[..., -1], None, reduction)
    m = torch.as_tensor(mask, device=err.device).bool()
    if m.shape != err.shape:
        raise ValueError(f"fde: mask shape {tuple(m.shape)} does not match the frames {tuple(err.shape)}")
    last = torch.where(m, torch.arange(T, device=err.device), torch.full_like(m, -1, dtype=torch.long)).amax(-1)
    final = err.gather(-1, last.clamp_min(0)[..., None])[..., 0]
    return _reduce(final, last >= 0, reduction)


def hand_metrics(pred, gt, hand, fps: float, mask=None) -> dict[str, float]:
    """The project's metric set for one hand side, in paper units.

    Args:
        pred, gt: :class:`megohand.hand.vector.HandParams` with leading shape (..., T) (time last),
            camera frame.
        hand: a :class:`megohand.hand.HandModel` (gives 21 joints and the vertices).
        fps: true frame rate of the sequence [Hz] (for acceleration and jitter).
        mask: (..., T) bool, False = invalid frame (excluded everywhere).
    Returns:
        ``mpjpe_cm, mpjpe_rr_cm, mpjpe_pa_cm, mpve_cm, mpve_pa_cm, mwte_cm, mre_rad, mre_deg,
        accel_error_m_s2, jitter_m_s3, jitter_gt_m_s3, ade_cm, fde_cm`` as Python floats (NaN where a
        metric has no valid frame, e.g. accel with T < 3).
    """
    po, go = hand.forward_params(pred), hand.forward_params(gt)
    pj, gj, pv, gv = po.joints, go.joints, po.vertices, go.vertices
    pr = to_matrix(torch.cat([pred.global_orient[..., None, :], pred.hand_pose], -2), "axis_angle")
    gr = to_matrix(torch.cat([gt.global_orient[..., None, :], gt.hand_pose], -2), "axis_angle")
    T = pj.shape[-3]
    nan = torch.tensor(math.nan)
    out = {
        "mpjpe_cm": mpjpe(pj, gj, mask) * 100,
        "mpjpe_rr_cm": mpjpe_rr(pj, gj, mask) * 100,
        "mpjpe_pa_cm": mpjpe_pa(pj, gj, mask) * 100,
        "mpve_cm": mpve(pv, gv, mask) * 100,
        "mpve_pa_cm": mpve_pa(pv, gv, mask) * 100,
        "mwte_cm": mwte(pj, gj, mask) * 100,
        "mre_rad": mre(pr, gr, mask),
        "accel_error_m_s2": accel_error(pj, gj, fps, mask) if T > 2 else nan,
        "jitter_m_s3": jitter(pj, fps, mask) if T > 3 else nan,
        "jitter_gt_m_s3": jitter(gj, fps, mask) if T > 3 else nan,
        "ade_cm": ade(pj[..., 0, :], gj[..., 0, :], mask) * 100,
        "fde_cm": fde(pj[..., 0, :], gj[..., 0, :], mask) * 100,
    }
    out = {k: float(v) for k, v in out.items()}
    out["mre_deg"] = math.degrees(out["mre_rad"])
    return out


# ---------------------------------------------------------------------------- task metrics (scenes with objects)

GRIP_JOINTS = (16, 17, 18)
"""MANO21 indices of the thumb, index and middle fingertips: their mean is the hand's grip point."""


def grip_point(joints: torch.Tensor) -> torch.Tensor:
    """(..., 21, 3) joints (MANO21 order) -> (..., 3) grip point, the mean of the thumb, index and middle tips."""
    return joints[..., list(GRIP_JOINTS), :].mean(-2)


def closest_object(grip: torch.Tensor, centers: torch.Tensor) -> torch.Tensor:
    """Index (...,) of the object whose centre is nearest to the grip point: grip (..., 3), centers (..., N, 3)."""
    return (centers - grip[..., None, :]).norm(dim=-1).argmin(-1)


def carried_to(grip_contact: torch.Tensor, grip_release: torch.Tensor, center_contact: torch.Tensor) -> torch.Tensor:
    """Where a hand that grips an object at its contact frame and lets go at its release frame leaves the object's
    centre, if the object moves rigidly with the grip point: ``center_contact + grip_release - grip_contact``, (..., 3)."""
    return center_contact + grip_release - grip_contact

"""Frames -> the right hand's MANO parameters per frame: estimate, place, smooth, retarget.

``track_hand`` runs an estimator over the frames of one video (tracking mode: the estimator follows the hand
from frame to frame), keeps the most confident hand of the wanted side, places it in the camera frame
(PnP, then depth when given) and returns a :class:`HandTrack` with NaN where no hand was found or the
placement is not credible. ``fit_track`` smooths the joints over time (within runs of consecutive found
frames, never across a gap) and retargets them to hand parameters (``megohand.hand.retarget``: network +
per-sequence refinement with one shape), keeping the per-frame fit error; frames whose fit error is too large
are masked too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np

from megohand.perception.estimator import HandEstimator, pick_side
from megohand.perception.placement import place_depth, place_pnp


@dataclass
class HandTrack:
    """One hand over T frames (OpenPose landmark order, camera frame).

    joints (T, 21, 3) [m] and keypoints_2d (T, 21, 2) [px] are NaN where ``valid`` is False; score (T,),
    reprojection_px (T,), depth_points (T,) (landmarks whose depth was used; 0 = PnP distance only);
    ``found`` (T,) frames where the estimator saw the hand (``valid`` also needs a credible placement).
    """

    joints: np.ndarray
    keypoints_2d: np.ndarray
    score: np.ndarray
    reprojection_px: np.ndarray
    depth_points: np.ndarray
    found: np.ndarray
    side: str = "right"
    stats: dict = field(default_factory=dict)

    @property
    def valid(self) -> np.ndarray:
        return np.isfinite(self.joints).all(axis=(1, 2))

    def __len__(self) -> int:
        return len(self.joints)


def track_hand(estimator: HandEstimator, frames: Iterable[np.ndarray], K: np.ndarray,
               depth: Iterable[np.ndarray] | None = None, side: str = "right", min_score: float = 0.5,
               max_reprojection: float = 0.5, progress: Callable[[int], None] | None = None,
               depth_name: str = "depth") -> HandTrack:
    """Estimate and place one hand in every frame of a video.

    Args:
        estimator: a :class:`~megohand.perception.estimator.HandEstimator` (reset here: a new video).
        frames: (H, W, 3) uint8 RGB frames, in order (streamed).
        K: (3, 3) intrinsics [px] of the frames.
        depth: None, or (H, W) metric depth [m] per frame (0 = none), aligned to the frames.
        side: the hand to keep ("right" for the policy).
        min_score: detections below this confidence count as no hand.
        max_reprojection: a placement whose mean reprojection error exceeds this fraction of the hand's 2D size
            (the landmarks' RMS spread) is not credible: masked.
        progress: called with 1 after each frame.
        depth_name: how errors name the depth input (its file).
    Raises:
        ValueError: no frames, or fewer depth frames than images.
    """
    estimator.reset()
    depth_iter = iter(depth) if depth is not None else None
    rows = []
    for image in frames:
        d = next(depth_iter, None) if depth_iter is not None else None
        if depth_iter is not None and d is None:
            raise ValueError(f"{depth_name}: only {len(rows)} depth frames for more images")
        det = pick_side(estimator(image), side)
        row = (np.full((21, 3), np.nan), np.full((21, 2), np.nan), 0.0, np.nan, 0, False)
        if det is not None and det.score >= min_score:
            p = place_pnp(det.landmarks_3d, det.keypoints_2d, K)
            spread = np.sqrt(((det.keypoints_2d - det.keypoints_2d.mean(0)) ** 2).sum(-1).mean())
            if p.reprojection_px <= max_reprojection * spread:
                if d is not None:
                    p = place_depth(det.landmarks_3d, det.keypoints_2d, d, K) or p
                row = (p.joints, det.keypoints_2d, det.score, p.reprojection_px, p.depth_points, True)
            else:
                row = (row[0], row[1], det.score, p.reprojection_px, 0, True)
        rows.append(row)
        if progress is not None:
            progress(1)
    if not rows:
        raise ValueError("no frames")
    J, uv, score, rep, dp, found = (np.stack([r[i] for r in rows]) for i in range(6))
    track = HandTrack(J, uv, score.astype(np.float32), rep.astype(np.float32), dp.astype(np.int32),
                      found.astype(bool), side)
    track.stats = {"frames": len(track), "found": int(found.sum()), "valid": int(track.valid.sum())}
    return track


def smooth_joints(joints: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing over time (std ``sigma`` frames) of (T, N, 3) joints, separately within each run of
    consecutive finite frames (gaps, NaN, are neither filled nor smoothed across); sigma 0 = unchanged."""
    from scipy.ndimage import gaussian_filter1d

    out = np.array(joints, np.float64, copy=True)
    if sigma <= 0:
        return out
    ok = np.isfinite(out).all(axis=(1, 2))
    edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(np.int8), [0]])))
    for start, end in zip(edges[::2], edges[1::2]):
        if end - start > 1:
            out[start:end] = gaussian_filter1d(out[start:end], sigma, axis=0, mode="nearest")
    return out


def fit_track(retargeter, track: HandTrack, smooth: float = 1.0, max_fit_error_mm: float = 20.0,
              adapt: bool = False) -> dict:
    """Retarget a track to hand parameters.

    Args:
        retargeter: ``megohand.hand.retarget.Retargeter`` (network + per-sequence refinement).
        track: :func:`track_hand`'s output.
        smooth: Gaussian std [frames] of the temporal smoothing of the joints before the fit (0: none); the
            refinement adds its own joint-acceleration term.
        max_fit_error_mm: frames whose mean joint error after the fit exceeds this [mm] are masked (invalid).
        adapt: per-sequence skeleton adaptation of the retargeting (constant offsets of the estimator's points
            from the hand model's joints, for a sequence; see docs/retarget.md).
    Returns:
        dict of float32 arrays in the store's layout: global_orient (T, 3), hand_pose (T, 15, 3), betas (T, 10),
        transl (T, 3), ``valid`` (T,) bool, ``fit_error_mm`` (T,) mean joint error of the fit [mm] (NaN where
        not valid), and ``offsets`` (21, 3) [m] of the adaptation (zeros without it).
    """
    J = smooth_joints(track.joints, smooth)
    if not np.isfinite(J).all(axis=(1, 2)).any():
        T = len(J)
        return {"global_orient": np.zeros((T, 3), np.float32), "hand_pose": np.zeros((T, 15, 3), np.float32),
                "betas": np.zeros((T, 10), np.float32), "transl": np.zeros((T, 3), np.float32),
                "valid": np.zeros(T, bool), "fit_error_mm": np.full(T, np.nan, np.float32),
                "offsets": np.zeros((21, 3), np.float32)}
    res = retargeter.fit_sequence(J, order="openpose", side=track.side, unit="m", adapt=adapt)
    res["valid"] = res["valid"] & (np.nan_to_num(res["fit_error_mm"], nan=np.inf) <= max_fit_error_mm)
    res["fit_error_mm"] = np.where(res["valid"], res["fit_error_mm"], np.nan).astype(np.float32)
    return res

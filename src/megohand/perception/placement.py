"""Metric placement of an estimated hand in the camera frame (OpenCV axes, metres), and the intrinsics it needs.

* :func:`place_pnp`: the rigid pose ``(R, t)`` that projects the estimator's metric hand-centred landmarks
  onto its 2D landmarks (perspective-n-point). The distance then follows from the estimator's hand size.
* :func:`place_depth`: with a depth map, the depth at the palm's landmarks (plus the hand's thickness: the
  visible skin lies in front of the joint centres) places the shape instead (distance, scale and the palm's
  orientation), so the distance no longer depends on a guessed hand size.
* Intrinsics: :func:`read_intrinsics` (a JSON / text / .npy file), :func:`default_intrinsics`
  (f = max(W, H), principal point at the centre), :func:`check_intrinsics` (they must fit the image size).

Why not OpenCV's ``solvePnP``: the core install does not ship OpenCV; 21 points and 6 unknowns are a small
robust least-squares problem for ``scipy.optimize.least_squares`` (soft-L1 loss on pixel residuals), started
from two guesses (the estimator's axes, and a Procrustes fit to the rays at the weak-perspective distance).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Landmarks whose depth places the hand: thumb CMC and MCP, and each finger's MCP and PIP (OpenPose order).
# Their centres lie 8-12 mm behind the skin seen at their pixel (medians on the synthetic world's renders of the
# bundled open hand, seen from above); the wrist (no forearm in a render, the sleeve or arm in a video) and the
# distal joints and tips (hidden by the knuckles when the fingers curl) are left out.
DEPTH_LANDMARKS = (1, 2, 5, 6, 9, 10, 13, 14, 17, 18)
BEHIND_SKIN = 0.010  # [m]


@dataclass
class Placement:
    """A hand placed in the camera frame: ``joints`` (21, 3) [m] = scale * landmarks @ R.T + t (scale = 1 from
    PnP; depth rescales about the camera centre); ``reprojection_px`` mean 2D error [px]; ``depth_points``
    landmarks whose depth was used (0 without depth)."""

    joints: np.ndarray
    R: np.ndarray
    t: np.ndarray
    reprojection_px: float
    scale: float = 1.0
    depth_points: int = 0


# ----------------------------------------------------------------------------- intrinsics


def default_intrinsics(width: int, height: int) -> np.ndarray:
    """Pinhole intrinsics when none are given: f = max(W, H) px (about 53 deg horizontal field of view for 4:3),
    principal point at the image centre. (3, 3) float64."""
    f = float(max(width, height))
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)


def check_intrinsics(K, width: int, height: int, source: str) -> np.ndarray:
    """K (3, 3) as float64 if it fits a ``width`` x ``height`` image, else ValueError naming ``source``.

    Fits: finite, fx, fy > 0, last row [0, 0, 1], principal point inside the image. Intrinsics of another
    resolution (e.g. 1920x1080 ones for a 640x480 video) put it outside, or far off the centre."""
    try:
        K = np.asarray(K, np.float64).reshape(3, 3)
    except (TypeError, ValueError):
        raise ValueError(f"{source}: intrinsics must be a 3x3 matrix") from None
    if not (np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], [0, 0, 1])):
        raise ValueError(f"{source}: intrinsics must be finite with fx, fy > 0 and last row [0, 0, 1]")
    cx, cy = K[0, 2], K[1, 2]
    if not (0 < cx < width and 0 < cy < height):
        raise ValueError(f"{source}: intrinsics do not fit the {width}x{height} image (principal point "
                         f"({cx:g}, {cy:g}) outside it; were they made for another resolution?)")
    if abs(cx - width / 2) > 0.25 * width or abs(cy - height / 2) > 0.25 * height:
        raise ValueError(f"{source}: intrinsics do not fit the {width}x{height} image (principal point "
                         f"({cx:g}, {cy:g}) far from its centre ({width / 2:g}, {height / 2:g}); were they made "
                         "for another resolution?)")
    return K


def read_intrinsics(path) -> np.ndarray:
    """Intrinsics from a file: JSON ``{"K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]}`` or ``{"fx", "fy", "cx",
    "cy"}``, a ``.npy`` 3x3 array, or a text file of 9 (K row by row) or 4 (fx fy cx cy) numbers.

    Raises: ValueError naming the file (missing, unreadable, wrong shape)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: intrinsics file not found")
    try:
        if path.suffix.lower() == ".json":
            d = json.loads(path.read_text())
            if isinstance(d, dict) and "K" in d:
                vals = d["K"]
            elif isinstance(d, dict) and {"fx", "fy", "cx", "cy"} <= set(d):
                vals = [d["fx"], d["fy"], d["cx"], d["cy"]]
            else:
                raise ValueError('expected {"K": 3x3} or {"fx", "fy", "cx", "cy"}')
        elif path.suffix.lower() == ".npy":
            vals = np.load(path, allow_pickle=False)
        else:
            vals = path.read_text().replace(",", " ").replace("[", " ").replace("]", " ").split()
        a = np.asarray(vals, np.float64).reshape(-1)
    except (ValueError, TypeError, OSError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read intrinsics ({e})") from None
    if a.size == 4:
        fx, fy, cx, cy = a
        return np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1]], np.float64)
    if a.size != 9:
        raise ValueError(f"{path}: intrinsics need 9 numbers (K) or 4 (fx fy cx cy), found {a.size}")
    return a.reshape(3, 3)


# ----------------------------------------------------------------------------- placement


def _project(X: np.ndarray, K: np.ndarray) -> np.ndarray:
    uvw = X @ K.T
    return uvw[:, :2] / uvw[:, 2:3]


def place_pnp(landmarks_3d: np.ndarray, keypoints_2d: np.ndarray, K: np.ndarray, snap: bool = True) -> Placement:
    """Rigid pose of a metric hand shape from its 2D landmarks.

    Args:
        landmarks_3d: (N, 3) metric landmarks [m] in any frame (hand-centred).
        keypoints_2d: (N, 2) their pixels [px].
        K: (3, 3) intrinsics.
        snap: move each placed landmark along its depth onto its pixel's ray (``z_i K^-1 [u_i, v_i, 1]``): an
            estimator's 2D landmarks are usually more precise than its 3D shape, and the fitted hand then
            lines up with the image. ``reprojection_px`` is the rigid fit's error either way.
    Returns: :class:`Placement` with ``joints = landmarks_3d @ R.T + t`` in the camera frame (z > 0), snapped.
    """
    from scipy.optimize import least_squares
    from scipy.spatial.transform import Rotation

    X = np.asarray(landmarks_3d, np.float64)
    uv = np.asarray(keypoints_2d, np.float64)
    K = np.asarray(K, np.float64)
    f = 0.5 * (K[0, 0] + K[1, 1])
    Xc = X - X.mean(0)
    spread_3d = np.sqrt((Xc**2).sum(-1).mean())
    spread_2d = np.sqrt(((uv - uv.mean(0)) ** 2).sum(-1).mean())
    z0 = f * spread_3d / max(spread_2d, 1e-6)
    rays = np.concatenate([uv, np.ones((len(uv), 1))], 1) @ np.linalg.inv(K).T  # (N, 3), z = 1

    def project(x):  # x (B, 6) rotation vectors and translations -> (B, N * 2) pixel residuals
        P = np.einsum("bij,nj->bni", Rotation.from_rotvec(x[:, :3]).as_matrix(), X) + x[:, None, 3:]
        z = np.maximum(P[..., 2:3], 1e-3)
        return ((P @ K.T)[..., :2] / z - uv).reshape(len(x), -1)

    def residuals(x):
        return project(x[None])[0]

    def jacobian(x):  # forward differences, the 6 steps in one batch (scipy's loops over them one by one)
        h = 1e-6 * np.maximum(np.abs(x), 1.0)
        return ((project(x + np.diag(h)) - residuals(x)) / h[:, None]).T

    starts = [np.concatenate([np.zeros(3), z0 * rays.mean(0) - X.mean(0)])]
    P0 = z0 * rays  # the rays at the weak-perspective distance: Procrustes for a rotation guess
    U, _, Vt = np.linalg.svd((P0 - P0.mean(0)).T @ Xc)
    R0 = U @ np.diag([1, 1, np.sign(np.linalg.det(U @ Vt))]) @ Vt
    starts.append(np.concatenate([Rotation.from_matrix(R0).as_rotvec(), P0.mean(0) - R0 @ X.mean(0)]))
    best = None
    for x0 in starts:  # the second start only when the first one leaves more than 15 % of the hand's 2D size
        sol = least_squares(residuals, x0, jac=jacobian, loss="soft_l1", f_scale=3.0, max_nfev=100)
        R = Rotation.from_rotvec(sol.x[:3]).as_matrix()
        if (X @ R.T + sol.x[3:])[:, 2].min() <= 0:
            continue
        if best is None or sol.cost < best.cost:
            best = sol
        if best is not None and np.sqrt(np.mean(best.fun**2)) < 0.15 * spread_2d:
            break
    R, t = Rotation.from_rotvec(best.x[:3]).as_matrix(), best.x[3:]
    J = X @ R.T + t
    err = float(np.linalg.norm(_project(J, K) - uv, axis=-1).mean())
    if snap:
        J = J[:, 2:3] * rays
    return Placement(J, R, t, err)


def sample_depth(depth: np.ndarray, keypoints_2d: np.ndarray, max_depth: float = 10.0) -> np.ndarray:
    """Depth [m] at each keypoint's pixel: the median of the valid depths (finite, > 0, < max_depth) in its
    3x3 neighbourhood; NaN where none (outside the image, holes)."""
    H, W = depth.shape
    out = np.full(len(keypoints_2d), np.nan)
    for i, (u, v) in enumerate(np.rint(np.asarray(keypoints_2d, np.float64)).astype(int)):
        if not (0 <= u < W and 0 <= v < H):
            continue
        patch = depth[max(v - 1, 0):v + 2, max(u - 1, 0):u + 2].astype(np.float64)
        ok = patch[np.isfinite(patch) & (patch > 0) & (patch < max_depth)]
        if ok.size:
            out[i] = np.median(ok)
    return out


def place_depth(landmarks_3d: np.ndarray, keypoints_2d: np.ndarray, depth: np.ndarray, K: np.ndarray,
                behind_skin: float = BEHIND_SKIN, landmarks=DEPTH_LANDMARKS, min_points: int = 4,
                tolerance: float = 0.05, scale_range: tuple[float, float] = (0.7, 1.4),
                own_depth_tolerance: float = 0.04) -> Placement | None:
    """Place a metric hand shape with a depth map (H, W) [m] aligned to the image.

    Each of ``landmarks`` whose pixel has a valid depth gives a 3D point, its pixel's ray at ``depth +
    behind_skin``; those within ``tolerance`` [m] of their median depth (not an object in front, not the
    background beside a finger) are matched by a similarity transform (Umeyama: rotation, translation, scale
    clamped to ``scale_range``) of the same landmarks of the shape, and every landmark is snapped onto its ray.
    The depth thus fixes the distance, the hand's scale and the palm's orientation, which a monocular 3D
    estimate may get mirrored. Then every landmark whose own ``depth + behind_skin`` lies within
    ``own_depth_tolerance`` [m] of the placed shape's depth there (for the wrist: at most a quarter of it
    behind) takes that depth: a monocular shape's finger depths are its weakest part, and a landmark seen by
    the depth sensor needs no guess (a depth further off is another surface: a finger in front, an object, the
    background). Returns None with fewer than ``min_points`` usable landmarks.
    """
    import torch

    from megohand.geometry.procrustes import similarity_procrustes

    X = np.asarray(landmarks_3d, np.float64)
    uv = np.asarray(keypoints_2d, np.float64)
    idx = np.asarray(landmarks)
    d = sample_depth(depth, uv[idx])
    rays = np.concatenate([uv, np.ones((len(uv), 1))], 1) @ np.linalg.inv(np.asarray(K, np.float64)).T
    P = (d + behind_skin)[:, None] * rays[idx]
    ok = np.isfinite(d)
    if ok.sum() < min_points:
        return None
    ok &= np.abs(P[:, 2] - np.median(P[ok, 2])) <= tolerance
    if ok.sum() < min_points:
        return None
    s, R, t, _ = similarity_procrustes(torch.from_numpy(X[idx][ok]), torch.from_numpy(P[ok]))
    s = float(np.clip(float(s), *scale_range))
    R = R.numpy()
    t = P[ok].mean(0) - s * X[idx][ok].mean(0) @ R.T
    J = s * X @ R.T + t
    if J[:, 2].min() <= 0:
        return None
    err = float(np.linalg.norm(_project(J, K) - uv, axis=-1).mean())
    z = J[:, 2].copy()
    if own_depth_tolerance > 0:
        z_own = sample_depth(depth, uv) + behind_skin
        seen = np.isfinite(z_own) & (np.abs(z_own - z) <= own_depth_tolerance)
        seen[0] &= z_own[0] - z[0] <= 0.25 * own_depth_tolerance  # the wrist lies inside the forearm: a surface
        # seen well behind it is the far side of a hand cut off at the wrist (a render), or what lies beyond
        z[seen] = z_own[seen]
    return Placement(z[:, None] * rays, R, t, err, scale=s, depth_points=int(ok.sum()))

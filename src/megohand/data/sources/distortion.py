"""Non-pinhole camera models met in the datasets, and resampling their images to a pinhole camera.

* **FISHEYE624** (Aria / Quest 3, HOT3D; Project Aria's ``FisheyeRadTanThinPrism``): parameters
  ``[fx, fy, cx, cy, k0..k5, p0, p1, s0..s3]`` (16) or the Aria form with one focal ``[f, cx, cy, ...]``
  (15). For a camera-frame point ``(x, y, z)``: ``a = (x/z, y/z)``, ``r = |a|``, ``th = atan(r)``,
  ``th_d = th (1 + k0 th^2 + ... + k5 th^12)``, ``m = a th_d / r``; tangential
  ``m += 2 (m.p) m + |m|^2 p``; thin prism ``m_x += s0 |m|^2 + s1 |m|^4``, ``m_y += s2 |m|^2 + s3 |m|^4``;
  pixel ``= f * m + c``.
* **OpenCV radial-tangential** with 8 coefficients ``[k1, k2, p1, p2, k3, k4, k5, k6]`` (ARCTIC ``dist8``).

Images are made pinhole by sampling the source at the distorted position of every pinhole pixel
(only the forward model is needed), which keeps the camera frame: hands expressed in the camera
frame stay valid, and the pinhole ``K`` is stored with the frames.
"""

from __future__ import annotations

import numpy as np


def fisheye624_params16(params) -> np.ndarray:
    """15 (single focal, Aria) or 16 FISHEYE624 parameters -> (16,) [fx, fy, cx, cy, k0..k5, p0, p1, s0..s3]."""
    p = np.asarray(params, dtype=np.float64).reshape(-1)
    if p.size == 15:
        return np.concatenate([p[:1], p[:1], p[1:]])
    if p.size == 16:
        return p
    raise ValueError(f"FISHEYE624 needs 15 or 16 parameters, got {p.size}")


def fisheye624_distort(ab: np.ndarray, params) -> np.ndarray:
    """Normalised pinhole coordinates ab = (x/z, y/z) (..., 2) -> distorted normalised coords (..., 2)."""
    p = fisheye624_params16(params)
    k, tang, s = p[4:10], p[10:12], p[12:16]
    r = np.linalg.norm(ab, axis=-1, keepdims=True)
    th = np.arctan(r)
    th2 = th * th
    poly = np.zeros_like(th)
    for ki in k[::-1]:
        poly = (poly + ki) * th2
    th_d = th * (1.0 + poly)
    scale = np.where(r > 1e-12, th_d / np.maximum(r, 1e-12), 1.0)
    m = ab * scale
    r2 = (m * m).sum(-1, keepdims=True)
    m = m + 2.0 * (m @ tang)[..., None] * m + r2 * tang
    r4 = r2 * r2
    m = m + np.concatenate([s[0] * r2 + s[1] * r4, s[2] * r2 + s[3] * r4], axis=-1)
    return m


def fisheye624_project(X: np.ndarray, params) -> np.ndarray:
    """Camera-frame points X (..., 3) [m], z > 0 -> (..., 2) pixels with the FISHEYE624 model."""
    X = np.asarray(X, dtype=np.float64)
    p = fisheye624_params16(params)
    m = fisheye624_distort(X[..., :2] / X[..., 2:3], p)
    return m * p[0:2] + p[2:4]


def opencv8_distort(ab: np.ndarray, dist) -> np.ndarray:
    """OpenCV rational radial-tangential model, dist = [k1, k2, p1, p2, k3, k4, k5, k6] (fewer: zero-padded)."""
    d = np.zeros(8)
    dist = np.asarray(dist, dtype=np.float64).reshape(-1)
    d[: dist.size] = dist
    k1, k2, p1, p2, k3, k4, k5, k6 = d
    x, y = ab[..., 0], ab[..., 1]
    r2 = x * x + y * y
    radial = (1 + r2 * (k1 + r2 * (k2 + r2 * k3))) / (1 + r2 * (k4 + r2 * (k5 + r2 * k6)))
    xd = x * radial + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
    yd = y * radial + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
    return np.stack([xd, yd], axis=-1)


def undistort_map(K_pinhole: np.ndarray, width: int, height: int, distort, fxy, cxy) -> np.ndarray:
    """Source pixel (x, y) for every pixel of the target pinhole image -> (height, width, 2) float32.

    ``distort`` maps normalised pinhole coords to distorted normalised coords; ``fxy``/``cxy`` are the
    source camera's focal lengths and principal point.
    """
    u, v = np.meshgrid(np.arange(width, dtype=np.float64), np.arange(height, dtype=np.float64))
    ab = np.stack([(u - K_pinhole[0, 2]) / K_pinhole[0, 0], (v - K_pinhole[1, 2]) / K_pinhole[1, 1]], axis=-1)
    m = distort(ab)
    return (m * np.asarray(fxy) + np.asarray(cxy)).astype(np.float32)


def remap_bilinear(image: np.ndarray, xy: np.ndarray, fill: float = 0) -> np.ndarray:
    """Sample ``image`` (H, W[, C]) at float pixel positions xy (h, w, 2) bilinearly; positions whose 2x2
    neighbourhood leaves the image -> ``fill``. Integer images are rounded and clipped to their dtype.

    torch's ``grid_sample`` does the sampling (one multi-threaded pass; about 7x faster than gathering the
    four neighbours with numpy on a 2800x2000 ARCTIC frame)."""
    import torch
    import torch.nn.functional as F

    H, W = image.shape[:2]
    x = torch.from_numpy(np.ascontiguousarray(image)).to(torch.float32)
    x = (x[..., None] if x.ndim == 2 else x).permute(2, 0, 1)[None]  # (1, C, H, W)
    g = torch.from_numpy(np.ascontiguousarray(xy, dtype=np.float32))
    inside = (g[..., 0] >= 0) & (g[..., 1] >= 0) & (g[..., 0] < W - 1) & (g[..., 1] < H - 1)
    grid = torch.stack([g[..., 0] * (2.0 / max(W - 1, 1)) - 1, g[..., 1] * (2.0 / max(H - 1, 1)) - 1], dim=-1)
    out = F.grid_sample(x, grid[None], mode="bilinear", padding_mode="border", align_corners=True)[0]
    out = torch.where(inside, out, torch.tensor(float(fill))).permute(1, 2, 0)  # (h, w, C)
    out = out[..., 0] if image.ndim == 2 else out
    if np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = out.round().clamp(info.min, info.max)
    return out.numpy().astype(image.dtype)

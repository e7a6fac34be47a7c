"""Triangle meshes of simple solids (metres, centred at the origin), for scenes, tests and benchmarks."""

from __future__ import annotations

import numpy as np


def box(size=(1.0, 1.0, 1.0)) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box with edge lengths ``size`` (3,): vertices (8, 3) float32, faces (12, 3) int32, outward CCW."""
    sx, sy, sz = np.asarray(size, np.float64) / 2
    v = np.array([[x, y, z] for x in (-sx, sx) for y in (-sy, sy) for z in (-sz, sz)], np.float32)
    # vertex index = 4*ix + 2*iy + iz
    f = np.array(
        [
            [0, 1, 3], [0, 3, 2],  # -x
            [4, 6, 7], [4, 7, 5],  # +x
            [0, 4, 5], [0, 5, 1],  # -y
            [2, 3, 7], [2, 7, 6],  # +y
            [0, 2, 6], [0, 6, 4],  # -z
            [1, 5, 7], [1, 7, 3],  # +z
        ],
        np.int32,
    )
    return v, f


def uv_sphere(radius: float = 1.0, n_lat: int = 32, n_lon: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """UV sphere: vertices ((n_lat - 1) * n_lon + 2, 3) float32, faces (2 * (n_lat - 1) * n_lon, 3) int32."""
    theta = np.linspace(0, np.pi, n_lat + 1)[1:-1]  # polar angles of the rings
    phi = np.linspace(0, 2 * np.pi, n_lon, endpoint=False)
    t, p = np.meshgrid(theta, phi, indexing="ij")
    ring = np.stack([np.sin(t) * np.cos(p), np.sin(t) * np.sin(p), np.cos(t)], -1).reshape(-1, 3)
    v = np.concatenate([[[0, 0, 1]], ring, [[0, 0, -1]]]) * radius
    idx = np.arange(len(ring)).reshape(n_lat - 1, n_lon) + 1
    nxt = np.roll(idx, -1, axis=1)
    faces = [np.stack([np.zeros(n_lon, int), idx[0], nxt[0]], 1)]
    a, b, c, d = idx[:-1], nxt[:-1], idx[1:], nxt[1:]
    faces += [np.stack([a, c, d], -1).reshape(-1, 3), np.stack([a, d, b], -1).reshape(-1, 3)]
    faces.append(np.stack([np.full(n_lon, len(v) - 1), nxt[-1], idx[-1]], 1))
    return v.astype(np.float32), np.concatenate(faces).astype(np.int32)


def cylinder(radius: float = 1.0, height: float = 1.0, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Closed cylinder along z, centred: vertices (2n + 2, 3) float32, faces (4n, 3) int32."""
    phi = np.linspace(0, 2 * np.pi, n, endpoint=False)
    ring = np.stack([radius * np.cos(phi), radius * np.sin(phi)], -1)
    h = height / 2
    v = np.concatenate([np.c_[ring, np.full(n, -h)], np.c_[ring, np.full(n, h)], [[0, 0, -h], [0, 0, h]]])
    i = np.arange(n)
    j = (i + 1) % n
    side = np.concatenate([np.stack([i, j, j + n], 1), np.stack([i, j + n, i + n], 1)])
    bottom = np.stack([np.full(n, 2 * n), j, i], 1)
    top = np.stack([np.full(n, 2 * n + 1), i + n, j + n], 1)
    return v.astype(np.float32), np.concatenate([side, bottom, top]).astype(np.int32)

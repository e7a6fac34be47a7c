"""Primitive triangle meshes of the synthetic world.

Every mesh lives in its object frame: origin at the centre of the base (the point that rests on
the table), z up, metres. Faces are counter-clockwise seen from outside (outward normals).
Returns ``(vertices (V, 3) float32, faces (F, 3) int64)``.
"""

from __future__ import annotations

import numpy as np

SHAPES = ("box", "cylinder", "sphere", "cone")
"""Shapes of the objects a task names; a "mat" (landmark) is a flat cylinder, a round pad on the table."""


def box(size: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Axis-aligned box of full extents ``size = (sx, sy, sz)`` standing on z = 0."""
    sx, sy, sz = (float(s) / 2 for s in size)
    corners = np.array(
        [[x, y, z] for z in (0.0, 2 * sz) for y in (-sy, sy) for x in (-sx, sx)], dtype=np.float32
    )  # index = 4 * iz + 2 * iy + ix
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    faces = [(a, b, c) for a, b, c, _ in quads] + [(a, c, d) for a, _, c, d in quads]
    return corners, np.array(faces, dtype=np.int64)


def _lathe(profile: np.ndarray, segments: int) -> tuple[np.ndarray, np.ndarray]:
    """Surface of revolution about z of a (P, 2) profile ``(radius, z)`` ordered from the bottom
    pole to the top pole (radius 0 at both ends closes the surface)."""
    ang = np.linspace(0.0, 2 * np.pi, segments, endpoint=False)
    ring = np.stack([np.cos(ang), np.sin(ang)], axis=-1)  # (S, 2)
    verts, index = [], []
    for r, z in profile:
        if r == 0.0:  # pole: one vertex
            index.append([len(verts)] * segments)
            verts.append([0.0, 0.0, z])
        else:
            index.append(list(range(len(verts), len(verts) + segments)))
            verts.extend([[r * c, r * s, z] for c, s in ring])
    faces = []
    for lo, hi in zip(index[:-1], index[1:]):
        for k in range(segments):
            k1 = (k + 1) % segments
            a, b, c, d = lo[k], lo[k1], hi[k1], hi[k]
            if a != b:
                faces.append((a, b, c))
            if c != d:
                faces.append((a, c, d))
    return np.asarray(verts, dtype=np.float32), np.asarray(faces, dtype=np.int64)


def cylinder(radius: float, height: float, segments: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Closed cylinder of ``radius`` and ``height`` standing on z = 0."""
    profile = np.array([[0.0, 0.0], [radius, 0.0], [radius, height], [0.0, height]])
    return _lathe(profile, segments)


def cone(radius: float, height: float, segments: int = 24) -> tuple[np.ndarray, np.ndarray]:
    """Closed cone with base ``radius`` on z = 0 and apex at z = ``height``."""
    profile = np.array([[0.0, 0.0], [radius, 0.0], [0.0, height]])
    return _lathe(profile, segments)


def sphere(radius: float, rings: int = 12, segments: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """UV sphere of ``radius`` resting on z = 0 (centre at z = radius)."""
    theta = np.linspace(np.pi, 0.0, rings + 1)  # bottom pole to top pole
    profile = np.stack([radius * np.sin(theta), radius + radius * np.cos(theta)], axis=-1)
    profile[0, 0] = profile[-1, 0] = 0.0
    return _lathe(profile, segments)


def make_shape(shape: str, dims: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Mesh of a named shape. ``dims``: box (sx, sy, sz); cylinder / cone / mat (radius, height);
    sphere (radius,)."""
    if shape == "box":
        return box(dims)
    if shape in ("cylinder", "mat"):
        return cylinder(*dims)
    if shape == "cone":
        return cone(*dims)
    if shape == "sphere":
        return sphere(*dims)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def plane(x_range: tuple[float, float], y_range: tuple[float, float], z: float = 0.0):
    """Rectangle on the plane ``z`` facing +z: 4 vertices, 2 faces."""
    (x0, x1), (y0, y1) = x_range, y_range
    v = np.array([[x0, y0, z], [x1, y0, z], [x1, y1, z], [x0, y1, z]], dtype=np.float32)
    return v, np.array([[0, 1, 2], [0, 2, 3]], dtype=np.int64)

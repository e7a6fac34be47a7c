"""The table-top scene: objects (shape, colour, size, placement), intrinsics and the head camera.

World frame: z up, table top at z = 0, x to the person's right, y away from the person.
All functions are pure: randomness comes from the ``numpy.random.Generator`` passed in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from megohand.data.synthetic.shapes import SHAPES, make_shape

# Names -> RGB in 0..1, chosen to be far apart and far from the table and the skin.
COLORS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.12, 0.10),
    "green": (0.15, 0.65, 0.20),
    "blue": (0.12, 0.25, 0.85),
    "yellow": (0.95, 0.85, 0.10),
    "purple": (0.55, 0.20, 0.70),
    "orange": (0.98, 0.50, 0.05),
}
TABLE_COLOR = (0.62, 0.62, 0.58)
HAND_COLOR = (0.90, 0.72, 0.60)
TABLE_X = (-0.18, 0.18)  # where objects may stand [m]
TABLE_Y = (0.04, 0.30)


@dataclass
class SceneObject:
    """One primitive on the table (an object, or a landmark lying flat: shape "mat", a round pad).

    ``dims``: box (sx, sy, sz) full extents; cylinder / cone / mat (radius, height); sphere (radius,).
    ``xy`` (2,) base centre on the table [m]; ``yaw`` rotation about z [rad].
    """

    shape: str
    color: str
    dims: tuple[float, ...]
    xy: tuple[float, float]
    yaw: float

    @property
    def name(self) -> str:
        """e.g. "red cylinder"."""
        return f"{self.color} {self.shape}"

    @property
    def rgb(self) -> tuple[float, float, float]:
        return COLORS[self.color]

    @property
    def height(self) -> float:
        """Top of the object above the table [m]."""
        return {"box": self.dims[-1], "sphere": 2 * self.dims[0]}.get(self.shape, self.dims[-1])

    @property
    def radius(self) -> float:
        """Radius of the footprint's bounding circle [m]."""
        if self.shape == "box":
            return float(np.hypot(self.dims[0], self.dims[1]) / 2)
        return float(self.dims[0])

    @property
    def half_width(self) -> float:
        """Half the narrower horizontal size: what the fingers close on [m]."""
        return float(min(self.dims[:2]) / 2) if self.shape == "box" else float(self.dims[0])

    def mesh(self) -> tuple[np.ndarray, np.ndarray]:
        """Object-frame mesh (see ``shapes``)."""
        return make_shape(self.shape, self.dims)

    def pose(self) -> np.ndarray:
        """(4, 4) world-from-object transform of the resting placement."""
        return pose_from_xy_yaw(self.xy, self.yaw)

    def to_dict(self) -> dict:
        return {"shape": self.shape, "color": self.color, "rgb": list(self.rgb),
                "dims": [float(d) for d in self.dims], "xy": [float(v) for v in self.xy],
                "yaw": float(self.yaw)}


def pose_from_xy_yaw(xy, yaw: float, z: float = 0.0) -> np.ndarray:
    """(4, 4) transform: rotation ``yaw`` about z, translation (x, y, z)."""
    c, s = np.cos(yaw), np.sin(yaw)
    T = np.eye(4)
    T[:2, :2] = [[c, -s], [s, c]]
    T[:3, 3] = [xy[0], xy[1], z]
    return T


def sample_dims(shape: str, rng: np.random.Generator) -> tuple[float, ...]:
    """Graspable sizes [m]: 4-7 cm wide, 4-9 cm tall."""
    if shape == "box":
        return tuple(float(v) for v in rng.uniform([0.04, 0.04, 0.04], [0.065, 0.065, 0.08]))
    if shape == "cylinder":
        return (float(rng.uniform(0.02, 0.032)), float(rng.uniform(0.05, 0.09)))
    if shape == "cone":
        return (float(rng.uniform(0.025, 0.035)), float(rng.uniform(0.05, 0.08)))
    if shape == "sphere":
        return (float(rng.uniform(0.022, 0.032)),)
    raise ValueError(f"unknown shape {shape!r}")


def is_free(xy, radius: float, objects: list[SceneObject], margin: float = 0.035) -> bool:
    """True when a footprint of ``radius`` at ``xy`` is on the table and clear of ``objects``."""
    x, y = xy
    if not (TABLE_X[0] + radius <= x <= TABLE_X[1] - radius and TABLE_Y[0] + radius <= y <= TABLE_Y[1] - radius):
        return False
    return all(np.hypot(x - o.xy[0], y - o.xy[1]) >= radius + o.radius + margin for o in objects)


def sample_scene(
    rng: np.random.Generator, target_shape: str, target_color: str, num_objects: int
) -> list[SceneObject] | None:
    """Random placements of ``num_objects`` objects of distinct colours; index 0 is the target.

    Distractor shapes are random (they may repeat the target's shape, never its colour).
    Returns None when the placements do not fit (the caller draws again).
    """
    others = [c for c in COLORS if c != target_color]
    colors = [target_color] + list(rng.choice(others, size=num_objects - 1, replace=False))
    shapes = [target_shape] + list(rng.choice(SHAPES, size=num_objects - 1))
    objects: list[SceneObject] = []
    for shape, color in zip(shapes, colors):
        dims = sample_dims(str(shape), rng)
        for _ in range(50):
            xy = (float(rng.uniform(*TABLE_X)), float(rng.uniform(*TABLE_Y)))
            obj = SceneObject(str(shape), str(color), dims, xy, float(rng.uniform(-np.pi, np.pi)))
            if is_free(xy, obj.radius, objects):
                objects.append(obj)
                break
        else:
            return None
    return objects


# ----------------------------------------------------------------------------- camera


def intrinsics(width: int, height: int, hfov_deg: float = 60.0) -> np.ndarray:
    """(3, 3) pinhole K with square pixels and the principal point at the image centre."""
    f = (width / 2) / np.tan(np.deg2rad(hfov_deg) / 2)
    return np.array([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]])


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0), roll: float = 0.0) -> np.ndarray:
    """(4, 4) T_cam_from_world of an OpenCV camera (x right, y down, z forward) at ``eye``
    looking at ``target``, rolled by ``roll`` [rad] about its optical axis."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(z, np.asarray(up, dtype=float))
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    c, s = np.cos(roll), np.sin(roll)
    x, y = c * x + s * y, -s * x + c * y
    R_wc = np.stack([x, y, z], axis=1)  # columns: camera axes in the world
    T = np.eye(4)
    T[:3, :3] = R_wc.T
    T[:3, 3] = -R_wc.T @ eye
    return T


def head_trajectory(rng: np.random.Generator, num_frames: int, fps: float, amplitude: float = 1.0) -> np.ndarray:
    """(T, 4, 4) T_cam_from_world of a head-mounted camera ~40 cm above the table looking down
    at the objects, with small smooth ego-motion (a few cm, a few degrees, times ``amplitude``)."""
    eye0 = np.array([rng.uniform(-0.03, 0.05), rng.uniform(-0.20, -0.14), rng.uniform(0.34, 0.40)])
    target0 = np.array([rng.uniform(-0.03, 0.03), rng.uniform(0.12, 0.18), 0.0])
    t = np.arange(num_frames) / fps

    def wobble(amplitude: float) -> np.ndarray:  # (T, 3) sum of two slow sinusoids per axis
        out = np.zeros((num_frames, 3))
        for _ in range(2):
            freq = rng.uniform(0.15, 0.6, size=3)
            phase = rng.uniform(0, 2 * np.pi, size=3)
            out += amplitude / 2 * np.sin(2 * np.pi * freq * t[:, None] + phase)
        return out

    eyes = eye0 + amplitude * (wobble(0.02) + np.outer(t, rng.uniform(-0.01, 0.01, size=3)))
    targets = target0 + amplitude * wobble(0.03)
    rolls = rng.uniform(-0.05, 0.05) + amplitude * wobble(0.03)[:, 0]
    return np.stack([look_at(e, g, roll=r) for e, g, r in zip(eyes, targets, rolls)])

"""Scripted hand motion: keyframes of a grip frame, finger closing, and objects carried along.

The script drives a *grip frame* in the world: a point ``G`` at the centre of the palm surface
and an orientation given by ``yaw`` (about world z, 0 = fingers pointing away from the person,
positive = counter-clockwise seen from above) and ``pitch`` (fingers tilted down). The hand's
own axes come from its rest joints (``GripGeometry``), so the same script drives MANO and the
bundled open hand. Finger closing is a flexion of every finger joint about the axis
``bone x palm_normal`` (absolute local rotations, flat hand = 0).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# MANO16 joint order: wrist, index1-3, middle1-3, pinky1-3, ring1-3, thumb1-3.
FINGER_CHAINS = {"index": (1, 2, 3), "middle": (4, 5, 6), "pinky": (7, 8, 9), "ring": (10, 11, 12),
                 "thumb": (13, 14, 15)}
# Flexion at full closure (closure = 1) per chain position [rad]: base, middle, distal joint.
FLEX_FINGER = np.deg2rad([70.0, 85.0, 55.0])
FLEX_THUMB = np.deg2rad([25.0, 35.0, 40.0])


@dataclass
class GripGeometry:
    """Hand axes from rest joints (model frame, metres).

    ``J0`` (3,) rest wrist; ``axes`` (3, 3) columns = (finger direction d, palm normal n
    pointing out of the palm, side s = d x n); ``grip`` (3,) the palm-surface point that the
    script moves; ``flex_axes`` (15, 3) unit flexion axis per hand_pose joint.
    """

    J0: np.ndarray
    axes: np.ndarray
    grip: np.ndarray
    flex_axes: np.ndarray

    @staticmethod
    def from_rest_joints(rest: np.ndarray, side: str = "right", palm_depth: float = 0.012) -> "GripGeometry":
        """``rest`` (16, 3) rest joints of the hand (``hand.rest_joints(betas)``)."""
        rest = np.asarray(rest, dtype=np.float64)
        W, I, M, P, R = rest[0], rest[1], rest[4], rest[7], rest[10]
        n = np.cross(I - W, P - W) * (1.0 if side == "right" else -1.0)
        n /= np.linalg.norm(n)
        d = M - W
        d -= n * (d @ n)
        d /= np.linalg.norm(d)
        s = np.cross(d, n)
        mcp = (I + M + P + R) / 4
        grip = 0.35 * W + 0.65 * mcp + palm_depth * n
        flex = np.zeros((15, 3))
        for chain in FINGER_CHAINS.values():
            bone = rest[chain[2]] - rest[chain[0]]
            axis = np.cross(bone, n)
            flex[[j - 1 for j in chain]] = axis / np.linalg.norm(axis)
        return GripGeometry(W, np.stack([d, n, s], axis=1), grip, flex)

    def finger_pose(self, closure: float, spread: np.ndarray | None = None) -> np.ndarray:
        """(15, 3) hand_pose axis-angle for a closure in [0, 1] (0 = flat hand);
        ``spread`` (5,) optional per-finger multipliers of the closure."""
        out = np.zeros((15, 3))
        for f, (name, chain) in enumerate(FINGER_CHAINS.items()):
            c = closure * (1.0 if spread is None else spread[f])
            angles = FLEX_THUMB if name == "thumb" else FLEX_FINGER
            for k, j in enumerate(chain):
                out[j - 1] = self.flex_axes[j - 1] * angles[k] * c
        return out

    def world_rotation(self, yaw: float, pitch: float) -> np.ndarray:
        """(3, 3) global rotation putting the fingers along (yaw, pitch) and the palm facing down
        (tilted back by ``pitch``)."""
        heading = np.array([-np.sin(yaw), np.cos(yaw), 0.0])
        down = np.array([0.0, 0.0, -1.0])
        d = np.cos(pitch) * heading + np.sin(pitch) * down
        n = np.cos(pitch) * down - np.sin(pitch) * heading
        target = np.stack([d, n, np.cross(d, n)], axis=1)
        return target @ self.axes.T

    def transl(self, R: np.ndarray, G: np.ndarray) -> np.ndarray:
        """smplx ``transl`` (3,) putting the grip point at world ``G`` for global rotation ``R``:
        a model point p goes to ``R (p - J0) + J0 + transl``."""
        return G - self.J0 - R @ (self.grip - self.J0)


@dataclass
class Key:
    """One keyframe: time [s], grip point (3,) [m], yaw / pitch [rad], finger closure [0, 1].
    ``phase`` names the motion that ENDS at this key; ``attach`` (object index or -1) is
    the object rigidly carried by the grip frame from this key to the next."""

    t: float
    G: np.ndarray
    yaw: float
    pitch: float
    closure: float
    phase: str = "idle"
    attach: int = -1


@dataclass
class Trajectory:
    """Per-frame grip trajectory: ``R`` (T, 3, 3) world rotation, ``G`` (T, 3), ``closure`` (T,),
    ``attach`` (T,) int object index carried at that frame (-1 = none),
    ``phases`` list of (start, end, name) frame ranges (end exclusive)."""

    R: np.ndarray
    G: np.ndarray
    closure: np.ndarray
    attach: np.ndarray
    phases: list = field(default_factory=list)


def min_jerk(tau: np.ndarray) -> np.ndarray:
    """Minimum-jerk profile 10 t^3 - 15 t^4 + 6 t^5 on [0, 1]."""
    tau = np.clip(tau, 0.0, 1.0)
    return tau**3 * (10 - 15 * tau + 6 * tau**2)


def sample_keys(keys: list[Key], geom: GripGeometry, fps: float) -> Trajectory:
    """Interpolate keyframes (minimum jerk between consecutive keys) at ``fps``; key times are
    rounded to frames; the last key ends the episode (T = round(t_last * fps) + 1 frames)."""
    key_frames = np.round(np.array([k.t for k in keys]) * fps).astype(int)
    for i in range(1, len(key_frames)):  # keys on distinct frames, so pick-up / release poses are exact
        key_frames[i] = max(key_frames[i], key_frames[i - 1] + 1)
    times = key_frames / fps
    T = int(key_frames[-1]) + 1
    t = np.arange(T) / fps
    seg = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(keys) - 2)
    a = min_jerk((t - times[seg]) / (times[seg + 1] - times[seg]))

    def interp(get):
        v0 = np.array([get(keys[i]) for i in seg], dtype=np.float64)
        v1 = np.array([get(keys[i + 1]) for i in seg], dtype=np.float64)
        w = a.reshape(-1, *([1] * (v0.ndim - 1)))
        return (1 - w) * v0 + w * v1

    G = interp(lambda k: k.G)
    yaw, pitch, closure = interp(lambda k: k.yaw), interp(lambda k: k.pitch), interp(lambda k: k.closure)
    R = np.stack([geom.world_rotation(y, p) for y, p in zip(yaw, pitch)])
    attach = np.array([keys[i].attach for i in seg])
    phases = [(int(key_frames[i]), int(key_frames[i + 1]), keys[i + 1].phase) for i in range(len(keys) - 1)]
    return Trajectory(R, G, closure, attach, phases)


def carry_objects(traj: Trajectory, rest_poses: np.ndarray) -> np.ndarray:
    """(T, N, 4, 4) world poses of the objects: each rests at ``rest_poses`` (N, 4, 4) until the
    grip frame picks it up (``traj.attach``), then moves rigidly with the grip frame, and stays
    where the hand leaves it."""
    T, N = len(traj.G), len(rest_poses)
    grip = np.tile(np.eye(4), (T, 1, 1))
    grip[:, :3, :3], grip[:, :3, 3] = traj.R, traj.G
    poses = np.empty((T, N, 4, 4))
    current = np.array(rest_poses, dtype=np.float64)
    offset, held = None, -1
    for k in range(T):
        obj = int(traj.attach[k])
        if obj != held:  # release where the grip is now, then pick up the next one (if any)
            if held >= 0:
                current[held] = grip[k] @ offset
            offset = np.linalg.inv(grip[k]) @ current[obj] if obj >= 0 else None
            held = obj
        if held >= 0:
            current[held] = grip[k] @ offset
        poses[k] = current
    return poses

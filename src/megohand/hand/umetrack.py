"""UmeTrack's hand model (Han et al. 2022), as HOT3D releases it: forward kinematics and skinning.

HOT3D annotates every hand twice: MANO (15 PCA coefficients) and UmeTrack (``joint_angles`` + a
``wrist_xform`` per frame, ``umetrack_hand_pose_trajectory.jsonl``). UmeTrack's joint angles only mean
something with the wearer's **hand profile** (``umetrack_hand_user_profile.json`` beside the sequence,
key ``hand_model``), which holds the skeleton, the joint axes, 21 landmarks and a skinned mesh, all in
millimetres in the frame of a **left** hand. The profile format is read from HOT3D's public toolkit
(``hot3d/data_loaders/UmeTrackHandDataProvider.py``, ``umetrack_layer.py``); this is our own code.

The model, as used here:

* 22 joints (``joint_rest_positions`` (22,3), ``joint_rotation_axes`` (22,3)): joints 4f..4f+3 are the
  four degrees of freedom of finger f (thumb, index, middle, ring, pinky; the first two sit at the
  finger's base), joints 20, 21 belong to the wrist and are not used (their angles are 0 in HOT3D).
* Joint j rotates by ``angle_j`` about the axis ``axis_j`` through its rest position ``p_j``:
  ``L_j = [R(angle_j axis_j), p_j - R p_j]``.
* 17 frames: 0 = root and 1 = wrist (both the wrist transform W), then three per finger,
  ``W L_4f L_4f+1``, ``... L_4f+2``, ``... L_4f+3`` (the two base rotations share one frame).
* A point with frame weights w (17,) goes to ``sum_k w_k F_k [x; 1]``.
* Right hands use the same (left) profile with W's first column negated (x mirrored in the hand frame).

The 21 landmarks (HOT3D21 order, :data:`megohand.hand.joints.HOT3D21_NAMES`) have no thumb base; the
MANO21 joints here take MANO's thumb1 from the thumb's first joint ``p_0`` (the pivot of the whole thumb
chain, as thumb1 is MANO's). That point is a stand-in (22 mm from the wrist on HOT3D's sample profiles,
where MANO-like hands put thumb1 about 37 mm away): the retargeting network reads it, the refinement does
not fit it (:data:`UNOBSERVED`; ``Retargeter.fit_sequence(unobserved=...)``). On HOT3D's two sample
sequences ``p_0`` gave projected hand boxes closer to the annotated ones than the second base joint
``p_1`` or their midpoint, and leaving it out of the refinement fits the 20 real landmarks 0.8 mm better
(``docs/datasets.md``, HOT3D).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from megohand.geometry.rotations import axis_angle_to_matrix
from megohand.hand.joints import HOT3D_MISSING_MANO, HOT3D_TO_MANO

NUM_FRAMES = 17
NUM_ANGLES = 20  # finger degrees of freedom used by the skinning (HOT3D writes 22, the last two 0)
THUMB_BASE_JOINT = 0  # the skeleton joint that stands in for MANO's thumb1 (see the module docstring)
MANO_THUMB1 = 13
UNOBSERVED = HOT3D_MISSING_MANO  # MANO21 points of mano21_joints that are stand-ins (thumb1), not landmarks


@dataclass
class UmeTrackProfile:
    """A hand profile in metres (float64 tensors), for a left hand.

    joint_rest_positions (22,3) [m], joint_rotation_axes (22,3) unit vectors, landmark_rest_positions
    (21,3) [m], landmark_weights (21,17), and optionally mesh_vertices (V,3) [m], mesh_triangles (F,3)
    int64, mesh_weights (V,17). ``source`` names the file.
    """

    joint_rest_positions: torch.Tensor
    joint_rotation_axes: torch.Tensor
    landmark_rest_positions: torch.Tensor
    landmark_weights: torch.Tensor
    mesh_vertices: torch.Tensor | None = None
    mesh_triangles: torch.Tensor | None = None
    mesh_weights: torch.Tensor | None = None
    source: str = ""

    @classmethod
    def from_dict(cls, d: dict, source: str = "") -> "UmeTrackProfile":
        """From the profile's JSON (the ``hand_model`` object, or a dict holding it); lengths in mm.

        Raises ValueError naming ``source`` and the field when a key is missing or has the wrong shape."""
        d = d.get("hand_model", d) if isinstance(d, dict) else d
        if not isinstance(d, dict):
            raise ValueError(f"{source}: not a UmeTrack hand profile (expected a JSON object with 'hand_model')")

        def arr(key, shape, required=True, dtype=torch.float64):
            if key not in d:
                if required:
                    raise ValueError(f"{source}: UmeTrack hand profile lacks {key!r}")
                return None
            try:
                a = torch.as_tensor(np.asarray(d[key], np.float64), dtype=dtype)
            except (TypeError, ValueError) as e:
                raise ValueError(f"{source}: {key!r} is not numeric ({e})") from None
            if a.ndim != len(shape) or any(s is not None and a.shape[i] != s for i, s in enumerate(shape)):
                raise ValueError(f"{source}: {key!r} has shape {tuple(a.shape)}, expected {shape}")
            return a

        mm = 1e-3
        idx = arr("landmark_rest_bone_indices", (21, None), dtype=torch.long)
        w = arr("landmark_rest_bone_weights", (21, None))
        if idx.shape != w.shape or idx.min() < 0 or idx.max() >= NUM_FRAMES:
            raise ValueError(f"{source}: landmark bone indices/weights do not fit {NUM_FRAMES} frames")
        lw = torch.zeros(21, NUM_FRAMES, dtype=torch.float64)
        lw.scatter_add_(1, idx, w)
        verts = arr("mesh_vertices", (None, 3), required=False)
        mesh_w = arr("dense_bone_weights", (None, NUM_FRAMES), required=False)
        tris = arr("mesh_triangles", (None, 3), required=False, dtype=torch.long)
        if verts is not None and (mesh_w is None or len(mesh_w) != len(verts)):
            raise ValueError(f"{source}: mesh_vertices without matching dense_bone_weights")
        return cls(
            joint_rest_positions=arr("joint_rest_positions", (22, 3)) * mm,
            joint_rotation_axes=arr("joint_rotation_axes", (22, 3)),
            landmark_rest_positions=arr("landmark_rest_positions", (21, 3)) * mm,
            landmark_weights=lw,
            mesh_vertices=None if verts is None else verts * mm,
            mesh_triangles=tris,
            mesh_weights=mesh_w,
            source=source,
        )

    @classmethod
    def from_json(cls, path) -> "UmeTrackProfile":
        import json

        path = Path(path)
        try:
            with open(path) as f:
                d = json.load(f)
        except OSError as e:
            raise ValueError(f"cannot read UmeTrack hand profile {path}: {e}") from None
        except json.JSONDecodeError as e:
            raise ValueError(f"corrupt JSON in UmeTrack hand profile {path}: {e}") from None
        return cls.from_dict(d, source=str(path))


def wrist_frame(T_world_wrist, side: str) -> torch.Tensor:
    """(T,4,4) world-from-wrist transforms -> the transform of the profile's (left) hand frame (float64);
    for ``side="right"`` the first column is negated (the mirror HOT3D applies)."""
    W = torch.as_tensor(np.asarray(T_world_wrist, np.float64)).clone()
    if side == "right":
        W[:, :, 0] = -W[:, :, 0]
    elif side != "left":
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    return W


def wrist_matrix(q_wxyz, t_xyz, side: str) -> torch.Tensor:
    """:func:`wrist_frame` of (T,4) quaternions w,x,y,z and (T,3) translations [m]."""
    from megohand.geometry.rotations import quat_wxyz_to_matrix

    q = torch.as_tensor(np.asarray(q_wxyz, np.float64))
    W = torch.zeros(q.shape[0], 4, 4, dtype=torch.float64)
    W[:, :3, :3] = quat_wxyz_to_matrix(q)
    W[:, :3, 3] = torch.as_tensor(np.asarray(t_xyz, np.float64))
    W[:, 3, 3] = 1.0
    return wrist_frame(W, side)


def _local(profile: UmeTrackProfile, angles: torch.Tensor) -> torch.Tensor:
    """(T,20) angles [rad] -> (T,20,4,4) joint transforms L_j (rotation about the joint's rest point)."""
    axes, p = profile.joint_rotation_axes[:NUM_ANGLES], profile.joint_rest_positions[:NUM_ANGLES]
    R = axis_angle_to_matrix(axes * angles[..., None])  # (T,20,3,3)
    L = torch.zeros(*angles.shape, 4, 4, dtype=torch.float64)
    L[..., :3, :3] = R
    L[..., :3, 3] = p - (R @ p[..., None])[..., 0]
    L[..., 3, 3] = 1.0
    return L


def frames(profile: UmeTrackProfile, angles, wrist: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posed frames (T,17,4,4) and posed joint positions (T,20,3) [m] for angles (T,>=20) [rad] and
    wrist transforms (T,4,4) (:func:`wrist_matrix`)."""
    a = torch.as_tensor(np.asarray(angles, np.float64))[:, :NUM_ANGLES]
    if a.shape[1] != NUM_ANGLES:
        raise ValueError(f"UmeTrack poses need {NUM_ANGLES} joint angles, got {a.shape[1]}")
    L = _local(profile, a)
    T = a.shape[0]
    F = torch.empty(T, NUM_FRAMES, 4, 4, dtype=torch.float64)
    F[:, 0] = F[:, 1] = wrist
    joints = torch.empty(T, NUM_ANGLES, 3, dtype=torch.float64)
    p = profile.joint_rest_positions
    for f in range(5):
        A = wrist
        for k in range(4):
            j = 4 * f + k
            joints[:, j] = A[:, :3, :3] @ p[j] + A[:, :3, 3]  # joint j is carried by the chain before it
            A = A @ L[:, j]
            if k >= 1:
                F[:, 2 + 3 * f + k - 1] = A
    return F, joints


def skin(F: torch.Tensor, points: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Linear blend skinning: frames (T,17,4,4), rest points (V,3) [m], weights (V,17) -> (T,V,3)."""
    M = torch.einsum("vk,tkij->tvij", weights, F)
    return (M[..., :3, :3] @ points[:, :, None])[..., 0] + M[..., :3, 3]


def landmarks(profile: UmeTrackProfile, angles, wrist) -> torch.Tensor:
    """(T,21,3) [m] HOT3D21-order landmarks (5 tips, wrist, thumb2-3, index..pinky 1-3, palm centre)."""
    F, _ = frames(profile, angles, wrist)
    return skin(F, profile.landmark_rest_positions, profile.landmark_weights)


def mesh(profile: UmeTrackProfile, angles, wrist) -> torch.Tensor:
    """(T,V,3) [m] skinned mesh vertices (the profile must have a mesh)."""
    if profile.mesh_vertices is None:
        raise ValueError(f"{profile.source}: the UmeTrack profile has no mesh")
    F, _ = frames(profile, angles, wrist)
    return skin(F, profile.mesh_vertices, profile.mesh_weights)


def mano21_joints(profile: UmeTrackProfile, angles, wrist) -> torch.Tensor:
    """(T,21,3) [m] in MANO21 order: HOT3D21 landmarks reordered, thumb1 = the thumb's base joint."""
    F, joints = frames(profile, angles, wrist)
    lm = skin(F, profile.landmark_rest_positions, profile.landmark_weights)
    idx = torch.as_tensor(np.where(HOT3D_TO_MANO < 0, 0, HOT3D_TO_MANO))
    out = lm[:, idx]
    out[:, MANO_THUMB1] = joints[:, THUMB_BASE_JOINT]
    return out

"""Rotations, Procrustes alignment, camera projection and frame changes. Knows nothing of hands."""

from megohand.geometry.rotations import (
    axis_angle_to_matrix,
    geodesic_angle,
    matrix_to_axis_angle,
    matrix_to_quat_wxyz,
    matrix_to_quat_xyzw,
    matrix_to_rot6d,
    project_to_so3,
    quat_wxyz_to_matrix,
    quat_xyzw_to_matrix,
    rot6d_to_matrix,
    to_matrix,
)

__all__ = [
    "axis_angle_to_matrix",
    "geodesic_angle",
    "matrix_to_axis_angle",
    "matrix_to_quat_wxyz",
    "matrix_to_quat_xyzw",
    "matrix_to_rot6d",
    "project_to_so3",
    "quat_wxyz_to_matrix",
    "quat_xyzw_to_matrix",
    "rot6d_to_matrix",
    "to_matrix",
]

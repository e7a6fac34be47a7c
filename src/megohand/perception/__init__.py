"""Hand estimation from egocentric images and videos (the optional extra ``pip install -e ".[perception]"``).

Modules, one concept each:

* ``estimator``: :class:`HandDetection`, the :class:`HandEstimator` protocol (pluggable), the side decision
  from 3D geometry;
* ``mediapipe_hands``: the default estimator, MediaPipe Hands offline (needs the extra);
* ``placement``: intrinsics (read, default, check) and metric placement in the camera frame (PnP, depth);
* ``depth``: depth frames from files, or a local transformers depth-estimation model;
* ``sequence``: a video -> placed, smoothed, retargeted right hand with per-frame fit error.

Only ``mediapipe_hands`` needs MediaPipe; the rest runs on the core install. Details: docs/perception.md.
"""

from megohand.perception.estimator import HandDetection, HandEstimator, load_estimator, pick_side, side_from_geometry
from megohand.perception.placement import (
    Placement,
    check_intrinsics,
    default_intrinsics,
    place_depth,
    place_pnp,
    read_intrinsics,
)
from megohand.perception.sequence import HandTrack, fit_track, smooth_joints, track_hand

__all__ = [
    "HandDetection", "HandEstimator", "HandTrack", "Placement", "check_intrinsics", "default_intrinsics",
    "fit_track", "load_estimator", "pick_side", "place_depth", "place_pnp", "read_intrinsics",
    "side_from_geometry", "smooth_joints", "track_hand",
]

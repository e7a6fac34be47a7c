"""What a hand estimator returns per image, the protocol every estimator follows, and the side decision.

An estimator maps one RGB image (H, W, 3) uint8 to a list of :class:`HandDetection`: 21 landmarks in the
OpenPose order (``megohand.hand.joints.OPENPOSE21_NAMES``: wrist, then thumb, index, middle, ring, pinky,
base to tip), in pixels and as a metric hand-centred 3D shape. Placement in the camera frame
(``megohand.perception.placement``) and retargeting to MANO parameters come after, independent of the
estimator, so a stronger one (e.g. weights from a local folder) replaces the default by implementing
:class:`HandEstimator`.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

SIDES = ("right", "left")


@dataclass
class HandDetection:
    """One hand in one image.

    Attributes:
        keypoints_2d: (21, 2) pixel coordinates (u right, v down; integer values at pixel centres), OpenPose order.
        landmarks_3d: (21, 3) metric 3D landmarks [m], hand-centred, axes roughly the camera's (x right, y down,
            z forward); only the shape matters, placement solves for rotation and translation.
        score: confidence in [0, 1] (the detector's presence / handedness score).
        side: "right" or "left" in the unmirrored image (each estimator documents how it decides).
        chirality: the signed 3D chirality score of the landmarks [m] (> 0 looks right; :func:`side_from_geometry`).
    """

    keypoints_2d: np.ndarray
    landmarks_3d: np.ndarray
    score: float
    side: str
    chirality: float


@runtime_checkable
class HandEstimator(Protocol):
    """Anything that finds hands in images. ``tracking`` estimators may use the previous frames of the
    current video; :meth:`reset` starts a new video."""

    def __call__(self, image: np.ndarray) -> list[HandDetection]:
        """image (H, W, 3) uint8 RGB -> the hands found (possibly none)."""
        ...

    def reset(self) -> None:
        """Forget any tracking state (call before each new video)."""
        ...


def side_from_geometry(landmarks: np.ndarray) -> tuple[str, float]:
    """Right or left hand from the chirality of 21 OpenPose-order 3D landmarks (any rigid frame, metres).

    With the palm normal ``n = (index1 - wrist) x (pinky1 - wrist)``, a right hand has its thumb MCP and IP
    joints and its curled fingers on the ``+n`` side (the palm side); a left hand, its mirror image, on the
    ``-n`` side. The score is ``n_hat . ((thumb2 - wrist) + (thumb3 - wrist) + mean(tip - base))``. On 4000
    random hands of the bundled model (fingers curled -0.4..2.6 along MANO's mean pose plus noise, uniform
    wrist rotations) the sign is right for 99.7 %: exact 3D joints decide the side. Estimated landmarks may
    not: a monocular estimator that reverses the fingers' depth order reverses the chirality too.

    Returns: ("right" | "left", score [m]).
    """
    J = np.asarray(landmarks, np.float64)
    wrist, index1, pinky1 = J[0], J[5], J[17]
    n = np.cross(index1 - wrist, pinky1 - wrist)
    n /= max(float(np.linalg.norm(n)), 1e-12)
    bases, tips = J[[5, 9, 13, 17]], J[[8, 12, 16, 20]]
    s = float(n @ ((J[2] - wrist) + (J[3] - wrist) + (tips - bases).mean(0)))
    return ("right" if s >= 0 else "left"), s


def pick_side(detections: list[HandDetection], side: str = "right") -> HandDetection | None:
    """The most confident detection of ``side`` (None when there is none)."""
    same = [d for d in detections if d.side == side]
    return max(same, key=lambda d: d.score) if same else None


def load_estimator(spec: str = "mediapipe", tracking: bool = True, **kw) -> HandEstimator:
    """An estimator by name: "mediapipe" (the default, :class:`~megohand.perception.mediapipe_hands.MediaPipeHands`)
    or "package.module:factory", a callable taking ``tracking=`` (and ``**kw``) that returns a :class:`HandEstimator`.

    Raises:
        ValueError: a malformed spec, a module or attribute that does not exist, or a result without
            ``__call__`` and ``reset``.
    """
    if spec == "mediapipe":
        from megohand.perception.mediapipe_hands import MediaPipeHands

        return MediaPipeHands(tracking=tracking, **kw)
    module, _, name = spec.partition(":")
    if not module or not name:
        raise ValueError(f"estimator {spec!r}: expected 'mediapipe' or 'package.module:factory'")
    try:
        factory = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"estimator {spec!r}: cannot load it ({e})") from None
    est = factory(tracking=tracking, **kw)
    if not isinstance(est, HandEstimator):
        raise ValueError(f"estimator {spec!r}: {type(est).__name__} lacks __call__(image) and reset()")
    return est

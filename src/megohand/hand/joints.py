"""Joint names and orders, all in one place.

Index arrays are named ``A_TO_B`` and used as ``joints_B = joints_A[..., A_TO_B, :]``; an entry of
-1 means "B's joint has no counterpart in A" (see :func:`megohand.hand.conventions.remap_joints`).

Orders:

* **MANO21** (ours, the hand layer's output): MANO/smplx 16 joints (wrist, index1-3, middle1-3,
  pinky1-3, ring1-3, thumb1-3) + fingertip vertices thumb, index, middle, ring, pinky
  (smplx ``vertex_ids['mano']`` = 744, 320, 443, 554, 671).
* **OPENPOSE21** (OpenPose, FreiHAND, H2O ``hand_pose``, HaMeR, RTMPose): wrist, then per finger
  thumb, index, middle, ring, pinky: 3 joints from the base outwards + tip.
* **MANOPTH21** (manopth ``ManoLayer``): the same names and order as OPENPOSE21, but manopth's tips
  are vertices 745, 317, 444, 556, 673 (``manolayer.py``), a few mm from ours.
* **FPHA21** (F-PHAB ``skeleton.txt``): wrist, the 5 MCPs (T, I, M, R, P), then per finger
  (T, I, M, R, P) PIP, DIP, TIP (the order of F-PHAB's README).
* **HOT3D21** (``hot3d/data_loaders/hand_common.py`` ``LANDMARK_INDEX_TO_NAMING``): 5 fingertips,
  wrist, thumb intermediate, thumb distal, index/middle/ring/pinky proximal, intermediate, distal,
  palm center. HOT3D's MANO layer fills the first 20 with
  ``mano_joint_mapping = [16,17,18,19,20,0,14,15,1,2,3,4,5,6,10,11,12,7,8,9]``
  (``hot3d/data_loaders/mano_layer.py``, facebookresearch/hot3d): MANO thumb1 (13) is not a
  landmark and the palm center is not a MANO joint.
* **HOLOASSIST26** (HoloLens 2 ``HandJointKind``, as exported by microsoft/psi
  HoloLensCaptureExporter and read by taeinkwon/PyHoloAssist): palm, wrist, then thumb metacarpal,
  proximal, distal, tip, then index/middle/ring/little metacarpal, proximal, intermediate, distal,
  tip. To 21 joints: ``[1, 2,3,4,5, 7,8,9,10, 12,13,14,15, 17,18,19,20, 22,23,24,25]`` (OpenPose
  order; the finger metacarpals 6, 11, 16, 21 and the palm 0 are dropped; thumb metacarpal = CMC).
"""

from __future__ import annotations

import numpy as np

FINGERS = ("thumb", "index", "middle", "ring", "pinky")

MANO16_NAMES = (
    "wrist",
    "index1", "index2", "index3",
    "middle1", "middle2", "middle3",
    "pinky1", "pinky2", "pinky3",
    "ring1", "ring2", "ring3",
    "thumb1", "thumb2", "thumb3",
)  # fmt: skip
MANO21_NAMES = MANO16_NAMES + tuple(f"{f}_tip" for f in FINGERS)
MANO_PARENTS = (-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14)
MANO_TIP_VERTEX_IDS = (744, 320, 443, 554, 671)  # thumb, index, middle, ring, pinky (smplx)
MANOPTH_TIP_VERTEX_IDS = (745, 317, 444, 556, 673)  # manopth manolayer.py, same finger order

OPENPOSE21_NAMES = ("wrist",) + tuple(f"{f}{k}" for f in FINGERS for k in ("1", "2", "3", "_tip"))
MANOPTH21_NAMES = OPENPOSE21_NAMES
FPHA21_NAMES = (
    ("wrist",)
    + tuple(f"{f}1" for f in FINGERS)
    + tuple(f"{f}{k}" for f in FINGERS for k in ("2", "3", "_tip"))
)
HOT3D21_NAMES = (
    tuple(f"{f}_tip" for f in FINGERS)
    + ("wrist", "thumb2", "thumb3")
    + tuple(f"{f}{k}" for f in FINGERS[1:] for k in ("1", "2", "3"))
    + ("palm_center",)
)
HOLOASSIST26_NAMES = ("palm", "wrist") + tuple(
    f"{f}_{k}"
    for f in ("thumb", "index", "middle", "ring", "little")
    for k in (("metacarpal", "proximal", "distal", "tip") if f == "thumb"
              else ("metacarpal", "proximal", "intermediate", "distal", "tip"))
)  # fmt: skip

# --- index arrays: joints_B = joints_A[..., A_TO_B, :] ------------------------------------------
MANO_TO_OPENPOSE = np.array([0, 13, 14, 15, 16, 1, 2, 3, 17, 4, 5, 6, 18, 10, 11, 12, 19, 7, 8, 9, 20])
OPENPOSE_TO_MANO = np.argsort(MANO_TO_OPENPOSE)
MANO_TO_MANOPTH = MANO_TO_OPENPOSE  # joint order only; tips differ (MANOPTH_TIP_VERTEX_IDS)
MANOPTH_TO_MANO = OPENPOSE_TO_MANO
FPHA_TO_OPENPOSE = np.array([0, 1, 6, 7, 8, 2, 9, 10, 11, 3, 12, 13, 14, 4, 15, 16, 17, 5, 18, 19, 20])
OPENPOSE_TO_FPHA = np.argsort(FPHA_TO_OPENPOSE)
FPHA_TO_MANO = FPHA_TO_OPENPOSE[OPENPOSE_TO_MANO]
MANO_TO_FPHA = np.argsort(FPHA_TO_MANO)
# HOT3D: hot3d/data_loaders/mano_layer.py mano_joint_mapping (20 landmarks) + palm center (none in MANO)
MANO_TO_HOT3D = np.array([16, 17, 18, 19, 20, 0, 14, 15, 1, 2, 3, 4, 5, 6, 10, 11, 12, 7, 8, 9, -1])
HOT3D_TO_MANO = np.array([int(np.flatnonzero(MANO_TO_HOT3D == j)[0]) if j in MANO_TO_HOT3D else -1 for j in range(21)])
# MANO21 points without a HOT3D21 landmark (thumb1): a HOT3D-derived MANO21 skeleton can only stand them in
HOT3D_MISSING_MANO = tuple(MANO21_NAMES[j] for j in np.flatnonzero(HOT3D_TO_MANO < 0))
HOLOASSIST_TO_OPENPOSE = np.array([1, 2, 3, 4, 5, 7, 8, 9, 10, 12, 13, 14, 15, 17, 18, 19, 20, 22, 23, 24, 25])
HOLOASSIST_TO_MANO = HOLOASSIST_TO_OPENPOSE[OPENPOSE_TO_MANO]

JOINT_ORDERS = {
    "mano": MANO21_NAMES,
    "openpose": OPENPOSE21_NAMES,
    "manopth": MANOPTH21_NAMES,
    "fpha": FPHA21_NAMES,
    "hot3d": HOT3D21_NAMES,
    "holoassist": HOLOASSIST26_NAMES,
}


def index_map(src: str, dst: str) -> np.ndarray:
    """Index array ``joints_dst = joints_src[..., idx, :]`` between two named orders (by joint
    name; -1 where ``dst`` has a joint that ``src`` lacks). HoloAssist names map through
    :data:`HOLOASSIST_TO_OPENPOSE`."""
    names = {k: list(v) for k, v in JOINT_ORDERS.items()}
    hl = names["holoassist"]
    holo_as_op = [None] * 26
    for op_i, h_i in enumerate(HOLOASSIST_TO_OPENPOSE):
        holo_as_op[h_i] = OPENPOSE21_NAMES[op_i]
    names["holoassist"] = [n if n is not None else f"holoassist:{hl[i]}" for i, n in enumerate(holo_as_op)]
    s, d = names[src], names[dst]
    return np.array([s.index(n) if n in s else -1 for n in d])

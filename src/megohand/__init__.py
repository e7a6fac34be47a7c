"""megohand: an open implementation of MEgoHand (Zhou et al., arXiv 2505.16602).

Conventions (one place each, see README "Conventions"):
  units metres / radians / seconds; camera frame OpenCV (x right, y down, z forward);
  6D rotation = first two columns of R (``megohand.geometry.rotations``);
  flow matching tau = 1 is data (``megohand.models.flow_matching``);
  hand parameters = MANO axis-angle with absolute local joint rotations (flat_hand_mean=True),
  smplx-style ``transl`` (wrist joint at J0(betas) + transl).
"""

__version__ = "0.1.0"

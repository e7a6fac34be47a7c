"""megohand.hand: the MANO-format hand layer, its asset loading, conventions and the hand vector.

``load_hand_model(source=None, side="right")`` -> :class:`HandModel` (MANO if found, else the
bundled open hand); ``hand(global_orient, hand_pose, betas, transl, rot=...)`` -> ``HandOutput``.
"""

from megohand.hand.model import HandModel, HandOutput, load_hand_model

__all__ = ["HandModel", "HandOutput", "load_hand_model"]

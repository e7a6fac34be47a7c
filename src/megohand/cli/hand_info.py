"""``megohand hand-info``: which hand model would be used, and its sizes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal


@dataclass
class HandInfo:
    """Print the hand model that megohand would load (MANO if found, else the bundled open hand)."""

    mano_dir: Path | None = None
    """Folder with MANO_RIGHT.pkl / MANO_LEFT.pkl (or .npz); default: $MANO_MODEL_DIR, else the bundled open hand."""
    side: Literal["right", "left"] = "right"
    """Hand side: right or left."""

    def run(self) -> None:
        from megohand.hand import load_hand_model

        hand = load_hand_model(self.mano_dir, side=self.side)
        print(hand.describe())

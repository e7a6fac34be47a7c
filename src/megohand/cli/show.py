"""``megohand show``: watch one stored episode (MP4 with the hand overlaid and depth beside it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro


@dataclass
class Show:
    """Write an MP4 of one episode: egocentric RGB with the hand mesh blended over it, the depth map
    beside it, the instruction and current segment beneath; optionally a 3D rerun recording."""

    dataset: Annotated[str, tyro.conf.arg(aliases=("-d",))]
    """Dataset name in the store (e.g. synthetic)."""
    task: Annotated[str, tyro.conf.arg(aliases=("-t",))]
    """Episode id (the dataset's native task id, e.g. 000003 or s01/box_use_02)."""
    root: Path
    """Store folder."""
    out: Path | None = None
    """Output MP4; default ./<dataset>_<task>.mp4."""
    viewer: Literal["none", "rerun"] = "none"
    """Also write an interactive 3D view: "rerun" writes <out>.rrd (needs rerun-sdk: pip install megohand[viz];
    open with `rerun FILE.rrd`)."""
    strip: Path | None = None
    """Also write a PNG strip of 6 evenly spaced frames here."""
    gif: Path | None = None
    """Also write a small GIF here."""
    scale: int = 0
    """Upscale factor of the video (nearest); 0 = enough for ~384 px tall panels."""
    alpha: float = 0.55
    """Opacity of the hand overlay."""
    hand: Path | None = None
    """Hand model file or MANO folder; default: MANO if the episode was stored with MANO and $MANO_MODEL_DIR is
    set, else the bundled open hand."""

    def run(self) -> None:
        from megohand.data.store import Store
        from megohand.viz.show import show_episode

        store = Store(self.root)
        episode = store.open(self.dataset, self.task)
        out = self.out or Path(f"{self.dataset}_{self.task.replace('/', '_')}.mp4")
        paths = show_episode(episode, out, hand_source=self.hand, scale=self.scale, alpha=self.alpha,
                             rrd=out.with_suffix(".rrd") if self.viewer == "rerun" else None,
                             strip=self.strip, gif=self.gif)
        for p in paths:
            print(p)

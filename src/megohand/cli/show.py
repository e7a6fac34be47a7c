"""``megohand show``: watch one stored episode (MP4 with the hand overlaid and depth beside it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Literal

import tyro

from megohand.errors import UserError


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
    overwrite: bool = False
    """Replace existing output files."""

    def run(self) -> None:
        from megohand import io
        from megohand.data.store import Store
        from megohand.errors import check, check_input, check_min
        from megohand.viz.show import show_episode

        check_input(self.root, "--root", what="store")
        check_min(0, scale=self.scale)
        check(0 <= self.alpha <= 1, "--alpha", self.alpha, "an opacity in [0, 1]")
        if self.hand is not None:
            check(self.hand.exists(), "--hand", str(self.hand), "an existing hand model file or MANO folder")
        out = self.out or Path(f"{self.dataset}_{self.task.replace('/', '_')}.mp4")
        check(out.suffix.lower() == ".mp4", "--out", str(out), "a file name ending in .mp4")
        outs = [(out, "--out"), (self.strip, "--strip"), (self.gif, "--gif")]
        if self.viewer == "rerun":
            outs.append((out.with_suffix(".rrd"), "--viewer rerun"))
            try:
                import rerun  # noqa: F401
            except ImportError:
                raise UserError("needs the optional rerun-sdk", field="--viewer rerun",
                                hint="pip install 'megohand[viz]', or leave --viewer at none") from None
        for path, option in outs:
            if path is not None:
                io.check_output_file(path, self.overwrite, option)
        store = Store(self.root)
        episode = store.open(self.dataset, self.task)
        paths = show_episode(episode, out, hand_source=self.hand, scale=self.scale, alpha=self.alpha,
                             rrd=out.with_suffix(".rrd") if self.viewer == "rerun" else None,
                             strip=self.strip, gif=self.gif)
        for p in paths:
            print(p)

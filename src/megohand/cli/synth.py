"""``megohand synth``: write the procedural egocentric hand-object world into the unified store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from megohand.data import DEFAULT_COPY_SIZES


@dataclass
class Synth:
    """Draw the synthetic world into the store at --out (RGB, rendered depth, exact right-hand parameters, text).

    The dataset is called "synthetic". Deterministic given --seed; re-running resumes where it stopped."""

    out: Path
    """Store folder to write into (created)."""
    world: Literal["grounded", "classic"] = "grounded"
    """Which world: "grounded" (landmark destinations, same-shape distractors, text that never says where:
    the image decides the motion) or "classic" (the first world, of the published benchmark and the demo)."""
    episodes: int = 100
    """Number of episodes (ids 000000 .. episodes-1)."""
    seed: int = 0
    """Master seed: episode i is a pure function of (seed, i)."""
    image_size: tuple[int, ...] = (128,)
    """Image size in pixels: one value (square) or two (width height)."""
    fps: float = 30.0
    """Frame rate [Hz]."""
    workers: int = 1
    """Worker processes."""
    split_seed: int = 0
    """Seed of the (shape, colour, task) combos held out for the test split."""
    holdout_fraction: float = 0.2
    """Fraction of combos held out for test."""
    test_fraction: float = 0.15
    """Fraction of episodes drawn from held-out combos (split "test")."""
    val_fraction: float = 0.05
    """Fraction of episodes from train combos kept for validation (split "val")."""
    mano_dir: Path | None = None
    """MANO folder (MANO_RIGHT.pkl); default $MANO_MODEL_DIR, else the bundled open hand."""
    copy_sizes: tuple[int, ...] = DEFAULT_COPY_SIZES
    """Short sides [px] of training-size copies written beside the stored frames (RGB, depth, K scaled;
    docs/data_format.md "Training-size copies"): a model of input size S reads the smallest copy >= S, about 3x
    (640x480) to 6x (1080p) faster than the full frames. The default holds one per preset (paper 224, compact
    128). Only where the frames are larger (not at the default --image-size 128); none: `--copy-sizes` with no
    value."""
    overwrite: bool = False
    """Write into a non-empty --out that is not a megohand store (a store is resumed)."""

    def run(self) -> None:
        from megohand import io
        from megohand.data.store import check_copy_sizes_option, has_episodes
        from megohand.data.synthetic import SynthConfig, synthesize
        from megohand.errors import check, check_fraction, check_min

        check_min(1, episodes=self.episodes, workers=self.workers)
        check(self.fps > 0 and self.fps <= 1000, "--fps", self.fps, "a frame rate in (0, 1000] Hz")
        check(len(self.image_size) in (1, 2) and min(self.image_size) >= 16 and max(self.image_size) <= 4096,
              "--image-size", self.image_size, "one or two sizes in [16, 4096] px")
        check_copy_sizes_option(self.copy_sizes)
        check_fraction(holdout_fraction=self.holdout_fraction, test_fraction=self.test_fraction,
                       val_fraction=self.val_fraction)
        check(self.test_fraction + self.val_fraction <= 1, "--test-fraction + --val-fraction",
              self.test_fraction + self.val_fraction, "a sum <= 1")
        if self.mano_dir is not None:
            check(self.mano_dir.exists(), "--mano-dir", str(self.mano_dir), "an existing MANO folder or file")
        io.check_output_dir(self.out, self.overwrite, accept=lambda p: (p / "store.json").is_file())
        width, height = (self.image_size * 2)[:2]
        cfg = SynthConfig(world=self.world, seed=self.seed, width=width, height=height, fps=self.fps,
                          split_seed=self.split_seed,
                          holdout_fraction=self.holdout_fraction, test_fraction=self.test_fraction,
                          val_fraction=self.val_fraction)
        with io.cleanup_on_error(self.out, keep=has_episodes):  # no empty store left behind
            done = synthesize(self.out, self.episodes, cfg, workers=self.workers,
                              mano_dir=None if self.mano_dir is None else str(self.mano_dir),
                              copy_sizes=self.copy_sizes)
        print(f"wrote {len(done)} new episodes ({self.episodes} in total) of dataset 'synthetic' "
              f"({self.world} world) to {self.out}")

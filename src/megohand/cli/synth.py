"""``megohand synth``: write the procedural egocentric hand-object world into the unified store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass
class Synth:
    """Generate dataset "synthetic" (RGB, rendered depth, exact right-hand parameters, instructions)
    into the store at --out. Deterministic given --seed; re-running resumes where it stopped."""

    out: Path
    """Store folder to write into (created)."""
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

    def run(self) -> None:
        from megohand.data.synthetic import SynthConfig, synthesize

        if len(self.image_size) not in (1, 2) or min(self.image_size) < 16:
            raise SystemExit(f"--image-size takes one or two sizes >= 16 px, got {self.image_size}")
        width, height = (self.image_size * 2)[:2]
        cfg = SynthConfig(seed=self.seed, width=width, height=height, fps=self.fps, split_seed=self.split_seed,
                          holdout_fraction=self.holdout_fraction, test_fraction=self.test_fraction,
                          val_fraction=self.val_fraction)
        done = synthesize(self.out, self.episodes, cfg, workers=self.workers,
                          mano_dir=None if self.mano_dir is None else str(self.mano_dir))
        print(f"wrote {len(done)} new episodes ({self.episodes} in total) of dataset 'synthetic' to {self.out}")

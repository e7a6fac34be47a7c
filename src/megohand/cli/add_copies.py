"""``megohand add-copies STORE --sizes 224``: add training-size copies of the frames to an existing store."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from tyro.conf import Positional

from megohand.data import DEFAULT_COPY_SIZES


@dataclass
class AddCopies:
    """Add training-size copies of the frames to a store written before they existed (no reconversion).

    Each episode gets, beside its stored frames (which stay), a copy per size whose short side is that size (RGB
    area-averaged, depth nearest neighbour, K scaled: docs/data_format.md, "Training-size copies"); training and
    evaluation read the smallest copy that fits the model's input. Resumable (episodes that list a size keep it)
    and atomic per episode (meta.json names the new packs only once they are complete), with a progress bar."""

    path: Positional[Path]
    """Store folder (the one holding store.json)."""
    sizes: list[int] = field(default_factory=lambda: list(DEFAULT_COPY_SIZES))
    """Short sides of the copies [px] (the models' input sizes: 224 for the paper preset, 128 for compact; a model
    reads the smallest copy at least its size). Frames whose short side is not larger get no copy."""
    datasets: list[str] | None = None
    """Only these datasets (default: all)."""
    workers: int = 1
    """Worker processes (episodes in parallel)."""
    overwrite: bool = False
    """Write copies that episodes already list again."""

    def run(self) -> None:
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing as mp

        from tqdm import tqdm

        from megohand.data.store import Store, StoreError, check_copy_sizes_option
        from megohand.errors import check, check_input, check_min

        check_input(self.path, "PATH", what="store")
        check((self.path / "store.json").is_file(), "PATH", str(self.path),
              "a megohand store (a folder with store.json)")
        check_min(1, workers=self.workers)
        check_copy_sizes_option(self.sizes, "--sizes")
        store = Store(self.path)
        for d in self.datasets or []:
            if d not in store.datasets():
                raise StoreError(f"dataset {d!r} not in store {self.path} (has {store.datasets()})")
        refs = store.episodes(self.datasets)
        paths = [store.episode_path(r.dataset, r.episode) for r in refs]
        written = 0
        with tqdm(total=sum(r.num_frames for r in refs), desc="add-copies", unit="frame") as bar:
            if self.workers <= 1:
                for r, p in zip(refs, paths):
                    done = _add(p, self.sizes, self.overwrite, bar.update)
                    written += bool(done)
                    bar.update(0 if done else r.num_frames)  # an episode that had its copies
            else:
                with ProcessPoolExecutor(self.workers, mp_context=mp.get_context("spawn")) as ex:
                    futs = [ex.submit(_add, p, self.sizes, self.overwrite) for p in paths]
                    for r, fut in zip(refs, futs):  # in order: the first failure stops the run
                        written += bool(fut.result())
                        bar.update(r.num_frames)
        print(f"{self.path}: copies {sorted(set(self.sizes))} added to {written} of {len(paths)} episodes "
              f"(the others had them, or frames not larger)")


def _add(path: Path, sizes, overwrite: bool, progress=None) -> list[int]:
    """Copies of one episode (the sizes written)."""
    from megohand.data.store import add_episode_copies

    return add_episode_copies(path, sizes, overwrite=overwrite, progress=progress)

"""Small pictures of an episode for docs: a PNG strip of evenly spaced frames, a GIF."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image

from megohand import io


def _atomic_save(img: Image.Image | list, path: Path, **kw) -> None:
    with io.atomic_path(path) as tmp:
        if isinstance(img, list):
            img[0].save(tmp, save_all=True, append_images=img[1:], **kw)
        else:
            img.save(tmp, **kw)


def pick(n_total: int, n: int) -> list[int]:
    """``n`` evenly spaced frame indices of ``n_total`` (first and last included)."""
    return np.linspace(0, n_total - 1, min(n, n_total)).round().astype(int).tolist()


def save_strip(frames: Sequence[np.ndarray], path: str | Path, columns: int | None = None, gap: int = 2,
               title: str | None = None) -> Path:
    """Tile (H, W, 3) uint8 frames into one PNG (one row, or rows of ``columns``), white gaps,
    with an optional ``title`` bar on top."""
    path = Path(path)
    columns = columns or len(frames)
    h, w = frames[0].shape[:2]
    rows = -(-len(frames) // columns)
    canvas = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap, 3), 255, np.uint8)
    for i, f in enumerate(frames):
        r, c = divmod(i, columns)
        canvas[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = f
    if title:
        from megohand.viz.frames import _caption

        canvas = np.concatenate([_caption(canvas.shape[1], [title], max(1, h // 128)), canvas], axis=0)
    _atomic_save(Image.fromarray(canvas), path, optimize=True)
    return path


def save_gif(frames: Sequence[np.ndarray], path: str | Path, fps: float = 15.0, width: int | None = None,
             colors: int = 255) -> Path:
    """Write frames as a looping GIF (optionally resized to ``width``) with ONE palette of ``colors``
    built from a montage of the frames (stable colours, no flicker, smaller file)."""
    path = Path(path)
    imgs = []
    for f in frames:
        img = Image.fromarray(np.asarray(f, np.uint8))
        if width and img.width != width:
            img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
        imgs.append(img)
    sample = imgs[:: max(1, len(imgs) // 8)]
    montage = Image.fromarray(np.concatenate([np.asarray(i) for i in sample], axis=0))
    palette = montage.quantize(colors=colors, method=Image.Quantize.FASTOCTREE)
    frames_p = [i.quantize(palette=palette, dither=Image.Dither.NONE) for i in imgs]
    _atomic_save(frames_p, path, duration=int(round(1000 / fps)), loop=0, optimize=False)
    return path

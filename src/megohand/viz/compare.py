"""Prediction against ground truth, drawn so that a person can read it: both hands in their fixed
colours (``megohand.render.overlay.PRED_COLOR`` / ``TRUE_COLOR``), frames upscaled to at least
``min_side`` pixels with the meshes rendered at that size, and a legend drawn into every picture
(instruction, frame counter, one colour swatch per hand).
"""

from __future__ import annotations

import math
import re
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from megohand.render.overlay import PRED_COLOR, TRUE_COLOR, hand_mesh, overlay_batch


def _rgb255(color) -> tuple[int, int, int]:
    return tuple(int(round(255 * c)) for c in color)


def upscale(image: np.ndarray, K, min_side: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W, 3) uint8 and its K (3, 3) -> the image resized by an integer factor so that its short side
    is >= ``min_side`` (bicubic) and the K of the resized image (pixel-centre convention)."""
    H, W = image.shape[:2]
    s = max(1, math.ceil(min_side / min(H, W)))
    K = np.array(K, dtype=np.float64)
    if s == 1:
        return image, K
    big = np.asarray(Image.fromarray(image).resize((W * s, H * s), Image.BICUBIC))
    K[:2, :2] *= s
    K[:2, 2] = (K[:2, 2] + 0.5) * s - 0.5
    return big, K


def legend_bar(width: int, title: str, status: str, entries: Sequence[tuple[str, tuple]], font_size: int) -> np.ndarray:
    """(h, width, 3) uint8 dark bar: ``title`` (wrapped to two lines), then ``status`` and one colour
    swatch + label per ``entries`` item ((label, RGB 0..1)), an item moved to the next line where it would not
    fit. Where it wraps does not depend on the digits of ``status`` (every digit measured as 8), so the frames
    of one video keep one height."""
    font = ImageFont.load_default(size=font_size)
    pad, line, gap = font_size // 2, int(font_size * 1.35), 2 * font_size
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    words, lines, cur = title.split(), [], ""
    for w in words:
        trial = f"{cur} {w}".strip()
        if cur and probe.textlength(trial, font=font) > width - 2 * pad:
            lines.append(cur)
            cur = w
        else:
            cur = trial
    lines = (lines + [cur])[:2] if cur or lines else [""]
    # items of the status line(s): (x offset of the label, width, label, swatch colour or None), wrapped
    items = [(0, probe.textlength(re.sub(r"\d", "8", status), font=font), status, None)]
    items += [(font_size + pad, font_size + pad + probe.textlength(label, font=font), label, color)
              for label, color in entries]
    rows, x = [[]], pad
    for item in items:
        if rows[-1] and x + item[1] > width - pad:
            rows.append([])
            x = pad
        rows[-1].append((x, item))
        x += int(item[1]) + gap
    h = pad * 2 + line * (len(lines) + len(rows))
    img = Image.new("RGB", (width, h), (18, 18, 22))
    draw = ImageDraw.Draw(img)
    for i, text in enumerate(lines):
        draw.text((pad, pad + i * line), text, fill=(240, 240, 240), font=font)
    for r, row in enumerate(rows):
        y = pad + (len(lines) + r) * line
        for x, (label_dx, _, label, color) in row:
            if color is not None:
                draw.rectangle([x, y + font_size // 6, x + font_size, y + font_size], fill=_rgb255(color),
                               outline=(255, 255, 255))
            draw.text((x + label_dx, y), label, fill=(240, 240, 240) if color is not None else (200, 200, 200),
                      font=font)
    return np.asarray(img)


def comparison_frames(images: Sequence[np.ndarray], K, faces, pred_vertices, true_vertices=None, title: str = "",
                      pred_label: str = "prediction", true_label: str = "ground truth", min_side: int = 512,
                      alpha: float = 0.6, numbers: Sequence[int] | None = None, note: str = "") -> list[np.ndarray]:
    """Frames with the predicted hand (PRED_COLOR) and, if given, the true hand (TRUE_COLOR) drawn over them.

    images: T frames (H, W, 3) uint8 sharing K (3, 3); faces (F, 3); pred_vertices / true_vertices
    (T, V, 3) camera frame [m] (a frame of NaN vertices draws no hand). Each output frame is upscaled to
    a short side >= ``min_side``, the meshes rendered at that size, with :func:`legend_bar` on top saying
    "frame <numbers[t]> / <last>" (default 0..T-1) and ``note``.
    """
    faces = np.asarray(faces)
    entries = [(pred_label, PRED_COLOR)] + ([(true_label, TRUE_COLOR)] if true_vertices is not None else [])
    numbers = list(range(len(images))) if numbers is None else list(numbers)
    bigs, meshes = [], []
    for t, img in enumerate(images):
        big, Kb = upscale(np.asarray(img, np.uint8), K, min_side)
        bigs.append(big)
        meshes.append([hand_mesh(verts[t], faces, color)
                       for verts, color in ((true_vertices, TRUE_COLOR), (pred_vertices, PRED_COLOR))
                       if verts is not None and np.isfinite(verts[t]).all()])
    out = []
    for t, big in enumerate(overlay_batch(bigs, Kb, meshes, alpha=alpha) if bigs else []):
        W = big.shape[1]
        status = f"frame {numbers[t]:3d} / {max(numbers)}{note}"
        out.append(np.concatenate([legend_bar(W, title, status, entries, max(12, W // 30)), big], axis=0))
    return out


def write_comparison(images: Sequence[np.ndarray], K, faces, pred_vertices, true_vertices, title: str, mp4, png,
                     fps: float, pred_label: str = "prediction", true_label: str = "ground truth",
                     min_seconds: float = 5.0, min_side: int = 512) -> None:
    """:func:`comparison_frames` as an MP4 slowed down to last at least ``min_seconds`` (the legend says the
    speed; the last frame is held for a second) and a PNG strip of 6 evenly spaced frames (3 per row)."""
    from megohand.viz.strip import pick, save_strip
    from megohand.viz.video import write_mp4

    play = min(fps, max(1.0, len(images) / min_seconds))
    note = f"  ({play / fps:.2g}x speed)" if play < fps else ""
    frames = comparison_frames(images, K, faces, pred_vertices, true_vertices, title, pred_label, true_label,
                               min_side=min_side, note=note)
    write_mp4(frames + [frames[-1]] * int(round(play)), mp4, play)
    idx = pick(len(images), 6)
    sub = lambda v: None if v is None else np.asarray(v)[idx]  # noqa: E731
    still = comparison_frames([images[i] for i in idx], K, faces, sub(pred_vertices), sub(true_vertices), title,
                              pred_label, true_label, min_side=min_side, numbers=idx)
    save_strip(still, png, columns=3, gap=6, optimize=False)

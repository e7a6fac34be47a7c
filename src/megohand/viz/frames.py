"""Per-frame pictures of a stored episode: RGB with the hand mesh blended over it | depth."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from megohand.data.store import Episode
from megohand.render.overlay import TRUE_COLOR, TRUE_COLOR_LEFT, colorize_depth, hand_mesh, overlay_batch

# Stored hands are the truth: the ground-truth colours of megohand.render.overlay, one per side.
HAND_COLORS = {"right": TRUE_COLOR, "left": TRUE_COLOR_LEFT}


def hand_vertices(episode: Episode, hand, side: str = "right") -> tuple[np.ndarray, np.ndarray]:
    """Camera-frame vertices (T, V, 3) [m] of one side and its valid flags (T,)."""
    h = episode.hands(side)
    p = {k: torch.tensor(np.asarray(h[k], dtype=np.float32)) for k in ("global_orient", "hand_pose", "betas",
                                                                          "transl")}
    with torch.no_grad():
        v = hand(p["global_orient"], p["hand_pose"].reshape(-1, 15, 3), p["betas"], p["transl"]).vertices
    return v.numpy(), np.asarray(h["valid"], dtype=bool)


def _caption(width: int, lines: list[str], scale: int) -> np.ndarray:
    """(h, width, 3) uint8 bar with text lines (PIL's default font)."""
    font = ImageFont.load_default(size=max(10, 6 * scale)) if hasattr(ImageFont, "load_default") else None
    h = (8 * scale + 4) * len(lines) + 4
    img = Image.new("RGB", (width, h), (20, 20, 24))
    draw = ImageDraw.Draw(img)
    for i, line in enumerate(lines):
        draw.text((4, 2 + i * (8 * scale + 4)), line, fill=(235, 235, 235), font=font)
    return np.asarray(img)


def _wrap(text: str, width_chars: int) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width_chars:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    return lines + [cur] if cur else lines or [""]


def depth_range(episode: Episode, background: float = 2.0) -> tuple[float, float]:
    """(near, far) [m] for colour-mapping: 1st / 99th percentile of the surfaces of the first,
    middle and last frames (pixels at the background depth or 0 ignored), padded by 5 cm."""
    T = episode.num_frames
    d = [episode.depth(k) for k in sorted({0, T // 2, T - 1})]
    v = np.concatenate([x[(x > 0) & (x < background - 1e-3)] for x in d if x is not None] or [np.zeros(0)])
    if v.size == 0:
        return 0.0, background
    return max(0.0, float(np.percentile(v, 1)) - 0.05), float(np.percentile(v, 99)) + 0.05


def _overlaid(episode: Episode, order: list[int], K, sides: dict, alpha: float, chunk: int = 64) -> Iterator[np.ndarray]:
    """RGB frames ``order`` with the valid hands of ``sides`` blended over them, rendered in chunks."""
    for s in range(0, len(order), chunk):
        ks = order[s:s + chunk]
        meshes = [[hand_mesh(v[k], f, HAND_COLORS[side]) for side, (v, valid, f) in sides.items() if valid[k]]
                  for k in ks]
        yield from overlay_batch([episode.rgb(k) for k in ks], K, meshes, alpha)


def episode_panels(episode: Episode, hands: dict, alpha: float = 0.55, scale: int = 2,
                   frames: list[int] | None = None, caption: bool = True) -> Iterator[np.ndarray]:
    """Yield one (H', W', 3) uint8 picture per frame: [RGB + hand overlay | colour-mapped depth],
    upscaled ``scale`` times (nearest), with the instruction, the current segment and the frame
    index beneath when ``caption``. Depth is colour-mapped over the episode's ``depth_range``
    (near = bright).

    ``hands``: {"right": HandModel, "left": HandModel} for the sides to draw (a side whose frames
    are all invalid is skipped).
    """
    meta = episode.meta
    T = episode.num_frames
    K = np.asarray(episode.K, dtype=np.float64)
    near, far = depth_range(episode)
    sides = {}
    for side, model in hands.items():
        verts, valid = hand_vertices(episode, model, side)
        if valid.any():
            sides[side] = (verts, valid, model.faces.cpu().numpy())
    order = list(range(T) if frames is None else frames)
    for k, rgb in zip(order, _overlaid(episode, order, K, sides, alpha)):
        depth = episode.depth(k)
        right = colorize_depth(depth, max_depth=far, min_depth=near) if depth is not None else np.full_like(rgb, 40)
        panel = np.concatenate([rgb, right], axis=1)
        if scale > 1:
            panel = panel.repeat(scale, axis=0).repeat(scale, axis=1)
        if caption:
            seg = next((t for s, e, t in meta.segments if s <= k < e), "")
            chars = max(20, panel.shape[1] // (4 * scale + 1))
            lines = _wrap(meta.instruction or meta.episode, chars)[:2]
            lines.append(f"{k:3d}/{T}  {seg}"[:chars])
            panel = np.concatenate([panel, _caption(panel.shape[1], lines, scale)], axis=0)
        yield panel

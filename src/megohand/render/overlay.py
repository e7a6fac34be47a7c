"""Draw meshes over images and turn depth into pictures (for the visualiser and generation outputs)."""

from __future__ import annotations

import numpy as np

from megohand.render.rasterizer import Mesh, Renderer, _np

# One colour convention for every picture megohand draws (demo, show, generate, the 3D view), RGB 0..1:
# what a model predicts is cyan, what is true (stored / ground truth) is magenta; both stay apart from skin
# tones and from the synthetic world's object colours (red, green, blue, yellow, purple, orange).
PRED_COLOR = (0.00, 0.85, 1.00)
TRUE_COLOR = (1.00, 0.20, 0.75)
TRUE_COLOR_LEFT = (0.95, 0.95, 0.95)  # the true left hand (white), where both hands are shown
HAND_COLOR = PRED_COLOR  # default of the overlay functions: they draw generated hands

_RENDERERS: dict[tuple[int, int], Renderer] = {}


def _renderer(width: int, height: int) -> Renderer:
    key = (width, height)
    if key not in _RENDERERS:
        _RENDERERS[key] = Renderer(width, height)
    return _RENDERERS[key]


def hand_mesh(vertices, faces, color=HAND_COLOR) -> Mesh:
    """A smooth-shaded hand Mesh from (V, 3) vertices [m] (array or tensor) and (F, 3) faces."""
    return Mesh(_np(vertices, np.float32), _np(faces, np.int64), color, smooth=True)


def blend(image: np.ndarray, rgb: np.ndarray, mask: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Alpha-blend ``rgb`` over ``image`` where ``mask`` > 0: (H, W, 3) uint8 x2, (H, W) -> (H, W, 3) uint8."""
    image = np.asarray(image)
    if image.shape != rgb.shape or image.dtype != np.uint8:
        raise ValueError(f"image must be uint8 {rgb.shape}, got {image.dtype} {image.shape}")
    out = image.astype(np.float32)
    m = (np.asarray(mask) > 0)[..., None]
    out = np.where(m, (1 - alpha) * out + alpha * rgb.astype(np.float32), out)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def overlay_meshes(image: np.ndarray, K, meshes: list[Mesh], alpha: float = 0.6, T_cam_from_world=None) -> np.ndarray:
    """Render ``meshes`` with camera K (3, 3) and blend them over ``image`` (H, W, 3) uint8 -> (H, W, 3) uint8."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"image must be (H, W, 3) uint8, got {image.shape}")
    H, W = image.shape[:2]
    out = _renderer(W, H).render(K, meshes, T_cam_from_world)
    return blend(image, out.rgb, out.mask, alpha)


def overlay_batch(images, K, frames: list[list[Mesh]], alpha: float = 0.6, chunk: int = 64) -> list[np.ndarray]:
    """:func:`overlay_meshes` of many frames, rendered ``chunk`` frames per ``render_batch`` call: images T
    (H, W, 3) uint8 of one size, K (3, 3) or (T, 3, 3), frames T lists of Mesh -> T (H, W, 3) uint8."""
    images = [np.asarray(im) for im in images]
    if len(images) != len(frames):
        raise ValueError(f"{len(images)} images but {len(frames)} frames of meshes")
    if not images:
        return []
    if any(im.ndim != 3 or im.shape[2] != 3 or im.shape != images[0].shape for im in images):
        raise ValueError(f"images must be (H, W, 3) uint8 of one size, got {sorted({im.shape for im in images})}")
    H, W = images[0].shape[:2]
    K = _np(K, np.float64)
    out = []
    for s in range(0, len(images), chunk):
        e = min(s + chunk, len(images))
        r = _renderer(W, H).render_batch(K if K.ndim == 2 else K[s:e], frames[s:e], outputs=("rgb", "mask"))
        out += [blend(im, rgb, mask, alpha) for im, rgb, mask in zip(images[s:e], r.rgb, r.mask)]
    return out


def overlay_hand(image: np.ndarray, K, vertices, faces, alpha: float = 0.6, color=HAND_COLOR) -> np.ndarray:
    """Draw one hand mesh (camera-frame vertices (V, 3) [m], faces (F, 3)) over ``image`` (H, W, 3) uint8."""
    return overlay_meshes(image, K, [hand_mesh(vertices, faces, color)], alpha)


_MAGMA = np.array([[252, 253, 191], [252, 137, 97], [183, 55, 121], [81, 18, 124], [0, 0, 4]], np.float32)


def colorize_depth(depth: np.ndarray, max_depth: float = 2.0, min_depth: float = 0.0) -> np.ndarray:
    """Depth (H, W) [m] -> (H, W, 3) uint8 on a magma-like ramp: near = light yellow, far = black.

    Depths are clipped to [min_depth, max_depth]; the background (2 m by default) comes out black.
    """
    d = np.clip((np.asarray(depth, np.float32) - min_depth) / max(max_depth - min_depth, 1e-6), 0, 1)
    stops = np.linspace(0, 1, len(_MAGMA))
    rgb = np.stack([np.interp(d, stops, _MAGMA[:, c]) for c in range(3)], -1)
    return (rgb + 0.5).astype(np.uint8)

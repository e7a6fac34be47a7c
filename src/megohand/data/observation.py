"""The one observation processor: a store frame, a video frame or a user's picture -> exactly what the model eats.

Training (``megohand.data.windows``), evaluation, generation and the demo all call it (the policy applies it to any
frame that is not already at its input size), so the model sees the same picture everywhere:

* RGB: the centred square of side ``crop_scale`` x the short side (a random square when training augments), resized
  to ``size`` x ``size`` with PIL's bilinear filter (which averages over the source pixels when shrinking);
  uint8 (3, S, S).
* depth: the same square, nearest-neighbour resized (depths of an edge are never mixed); float32 (1, S, S) metres.
* intrinsics: those of the cropped and resized picture (``crop_K``).

Frames of a store episode come from its training-size copy when one fits (its short side >= ``size``,
docs/data_format.md "Training-size copies"), else from the stored frames (``episode_observation``): the same
square of the same scene, resampled once at write time instead of at every read.

``size`` is the checkpoint's ``backbone.image_size`` (saved in its config.json), so a checkpoint carries its
processor. A non-square frame is cropped, never squashed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


def crop_box(width: int, height: int, crop_scale: float = 1.0, rng: np.random.Generator | None = None):
    """Square crop (x0, y0, side) [px] of ``crop_scale`` times the short side: centred, or uniformly placed with
    ``rng``."""
    side = max(1, int(round(min(width, height) * crop_scale)))
    if rng is None:
        return (width - side) // 2, (height - side) // 2, side
    return int(rng.integers(0, width - side + 1)), int(rng.integers(0, height - side + 1)), side


def crop_K(K: np.ndarray, x0: float, y0: float, side: float, size: int) -> np.ndarray:
    """Intrinsics after cropping the square [x0, x0+side) x [y0, y0+side) and resizing it to size x size."""
    s = size / side
    K = np.array(K, dtype=np.float64)
    K[0, 2] -= x0
    K[1, 2] -= y0
    K[0, 0] *= s
    K[0, 1] *= s
    K[1, 1] *= s
    K[0, 2] = (K[0, 2] + 0.5) * s - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * s - 0.5
    return K


def square_pil(img, box: tuple[int, int, int], size: int, scale: float = 1.0):
    """PIL image or (H, W, 3) uint8 array -> PIL RGB image size x size: the square ``box`` = (x0, y0, side) resized.
    ``scale``: the image's size relative to the frame the box refers to (a reduced JPEG decode)."""
    from PIL import Image

    if not isinstance(img, Image.Image):
        img = Image.fromarray(np.ascontiguousarray(img, dtype=np.uint8))
    x0, y0, side = box
    img = img.convert("RGB")
    if side == size and scale == 1:  # a training-size copy's centred square: nothing to resample
        return img.crop((x0, y0, x0 + side, y0 + side))
    box_px = (x0 * scale, y0 * scale, (x0 + side) * scale, (y0 + side) * scale)
    return img.resize((size, size), Image.BILINEAR, box=box_px)


def to_tensor(img) -> torch.Tensor:
    """PIL RGB image -> uint8 (3, H, W)."""
    return torch.from_numpy(np.asarray(img).transpose(2, 0, 1).copy())


def square_rgb(img, box: tuple[int, int, int], size: int, scale: float = 1.0) -> torch.Tensor:
    """``square_pil`` as uint8 (3, size, size)."""
    return to_tensor(square_pil(img, box, size, scale))


def square_depth(depth: np.ndarray, box: tuple[int, int, int], size: int) -> torch.Tensor:
    """(H, W) depth [m] (or uint16 mm, converted to m) -> float32 (1, size, size) metres, nearest neighbour."""
    from megohand.data.store import resize_nearest

    x0, y0, side = box
    d = np.asarray(depth)[y0:y0 + side, x0:x0 + side]
    d = d if side == size else resize_nearest(d, (size, size))
    if d.dtype == np.uint16:
        d = d.astype(np.float32) / np.float32(1000.0)
    return torch.from_numpy(np.ascontiguousarray(d, dtype=np.float32))[None]


def episode_observation(ep, k: int, size: int, crop_scale: float = 1.0, rng: np.random.Generator | None = None,
                        depth: bool = True, copies: bool = True, rgb: bool = True):
    """Frame k of a stored episode (``megohand.data.store.Episode``) -> (PIL RGB image size x size or None, depth
    float32 (1, size, size) [m] or None, K (3, 3) of that picture).

    Reads the smallest training-size copy whose short side is at least ``size`` (``Episode.frames_for``; ``copies``
    False: always the stored frames), else the stored frames, through a reduced JPEG decode while the crop keeps at
    least ``size`` pixels. ``crop_scale`` and ``rng`` place the square (``crop_box``); the image only with ``rgb``,
    depth only with ``depth`` (the same square either way)."""
    fs = ep.frames_for(size) if copies else ep.full_frames
    W, H = fs.width, fs.height
    box = crop_box(W, H, crop_scale, rng)
    side = box[2]
    img = None
    if rgb:  # a reduced JPEG decode is fine while the crop keeps >= size pixels: ask for >= size * (W, H) / side
        img = ep.rgb_image(k, min_size=(-(-size * W // side), -(-size * H // side)) if side >= 2 * size else None,
                           frames=fs)
        img = square_pil(img, box, size, img.size[0] / W)
    d = ep.depth_mm(k, fs) if depth else None
    return img, None if d is None else square_depth(d, box, size), crop_K(fs.K, *box, size)


@dataclass(frozen=True)
class ObservationProcessor:
    """Frames -> model input of side ``size`` (see the module docstring)."""

    size: int

    def box(self, width: int, height: int) -> tuple[int, int, int]:
        """The inference crop of a width x height frame (centred, the whole short side)."""
        return crop_box(width, height)

    def images(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 (B, 3, H, W) frames -> uint8 (B, 3, S, S) (unchanged when already S x S)."""
        if tuple(image.shape[-2:]) == (self.size, self.size):
            return image
        box = self.box(image.shape[-1], image.shape[-2])
        frames = image.detach().to("cpu", torch.uint8).permute(0, 2, 3, 1).numpy()
        return torch.stack([square_rgb(f, box, self.size) for f in frames]).to(image.device)

    def depths(self, depth: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) depth [m] -> (B, 1, S, S) (unchanged when already S x S)."""
        if tuple(depth.shape[-2:]) == (self.size, self.size):
            return depth
        box = self.box(depth.shape[-1], depth.shape[-2])
        frames = depth.detach().float().cpu().numpy()[:, 0]
        return torch.stack([square_depth(d, box, self.size) for d in frames]).to(depth.device)

    def episode(self, ep, k: int, depth: bool = True, copies: bool = True):
        """Frame k of a stored episode -> (uint8 (3, S, S), depth (1, S, S) [m] or None, K (3, 3)), from its
        training-size copy when one fits (``episode_observation``)."""
        img, d, K = episode_observation(ep, k, self.size, depth=depth, copies=copies)
        return to_tensor(img), d, K

    def intrinsics(self, K: np.ndarray, width: int, height: int) -> np.ndarray:
        """(3, 3) intrinsics of a width x height frame -> those of the model's picture."""
        return crop_K(K, *self.box(width, height), self.size)

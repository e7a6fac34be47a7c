"""Metric depth for the images being labelled: read from files, or estimated by a local transformers model.

Depth files aligned to the RGB frames (same size, same count), metres in memory:

* a depth video (16-bit grey, e.g. FFV1 ``gray16le``, values in mm), one frame per RGB frame;
* a folder of 16-bit PNG (mm; 0 = no depth) or ``.npy`` (float metres; 0 or NaN = no depth), sorted by name;
* one ``.png`` / ``.npy`` file (for a single image).

:class:`DepthModel` runs any transformers depth-estimation folder on the CPU or a GPU
(``AutoModelForDepthEstimation`` + ``AutoImageProcessor``, e.g. a Depth Anything V2 *metric* checkpoint
saved with ``save_pretrained``): nothing is downloaded, and relative-depth models are refused because
their output is not in metres.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

DEPTH_SUFFIXES = (".png", ".npy")
VIDEO_SUFFIXES = (".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v")


def _depth_file(path: Path) -> np.ndarray:
    if path.suffix.lower() == ".npy":
        try:
            d = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"{path}: cannot read depth array ({e})") from None
        if d.ndim == 3 and d.shape[-1] == 1:
            d = d[..., 0]
        if d.ndim != 2 or not np.issubdtype(d.dtype, np.floating):
            raise ValueError(f"{path}: depth .npy must be a 2D float array in metres, got {d.shape} {d.dtype}")
        return np.nan_to_num(d.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
    from PIL import Image

    try:
        with Image.open(path) as im:
            d = np.array(im)
    except OSError as e:
        raise ValueError(f"{path}: cannot read depth image ({e})") from None
    if d.ndim != 2 or d.dtype not in (np.uint16, np.int32):
        raise ValueError(f"{path}: depth PNG must be single-channel 16-bit (millimetres), got {d.shape} {d.dtype}")
    return d.astype(np.float32) / 1000.0


def depth_files(path: Path) -> list[Path]:
    """The depth frames of ``path`` in order: a folder's ``.png``/``.npy`` files sorted by name, or [path]."""
    path = Path(path)
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in DEPTH_SUFFIXES)
        if not files:
            raise ValueError(f"{path}: no depth frames (.png in mm or .npy in m) in the folder")
        return files
    if not path.is_file():
        raise ValueError(f"{path}: depth file or folder not found")
    return [path]


def iter_depth(path: Path, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
    """Depth frames (H, W) float32 [m] of a depth video, folder or file (0 = no depth).

    Args:
        size: (H, W) every frame must have (the RGB size); a mismatch raises ValueError naming the file.
    """
    path = Path(path)
    if path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES:
        from megohand.data.sources.common import SourceError, iter_video

        frames = ((f.astype(np.float32) / 1000.0, path) for f in iter_video(path, fmt="gray16le"))
        try:
            yield from _checked(frames, size)
        except SourceError as e:
            raise ValueError(str(e)) from None
        return
    yield from _checked(((_depth_file(p), p) for p in depth_files(path)), size)


def _checked(frames, size):
    for d, p in frames:
        if size is not None and d.shape != tuple(size):
            raise ValueError(f"{p}: depth is {d.shape[1]}x{d.shape[0]}, the image is {size[1]}x{size[0]} "
                             "(depth must be aligned to the RGB frames)")
        yield d


class DepthModel:
    """A local transformers depth-estimation folder -> metric depth (H, W) [m] at the input image's size.

    Args:
        path: folder written by ``save_pretrained`` (config.json, weights, preprocessor_config.json).
        device: torch device.
    Raises:
        ValueError: the folder is missing, not a depth-estimation model, or a relative-depth model.
    """

    def __init__(self, path, device: str = "cpu"):
        import torch
        from transformers import AutoConfig, AutoImageProcessor, AutoModelForDepthEstimation

        self.path = Path(path)
        if not (self.path / "config.json").is_file():
            raise ValueError(f"{self.path}: not a transformers model folder (no config.json)")
        try:
            config = AutoConfig.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError) as e:
            raise ValueError(f"{self.path}: cannot read config.json ({e})") from None
        if getattr(config, "depth_estimation_type", "metric") == "relative":
            raise ValueError(f"{self.path}: a relative-depth model (depth_estimation_type = 'relative'); depth for "
                             "placement must be metric (e.g. a Depth Anything V2 metric checkpoint)")
        try:
            self.model = AutoModelForDepthEstimation.from_pretrained(self.path, local_files_only=True).to(device).eval()
            self.processor = AutoImageProcessor.from_pretrained(self.path, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            raise ValueError(f"{self.path}: not a loadable depth-estimation model ({e})") from None
        self.device = torch.device(device)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """image (H, W, 3) uint8 RGB -> depth (H, W) float32 [m]."""
        import torch

        H, W = image.shape[:2]
        inputs = self.processor(images=image, return_tensors="pt").to(self.device)
        with torch.no_grad():
            out = self.model(**inputs)
        d = self.processor.post_process_depth_estimation(out, target_sizes=[(H, W)])[0]["predicted_depth"]
        return d.float().cpu().numpy()

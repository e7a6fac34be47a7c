"""Pseudo-labelling: egocentric videos (or folders of frames) -> episodes of the store with retargeted right hands.

Inputs (:func:`find_videos`): a video file; a folder of image frames (one video, frames sorted by name); or a
folder of videos (one episode each, found recursively; the episode id is the path below the folder without
its suffix). Each may have a **sidecar** JSON beside it, ``clip.mp4`` -> ``clip.json``, ``frames/`` ->
``frames.json``, with any of::

    {"text": "pick up the cup",                       # the episode's instruction
     "segments": [[0, 45, "reach for the cup"], [45, 120, "lift it"]],   # frames [start, end), text
     "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]],      # or "fx", "fy", "cx", "cy" (pixels of these frames)
     "fps": 30,                                       # frame rate (default: the video's, 30 for frames)
     "depth": "clip_depth.mkv",                       # aligned depth (video / folder / file), relative path
     "split": "train"}

Per frame the right hand is estimated, placed and retargeted (``megohand.perception.sequence``); frames
without a credible hand are stored invalid (masked). The per-frame fit error is stored with the hands
(``Episode.fit_error_mm("right")``, NaN where invalid), the labelling settings, counts and the skeleton
adaptation's offsets in ``extra["label"]``.
Episodes are written atomically by ``megohand.data.store.StoreWriter``; those already in the store are skipped
(resume), unless ``overwrite``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from megohand.perception.depth import VIDEO_SUFFIXES

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
DATASET = "labelled"


@dataclass
class VideoSource:
    """One video to label: ``path`` (a video file or a folder of frames), its episode id, its sidecar."""

    episode: str
    path: Path
    images: list[Path] | None = None
    sidecar: dict = field(default_factory=dict)
    sidecar_path: Path | None = None

    def relative(self, value: str) -> Path:
        """A path named in the sidecar, relative to the sidecar's folder."""
        p = Path(value)
        return p if p.is_absolute() or self.sidecar_path is None else self.sidecar_path.parent / p


def _sidecar(path: Path) -> tuple[dict, Path | None]:
    side = path.parent / ((path.stem if path.is_file() else path.name) + ".json")
    if not side.is_file():
        return {}, None
    try:
        d = json.loads(side.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{side}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise ValueError(f"{side}: expected a JSON object (text, segments, K, fps, depth, split)")
    return d, side


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def find_videos(path: Path) -> list[VideoSource]:
    """The videos under ``path`` (see the module docstring). Raises ValueError naming the path when none."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            raise ValueError(f"{path}: not a video ({', '.join(VIDEO_SUFFIXES)}) nor a folder")
        return [VideoSource(path.stem, path, None, *_sidecar(path))]
    if not path.is_dir():
        raise ValueError(f"{path}: no such video or folder")
    videos = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if videos:
        return [VideoSource(str(v.relative_to(path).with_suffix("")), v, None, *_sidecar(v)) for v in videos]
    images = _images(path)
    if images:
        return [VideoSource(path.resolve().name, path, images, *_sidecar(path))]
    raise ValueError(f"{path}: no videos ({', '.join(VIDEO_SUFFIXES)}) and no image frames in the folder")


def iter_frames(src: VideoSource) -> Iterator[np.ndarray]:
    """(H, W, 3) uint8 RGB frames of a source, streamed."""
    from megohand.data.sources.common import SourceError, iter_video, read_image

    try:
        if src.images is None:
            yield from iter_video(src.path)
        else:
            for p in src.images:
                yield read_image(p)
    except SourceError as e:
        raise ValueError(str(e)) from None


def video_info(src: VideoSource) -> tuple[int, int, int, float | None]:
    """(num_frames, width, height, fps or None) of a source (decodes the first frame for its size)."""
    from megohand.data.sources.common import SourceError, video_frame_count

    first = next(iter_frames(src), None)
    if first is None:
        raise ValueError(f"{src.path}: no frames")
    if src.images is not None:
        return len(src.images), first.shape[1], first.shape[0], None
    import av

    try:
        n = video_frame_count(src.path)
        with av.open(str(src.path)) as c:
            rate = c.streams.video[0].average_rate
    except (SourceError, av.error.FFmpegError) as e:
        raise ValueError(str(e)) from None
    return n, first.shape[1], first.shape[0], float(rate) if rate else None


@dataclass
class LabelConfig:
    """How videos are labelled (``megohand label``'s options)."""

    text: str | None = None
    dataset: str = DATASET
    split: str = "train"
    intrinsics: Path | None = None
    depth: Path | None = None
    fps: float | None = None
    smooth: float = 1.0
    min_score: float = 0.5
    max_fit_error_mm: float = 20.0
    adapt: bool = False
    overwrite: bool = False


def source_intrinsics(src: VideoSource, cfg: LabelConfig, width: int, height: int) -> tuple[np.ndarray, str]:
    """(K, where it came from): the sidecar's, else --intrinsics, else the default; checked against the size."""
    from megohand.perception.placement import check_intrinsics, default_intrinsics, read_intrinsics

    if "K" in src.sidecar or "fx" in src.sidecar:
        d = src.sidecar
        K = d["K"] if "K" in d else [[d["fx"], 0, d["cx"]], [0, d["fy"], d["cy"]], [0, 0, 1]]
        return check_intrinsics(K, width, height, str(src.sidecar_path)), str(src.sidecar_path)
    if cfg.intrinsics is not None:
        return check_intrinsics(read_intrinsics(cfg.intrinsics), width, height, str(cfg.intrinsics)), str(cfg.intrinsics)
    return default_intrinsics(width, height), "default (f = max(W, H), centred)"


def source_text(src: VideoSource, cfg: LabelConfig, num_frames: int) -> tuple[str, list]:
    """(instruction, segments) from the sidecar, else --text; ValueError naming the video when there is none."""
    where = src.sidecar_path or src.path
    segments = src.sidecar.get("segments") or []
    try:
        segments = [(int(s), int(e), str(t)) for s, e, t in segments]
    except (TypeError, ValueError):
        raise ValueError(f"{where}: 'segments' must be a list of [start, end, text]") from None
    for s, e, t in segments:
        if not (0 <= s < e <= num_frames):
            raise ValueError(f"{where}: segment ({s}, {e}, {t!r}) is not 0 <= start < end <= {num_frames} frames")
    text = src.sidecar.get("text") or cfg.text
    if not text and segments:
        text = segments[0][2]
    if not text:
        raise ValueError(f"{src.path}: no text: pass --text or put \"text\" in {src.path.parent / (src.path.stem + '.json')}")
    return str(text), segments


def label_video(src: VideoSource, cfg: LabelConfig, writer, estimator, retargeter, depth_model=None,
                progress: Callable[[int], None] | None = None):
    """Label one video into the store (atomic). Returns the store's EpisodeRef.

    Raises:
        ValueError: bad input (named: the video, the sidecar, the depth or intrinsics file), or no valid frame.
    """
    from megohand.data.store import EpisodeMeta
    from megohand.data.video import decode_depth_mm, encode_depth
    from megohand.perception.depth import iter_depth
    from megohand.perception.sequence import fit_track, track_hand

    T, W, H, video_fps = video_info(src)
    K, k_source = source_intrinsics(src, cfg, W, H)
    text, segments = source_text(src, cfg, T)
    fps = float(src.sidecar.get("fps") or cfg.fps or video_fps or 30.0)
    if not fps > 0:
        raise ValueError(f"{src.sidecar_path or src.path}: fps must be > 0, got {fps}")
    split = src.sidecar.get("split", cfg.split)
    depth_path = src.relative(src.sidecar["depth"]) if "depth" in src.sidecar else cfg.depth
    if depth_path is not None and depth_model is not None:
        raise ValueError(f"{src.path}: both depth files ({depth_path}) and a depth model given; pick one")
    estimated = []  # depth-model frames, zstd-compressed (kept for the store)

    def depth_frames():
        if depth_path is not None:
            return iter_depth(depth_path, (H, W))
        if depth_model is not None:
            def run():
                for image in iter_frames(src):
                    d = depth_model(image)
                    estimated.append(encode_depth(d))
                    yield d
            return run()
        return None

    track = track_hand(estimator, iter_frames(src), K, depth_frames(), min_score=cfg.min_score, progress=progress,
                       depth_name=str(depth_path or (depth_model and depth_model.path)))
    if len(track) != T:
        raise ValueError(f"{src.path}: decoded {len(track)} frames, the container says {T}")
    hands = fit_track(retargeter, track, smooth=cfg.smooth, max_fit_error_mm=cfg.max_fit_error_mm, adapt=cfg.adapt)
    if not hands["valid"].any():
        raise ValueError(f"{src.path}: no right hand found in any of its {T} frames (found {track.stats['found']}, "
                         "credible none); nothing written")
    offsets = hands.pop("offsets")
    if depth_path is not None:
        stored_depth, depth_source = iter_depth(depth_path, (H, W)), "sensor"
    elif depth_model is not None:
        stored_depth, depth_source = (decode_depth_mm(b) for b in estimated), "estimated"
    else:
        stored_depth, depth_source = None, "none"
    hand = retargeter.hands["right"]
    extra = {
        "label": {
            "source": str(src.path), "sidecar": None if src.sidecar_path is None else str(src.sidecar_path),
            "intrinsics": k_source, "estimator": type(estimator).__name__,
            "depth": None if depth_path is None else str(depth_path),
            "depth_model": None if depth_model is None else str(depth_model.path),
            "frames": T, "hand_found": track.stats["found"], "placed": track.stats["valid"],
            "valid": int(hands["valid"].sum()), "smooth_frames": cfg.smooth, "min_score": cfg.min_score,
            "max_fit_error_mm": cfg.max_fit_error_mm, "skeleton_adaptation": cfg.adapt,
            "skeleton_offsets_mm": np.round(offsets * 1000, 2).tolist(),
            "mean_fit_error_mm": round(float(np.nanmean(hands["fit_error_mm"])), 3),
            "depth_points_mean": float(track.depth_points[track.valid].mean()) if track.valid.any() else 0.0,
        },
    }
    meta = EpisodeMeta(dataset=cfg.dataset, episode=src.episode, instruction=text, segments=segments, fps=fps,
                       width=W, height=H, K=K.tolist(), split=split, hand_source="retargeted",
                       depth_source=depth_source, hand_model="mano" if hand.is_mano else hand.name, extra=extra)
    return writer.write_episode(meta, hands={"right": hands}, rgb=iter_frames(src), depth=stored_depth,
                                overwrite=cfg.overwrite)

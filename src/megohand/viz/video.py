"""MP4 writing and reading with PyAV (H.264, yuv420p; frames padded to even sizes)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np

from megohand import io


def write_mp4(frames: Iterable[np.ndarray], path: str | Path, fps: float = 30.0, crf: int = 20) -> int:
    """Encode (H, W, 3) uint8 frames to ``path`` atomically (temp file, then rename).
    Returns the number of frames written."""
    import av

    path = Path(path)
    n = 0
    with io.atomic_path(path) as tmp:
        with av.open(str(tmp), mode="w", format="mp4") as container:
            stream = None
            for frame in frames:
                frame = np.ascontiguousarray(frame, dtype=np.uint8)
                if stream is None:
                    h, w = frame.shape[0] + frame.shape[0] % 2, frame.shape[1] + frame.shape[1] % 2
                    stream = container.add_stream("libx264", rate=int(round(fps)))
                    stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
                    stream.options = {"crf": str(crf)}
                if frame.shape[:2] != (h, w):
                    frame = np.pad(frame, ((0, h - frame.shape[0]), (0, w - frame.shape[1]), (0, 0)), mode="edge")
                for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                    container.mux(packet)
                n += 1
            if stream is None:
                raise ValueError(f"{path}: no frames to write")
            for packet in stream.encode():
                container.mux(packet)
    return n


def read_video_frames(path: str | Path) -> np.ndarray:
    """Decode every frame of a video: (T, H, W, 3) uint8."""
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)])

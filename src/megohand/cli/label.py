"""``megohand label VIDEO_OR_FOLDER --text ... --out STORE``: pseudo-label egocentric videos into the store."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from tyro.conf import Positional

from megohand.data import DEFAULT_COPY_SIZES


@dataclass
class Label:
    """Pseudo-label egocentric videos into a store that `megohand validate`, `train` and `eval` read.

    Per frame: the right hand is found (MediaPipe Hands by default, tracking mode; needs
    `pip install -e ".[perception]"`), placed in the camera frame (PnP; depth when given), smoothed over time and
    retargeted to MANO parameters with the per-frame fit error; frames without a credible hand are masked.
    Input: a video, a folder of frames, or a folder of videos; `clip.json` beside `clip.mp4` may give "text",
    "segments", "K", "fps", "depth", "split" (docs/perception.md). Resumable (episodes already in the store are
    skipped) and atomic per episode, with a progress bar.
    """

    input: Positional[Path]
    """A video, a folder of image frames (one video), or a folder of videos (one episode each)."""
    out: Path
    """Store folder (created; may already hold other datasets)."""
    text: str | None = None
    """Instruction of every video without "text" in its sidecar JSON."""
    dataset: str = "labelled"
    """Dataset name in the store."""
    split: Literal["train", "val", "test"] = "train"
    """Split of videos whose sidecar names none."""
    intrinsics: Path | None = None
    """Intrinsics file (JSON {"K"} or {"fx","fy","cx","cy"}, .npy, text) for videos whose sidecar has none;
    default f = max(W, H) px, principal point at the centre."""
    depth: Path | None = None
    """Depth aligned to the frames (16-bit depth video or folder of PNG in mm, .npy in m); one input video only."""
    depth_estimator: Path | None = None
    """Local transformers depth-estimation folder (a metric model, e.g. Depth Anything V2 metric) run per frame."""
    fps: float | None = None
    """Frame rate (default: the video's; 30 for frames)."""
    smooth: float = 1.0
    """Temporal smoothing of the placed joints: Gaussian std in frames (0: none)."""
    min_score: float = 0.5
    """Detections below this confidence count as no hand."""
    max_fit_error_mm: float = 20.0
    """Frames whose retargeting fit error is larger are masked."""
    adapt: bool = False
    """Per-video skeleton adaptation in the retargeting (constant offsets of the estimator's 21 points from the
    hand model's joints). Off by default: MediaPipe's errors are not constant offsets, and on the synthetic
    world's renders the adaptation made the labels worse (docs/perception.md)."""
    estimator: str = "mediapipe"
    """Hand estimator: "mediapipe" or "package.module:factory" (docs/perception.md)."""
    retarget_model: Path | None = None
    """Retargeting network folder (default: the one shipped for the open hand; with MANO train one)."""
    refine_steps: int = 100
    """Per-sequence refinement steps of the retargeting."""
    mano_dir: Path | None = None
    """MANO folder (default $MANO_MODEL_DIR, else the bundled open hand)."""
    max_short_side: int | None = None
    """Downscale stored frames whose short side is larger (K scaled to match)."""
    copy_sizes: tuple[int, ...] = DEFAULT_COPY_SIZES
    """Short sides [px] of training-size copies written beside the stored frames (RGB, depth, K scaled;
    docs/data_format.md "Training-size copies"): a model of input size S reads the smallest copy >= S, about 3x
    (640x480) to 6x (1080p) faster than the full frames. The default holds one per preset (paper 224, compact
    128). Only where the frames are larger; none: `--copy-sizes` with no value."""
    overwrite: bool = False
    """Relabel videos already in the store."""
    keep_going: bool = False
    """Report failing videos and continue (exit status 1 at the end) instead of stopping."""
    device: str = "cpu"
    """Torch device of the retargeting and the depth model."""

    def run(self) -> None:
        import sys

        from tqdm import tqdm

        from megohand.data.store import StoreWriter, check_copy_sizes, check_dataset_name
        from megohand.perception.label import LabelConfig, find_videos, label_video, video_info

        try:
            check_dataset_name(self.dataset)
            videos = find_videos(self.input)
            if self.depth is not None and len(videos) > 1:
                raise ValueError(f"--depth {self.depth}: one depth input for {len(videos)} videos; name each "
                                 "video's depth in its sidecar JSON (\"depth\")")
            if self.fps is not None and not self.fps > 0:
                raise ValueError(f"--fps must be > 0, got {self.fps}")
            check_copy_sizes(self.copy_sizes)
            if self.smooth < 0 or self.refine_steps < 0 or self.max_fit_error_mm <= 0:
                raise ValueError("--smooth and --refine-steps must be >= 0, --max-fit-error-mm > 0")
            estimator, retargeter, depth_model = self._models()
        except (ValueError, ImportError) as e:
            raise SystemExit(str(e)) from None
        cfg = LabelConfig(text=self.text, dataset=self.dataset, split=self.split, intrinsics=self.intrinsics,
                          depth=self.depth, fps=self.fps, smooth=self.smooth, min_score=self.min_score,
                          max_fit_error_mm=self.max_fit_error_mm, adapt=self.adapt, overwrite=self.overwrite)
        writer = StoreWriter(self.out, max_short_side=self.max_short_side, copy_sizes=self.copy_sizes)
        failures, done = [], 0
        for src in tqdm(videos, desc="label", unit="video", disable=len(videos) == 1):
            if not self.overwrite and writer.has_episode(self.dataset, src.episode):
                continue
            try:
                n = video_info(src)[0]
                with tqdm(total=n, desc=src.episode, unit="frame", leave=False) as bar:
                    label_video(src, cfg, writer, estimator, retargeter, depth_model, progress=bar.update)
                done += 1
            except (ValueError, OSError) as e:
                if not self.keep_going:
                    raise SystemExit(str(e)) from None
                failures.append((src.path, str(e)))
        for path, msg in failures:
            print(f"FAILED {path}: {msg}", file=sys.stderr)
        print(f"labelled {done} video(s) into {self.out} (dataset {self.dataset!r}; {len(videos) - done - len(failures)} "
              f"already there, {len(failures)} failed)")
        if failures:
            raise SystemExit(1)

    def _models(self):
        from megohand.hand.retarget import Retargeter
        from megohand.perception.depth import DepthModel
        from megohand.perception.estimator import load_estimator

        estimator = load_estimator(self.estimator, tracking=True)
        retargeter = Retargeter.from_pretrained(self.retarget_model, mano_dir=self.mano_dir,
                                                refine_steps=self.refine_steps, device=self.device)
        depth_model = DepthModel(self.depth_estimator, self.device) if self.depth_estimator is not None else None
        return estimator, retargeter, depth_model

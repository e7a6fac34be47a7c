"""``megohand generate``: a hand motion from one egocentric frame (or a video), a text and an initial hand.

INIT.json schema (right hand, camera frame of the image, OpenCV axes, metres and radians)::

    {
      "global_orient": [rx, ry, rz],          # wrist rotation, axis-angle (3)
      "hand_pose": [[...], ... 15 x 3] or 45, # absolute local finger rotations, axis-angle, MANO order
      "betas": [10 numbers],                  # optional, default zeros
      "transl": [x, y, z],                    # smplx transl: the wrist joint is at J0(betas) + transl
      "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]   # optional intrinsics [px]; default f = max(W, H), centre
    }

Outputs in --out: ``hands.json`` and ``hands.npz`` (frames 0..N, frame 0 = INIT), ``overlay.mp4``
(the hand mesh drawn over the input frames) and ``overlay.png`` (a strip of frames).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
FIELDS = {"global_orient": (3,), "hand_pose": (15, 3), "betas": (10,), "transl": (3,)}


@dataclass
class Generate:
    """Generate a right-hand motion in closed loop (TOF on by default) and render it over the input."""

    image: Path
    """An RGB image (PNG/JPEG) or a video; with a video, frame k is the observation at step k."""
    text: str
    """Task instruction, e.g. "pick up the red cylinder"."""
    init: Path
    """INIT.json with the initial hand (schema in the module docstring / docs/inference.md)."""
    out: Path
    """Output folder."""
    ckpt: Path | None = None
    """Checkpoint folder; None = the demo checkpoint shipped in the package."""
    steps: int | None = None
    """Euler steps K (None = the checkpoint's default)."""
    stride: int = 1
    """Query stride s: frames between policy queries (1 <= s <= horizon)."""
    frames: int | None = None
    """Frames to generate after INIT (default: 63 for an image, the video length - 1 for a video)."""
    tof: bool = True
    """Temporal Orthogonal Filtering of overlapping chunks (else the raw latest chunk)."""
    fps: float | None = None
    """Output frame rate (default: the video's, 30 for an image)."""
    seed: int = 0
    """Seed of the sampling noise."""
    device: str = "cpu"
    """Torch device."""
    mano_dir: Path | None = None
    """MANO folder for rendering; default $MANO_MODEL_DIR, else the bundled open hand."""

    def run(self) -> None:
        import torch
        from tqdm import tqdm

        from megohand.hand import load_hand_model
        from megohand.hand.vector import params_to_state
        from megohand.inference.policy import load_policy
        from megohand.inference.rollout import rollout
        from megohand.viz.strip import pick, save_strip
        from megohand.viz.video import write_mp4

        frames, video_fps = read_frames(self.image, None if self.frames is None else self.frames + 1)
        is_video = len(frames) > 1
        N = self.frames if self.frames is not None else (len(frames) - 1 if is_video else 63)
        if is_video and N > len(frames) - 1:
            raise SystemExit(f"{self.image}: {len(frames)} frames, cannot generate {N} frames after the first")
        if N < 1:
            raise SystemExit(f"--frames must be >= 1 (got {N})")
        H, W = frames[0].shape[:2]
        params, K = read_init(self.init, W, H)
        fps = self.fps or video_fps or 30.0

        policy = load_policy(self.ckpt, self.device)
        init = params_to_state(params)[None]  # (1, 109)

        def observe(k):
            f = frames[k] if is_video else frames[0]
            return torch.from_numpy(np.array(f, dtype=np.uint8)).permute(2, 0, 1)[None], None

        gen = torch.Generator().manual_seed(self.seed)
        bar = tqdm(total=N, desc="generate", unit="frame")
        res = rollout(policy, observe, [self.text], init, N, stride=self.stride, tof=self.tof, steps=self.steps,
                      generator=gen, progress=lambda n: bar.update(n - bar.n))
        bar.close()
        p = res.params()
        seq = {k: getattr(p, k)[0].numpy().astype(np.float32) for k in FIELDS}
        self.out.mkdir(parents=True, exist_ok=True)
        meta = {"text": self.text, "fps": fps, "K": K.tolist(), "stride": self.stride, "steps": self.steps,
                "tof": self.tof, "queries": res.queries, "source": str(self.image), "frames": N + 1}
        write_sequence(self.out, seq, meta)
        hand = load_hand_model(self.mano_dir)
        with torch.no_grad():
            verts = hand(*(torch.from_numpy(seq[k]) for k in FIELDS)).vertices.numpy()
        images = [frames[k] if is_video else frames[0] for k in range(N + 1)]
        video = overlay_frames(images, verts, hand.faces.numpy(), K)
        write_mp4(video, self.out / "overlay.mp4", fps)
        save_strip([video[i] for i in pick(len(video), 6)], self.out / "overlay.png")
        print(f"wrote {N + 1} frames ({res.queries} queries) to {self.out}: hands.json, hands.npz, overlay.mp4, "
              f"overlay.png (hand model: {hand.name})")


def read_frames(path: Path, max_frames: int | None = None) -> tuple[list[np.ndarray], float | None]:
    """An image -> ([frame], None); a video -> (first max_frames RGB frames, fps). Frames (H, W, 3) uint8."""
    if not path.is_file():
        raise SystemExit(f"{path}: file not found")
    if path.suffix.lower() in VIDEO_SUFFIXES:
        import av

        try:
            with av.open(str(path)) as c:
                s = c.streams.video[0]
                fps = float(s.average_rate) if s.average_rate else None
                out = []
                for fr in c.decode(s):
                    out.append(fr.to_ndarray(format="rgb24"))
                    if max_frames is not None and len(out) >= max_frames:
                        break
        except (av.error.FFmpegError, IndexError) as e:
            raise SystemExit(f"{path}: cannot read video ({e})") from None
        if not out:
            raise SystemExit(f"{path}: video has no frames")
        return out, fps
    from PIL import Image, UnidentifiedImageError

    try:
        return [np.asarray(Image.open(path).convert("RGB"))], None
    except (UnidentifiedImageError, OSError) as e:
        raise SystemExit(f"{path}: not a readable image ({e})") from None


def default_K(width: int, height: int) -> np.ndarray:
    """Pinhole intrinsics when none are given: f = max(W, H) px, principal point at the centre."""
    f = float(max(width, height))
    return np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=np.float64)


def read_init(path: Path, width: int, height: int):
    """INIT.json -> (HandParams with batch shape (), K (3, 3)). Errors name the file and the field."""
    import torch

    from megohand.hand.vector import HandParams

    try:
        d = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise SystemExit(f"{path}: not valid JSON ({e})") from None
    if not isinstance(d, dict):
        raise SystemExit(f"{path}: expected a JSON object with global_orient, hand_pose, betas, transl")
    if d.get("side", "right") != "right":
        raise SystemExit(f"{path}: only the right hand is supported (side = {d.get('side')!r})")
    vals = {}
    for name, shape in FIELDS.items():
        if name not in d:
            if name == "betas":
                vals[name] = np.zeros(10, np.float32)
                continue
            raise SystemExit(f"{path}: missing field {name!r} (shape {shape})")
        try:
            a = np.asarray(d[name], dtype=np.float32).reshape(shape)
        except (ValueError, TypeError):
            raise SystemExit(f"{path}: field {name!r} must hold {int(np.prod(shape))} numbers, shape {shape}") from None
        if not np.isfinite(a).all():
            raise SystemExit(f"{path}: field {name!r} has NaN/inf")
        vals[name] = a
    K = default_K(width, height)
    if d.get("K") is not None:
        try:
            K = np.asarray(d["K"], dtype=np.float64).reshape(3, 3)
        except (ValueError, TypeError):
            raise SystemExit(f"{path}: field 'K' must be a 3x3 matrix") from None
        if not (np.isfinite(K).all() and K[0, 0] > 0 and K[1, 1] > 0):
            raise SystemExit(f"{path}: field 'K' must be finite with positive focal lengths")
    return HandParams(*(torch.from_numpy(vals[k]) for k in FIELDS)), K


def write_sequence(out: Path, seq: dict[str, np.ndarray], meta: dict) -> None:
    """hands.json (per-frame lists + meta) and hands.npz (arrays (T, ...)), atomically."""
    frames = [{k: seq[k][t].tolist() for k in FIELDS} for t in range(len(seq["transl"]))]
    tmp = out / ".hands.json.tmp"
    tmp.write_text(json.dumps({**meta, "side": "right", "hand_frames": frames}))
    os.replace(tmp, out / "hands.json")
    tmp = out / ".hands.tmp.npz"
    np.savez(tmp, **seq, fps=np.float32(meta["fps"]), K=np.asarray(meta["K"], np.float32))
    os.replace(tmp, out / "hands.npz")


def overlay_frames(images: list[np.ndarray], vertices: np.ndarray, faces: np.ndarray, K, color=None) -> list[np.ndarray]:
    """Draw the hand of each frame (vertices (T, V, 3) camera frame [m]) over images[t] (H, W, 3) uint8."""
    from megohand.render.overlay import HAND_COLOR, hand_mesh, overlay_meshes

    c = HAND_COLOR if color is None else color
    return [overlay_meshes(img, np.asarray(K, np.float32), [hand_mesh(v, faces, c)]) for img, v in zip(images, vertices)]

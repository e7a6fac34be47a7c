"""``megohand generate``: a hand motion from one egocentric frame (or a video), a text and an initial hand.

INIT.json schema (right hand, camera frame of the image, OpenCV axes, metres and radians)::

    {
      "global_orient": [rx, ry, rz],          # wrist rotation, axis-angle (3)
      "hand_pose": [[...], ... 15 x 3] or 45, # absolute local finger rotations, axis-angle, MANO order
      "betas": [10 numbers],                  # optional, default zeros
      "transl": [x, y, z],                    # smplx transl [m]: the wrist joint is at J0(betas) + transl
      "K": [[fx, 0, cx], [0, fy, cy], [0, 0, 1]]   # optional intrinsics [px]; default f = max(W, H), centre
    }

Without --init the first frame's right hand is estimated (``megohand.perception``, the extra
``pip install -e ".[perception]"``) and written as ``init.json`` in --out, to edit and pass back with --init.

Outputs in --out: ``hands.json`` and ``hands.npz`` (frames 0..N, frame 0 = INIT), ``overlay.mp4``
(the hand mesh drawn over the input frames) and ``overlay.png`` (a strip of frames); all written to a temporary
folder first and moved into --out only when everything succeeded (``megohand.io.atomic_files``). Existing
outputs in --out are refused unless --overwrite.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".webm", ".m4v"}
FIELDS = {"global_orient": (3,), "hand_pose": (15, 3), "betas": (10,), "transl": (3,)}
OUTPUTS = ("hands.json", "hands.npz", "overlay.mp4", "overlay.png")  # + init.json without --init
MAX_TRANSL_M = 5.0  # a hand farther than this from the camera is a unit mistake (millimetres)


@dataclass
class Generate:
    """Generate a right-hand motion in closed loop (TOF on by default) and render it over the input.

    The initial hand comes from --init, or, without it, is estimated from the first frame (needs
    `pip install -e ".[perception]"`) and saved as init.json in --out."""

    image: Path
    """An RGB image (PNG/JPEG) or a video; with a video, frame k is the observation at step k."""
    text: str
    """Task instruction, e.g. "pick up the red cylinder"."""
    out: Path
    """Output folder."""
    step: str = ""
    """The current step's text, e.g. "reach for the red cylinder" (optional): a policy trained on segment texts (the
    default) reads it instead of --text; one trained with --model.text-context task+segment reads "<text>: <step>"
    (``megohand.data.windows.window_text``)."""
    init: Path | None = None
    """INIT.json with the initial hand (schema in docs/inference.md); default: estimated from the first frame."""
    intrinsics: Path | None = None
    """Intrinsics file (JSON {"K"} or {"fx","fy","cx","cy"}, .npy, text); default: INIT.json's K, else
    f = max(W, H) px with the principal point at the centre. Checked against the image size."""
    depth: Path | None = None
    """Metric depth aligned to the frames: a 16-bit depth video or folder of PNG (mm) / .npy (m) frames, or one
    such file for an image. Places the estimated hand and is given to the policy."""
    depth_estimator: Path | None = None
    """Local transformers depth-estimation folder (a metric model, e.g. Depth Anything V2 metric) run on the
    frames instead of --depth."""
    estimator: str = "mediapipe"
    """Hand estimator for the first frame without --init: "mediapipe" or "package.module:factory"."""
    retarget_model: Path | None = None
    """Retargeting network for the estimated hand (default: the one shipped for the open hand)."""
    ckpt: Path | None = None
    """Checkpoint folder; None = the demo checkpoint shipped in the package."""
    steps: int | None = None
    """Euler steps K (None = the checkpoint's default)."""
    noise_scale: float | None = None
    """Initial-noise scale of the sampler (None = the checkpoint's; 0 = the deterministic path from the noise mean)."""
    text_guidance: float | None = None
    """Classifier-free guidance w on the instruction (None = the checkpoint's, 1 = none)."""
    ground_guidance: float | None = None
    """Guidance w on the grounded state, for a policy trained with --model.grounding.state-dropout (None = the
    checkpoint's, 1 = none; the shipped demo checkpoint gains little from it, the README says how much)."""
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
    overwrite: bool = False
    """Replace outputs already in --out (hands.json, hands.npz, overlay.mp4, overlay.png, init.json)."""

    def run(self) -> None:
        import torch
        from tqdm import tqdm

        from megohand import io
        from megohand.hand import load_hand_model
        from megohand.hand.vector import params_to_state
        from megohand.inference.policy import load_policy
        from megohand.inference.rollout import rollout
        from megohand.viz.strip import pick, save_strip
        from megohand.viz.video import write_mp4

        self.check_args()
        # first: a checkpoint that cannot take these sampler settings is refused before the frames are read
        policy = load_policy(self.ckpt, self.device, self.noise_scale, self.text_guidance, self.ground_guidance)
        frames, video_fps = read_frames(self.image, None if self.frames is None else self.frames + 1)
        is_video = len(frames) > 1
        N = self.frames if self.frames is not None else (len(frames) - 1 if is_video else 63)
        if is_video and N > len(frames) - 1:
            raise SystemExit(f"{self.image}: {len(frames)} frames, cannot generate {N} frames after the first")
        H, W = frames[0].shape[:2]
        depth = self.read_depth(frames)
        if self.init is not None:
            params, K = read_init(self.init, W, H)
            init_json = None
        else:
            K = None
        if self.intrinsics is not None or K is None:
            K = intrinsics_for(self.intrinsics, W, H)
        if self.init is None:
            params, init_json = self.estimate_init(frames[0], K, None if depth is None else depth[0])
        fps = self.fps or video_fps or 30.0

        init = params_to_state(params)[None]  # (1, 109)

        def observe(k):
            i = k if is_video else 0
            image = torch.from_numpy(np.array(frames[i], dtype=np.uint8)).permute(2, 0, 1)[None]
            return image, None if depth is None else torch.from_numpy(depth[i])[None, None]

        gen = torch.Generator().manual_seed(self.seed)
        bar = tqdm(total=N, desc="generate", unit="frame")
        from megohand.data.windows import window_text
        from megohand.inference.rollout import text_context

        text = window_text(self.step, self.text, text_context(policy))
        res = rollout(policy, observe, [text], init, N, stride=self.stride, tof=self.tof, steps=self.steps,
                      generator=gen, progress=lambda n: bar.update(n - bar.n))
        bar.close()
        p = res.params()
        seq = {k: getattr(p, k)[0].numpy().astype(np.float32) for k in FIELDS}
        meta = {"text": self.text, "step": self.step, "text_read": text, "fps": fps, "K": K.tolist(),
                "stride": self.stride, "steps": self.steps,
                "noise_scale": self.noise_scale, "text_guidance": self.text_guidance,
                "ground_guidance": self.ground_guidance, "tof": self.tof, "queries": res.queries,
                "source": str(self.image), "frames": N + 1,
                "init": str(self.init) if self.init is not None else "estimated (init.json)",
                "depth": str(self.depth or self.depth_estimator) if depth is not None else None}
        hand = load_hand_model(self.mano_dir)
        with torch.no_grad():
            verts = hand(*(torch.from_numpy(seq[k]) for k in FIELDS)).vertices.numpy()
        images = [frames[k] if is_video else frames[0] for k in range(N + 1)]
        video = overlay_frames(images, verts, hand.faces.numpy(), K)
        with io.cleanup_on_error(self.out), io.atomic_files(self.out) as tmp:  # all outputs or none
            write_sequence(tmp, seq, meta)
            if init_json is not None:
                io.write_json(tmp / "init.json", init_json)
            write_mp4(video, tmp / "overlay.mp4", fps)
            save_strip([video[i] for i in pick(len(video), 6)], tmp / "overlay.png")
        written = "init.json, " if init_json is not None else ""
        print(f"wrote {N + 1} frames ({res.queries} queries) to {self.out}: {written}hands.json, hands.npz, "
              f"overlay.mp4, overlay.png (hand model: {hand.name})")

    def check_args(self) -> None:
        """Refuse bad option values before any work (one line each)."""
        if self.steps is not None and self.steps < 1:
            raise SystemExit(f"--steps must be >= 1 (got {self.steps})")
        if self.fps is not None and not self.fps > 0:
            raise SystemExit(f"--fps must be > 0 (got {self.fps})")
        if self.frames is not None and self.frames < 1:
            raise SystemExit(f"--frames must be >= 1 (got {self.frames})")
        if self.stride < 1:
            raise SystemExit(f"--stride must be >= 1 (got {self.stride})")
        if self.noise_scale is not None and not self.noise_scale >= 0:
            raise SystemExit(f"--noise-scale must be >= 0 (got {self.noise_scale})")
        if self.depth is not None and self.depth_estimator is not None:
            raise SystemExit("--depth and --depth-estimator: give one of them")
        from megohand import io

        for name in OUTPUTS + (() if self.init is not None else ("init.json",)):
            io.check_output_file(self.out / name, self.overwrite)

    def read_depth(self, frames: list[np.ndarray]) -> list[np.ndarray] | None:
        """Depth (H, W) [m] per frame from --depth or --depth-estimator, else None; errors name the file."""
        if self.depth is None and self.depth_estimator is None:
            return None
        from megohand.perception.depth import DepthModel, iter_depth

        H, W = frames[0].shape[:2]
        try:
            if self.depth is not None:
                depth = []
                for d in iter_depth(self.depth, (H, W)):
                    depth.append(d)
                    if len(depth) == len(frames):
                        break
                if len(depth) < len(frames):
                    raise ValueError(f"{self.depth}: {len(depth)} depth frames for {len(frames)} images")
                return depth
            model = DepthModel(self.depth_estimator, self.device)
            return [model(f) for f in frames]
        except ValueError as e:
            raise SystemExit(str(e)) from None

    def estimate_init(self, image: np.ndarray, K: np.ndarray, depth: np.ndarray | None):
        """The first frame's right hand (HandParams) and its INIT.json dict; SystemExit when none is found."""
        import torch

        from megohand.hand.retarget import Retargeter
        from megohand.hand.vector import HandParams
        from megohand.perception.estimator import load_estimator
        from megohand.perception.sequence import fit_track, track_hand

        try:
            estimator = load_estimator(self.estimator, tracking=False)
            retargeter = Retargeter.from_pretrained(self.retarget_model, mano_dir=self.mano_dir)
        except (ImportError, ValueError) as e:
            raise SystemExit(f"no --init given, and the hand cannot be estimated: {e}") from None
        track = track_hand(estimator, [image], K, None if depth is None else [depth])
        fit = fit_track(retargeter, track, smooth=0.0)
        if not fit["valid"][0]:
            why = "none found" if not track.found[0] else "no credible fit"
            raise SystemExit(f"{self.image}: no right hand in the first frame ({why}); pass --init INIT.json "
                             "(schema: docs/inference.md)")
        d = {k: fit[k][0].tolist() for k in FIELDS}
        d.update(K=np.asarray(K).tolist(), side="right", fit_error_mm=round(float(fit["fit_error_mm"][0]), 2),
                 estimated_from=str(self.image), depth_points=int(track.depth_points[0]))
        return HandParams(*(torch.from_numpy(fit[k][0]) for k in FIELDS)), d


def intrinsics_for(path: Path | None, width: int, height: int) -> np.ndarray:
    """K from --intrinsics (checked against the image size), else the default; SystemExit naming the file."""
    from megohand.perception.placement import check_intrinsics, default_intrinsics, read_intrinsics

    if path is None:
        return default_intrinsics(width, height)
    try:
        return check_intrinsics(read_intrinsics(path), width, height, str(path))
    except ValueError as e:
        raise SystemExit(str(e)) from None


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
    dist = float(np.linalg.norm(vals["transl"]))
    if dist > MAX_TRANSL_M:
        raise SystemExit(f"{path}: field 'transl' is {dist:g} from the camera; INIT.json is in metres (millimetres? "
                         "divide by 1000)")
    from megohand.perception.placement import check_intrinsics, default_intrinsics

    K = default_intrinsics(width, height)
    if d.get("K") is not None:
        try:
            K = check_intrinsics(d["K"], width, height, f"{path}: field 'K'")
        except ValueError as e:
            raise SystemExit(str(e)) from None
    return HandParams(*(torch.from_numpy(vals[k]) for k in FIELDS)), K


def write_sequence(out: Path, seq: dict[str, np.ndarray], meta: dict) -> None:
    """hands.json (per-frame lists + meta) and hands.npz (arrays (T, ...)), atomically."""
    from megohand import io

    frames = [{k: seq[k][t].tolist() for k in FIELDS} for t in range(len(seq["transl"]))]
    io.write_json(out / "hands.json", {**meta, "side": "right", "hand_frames": frames}, indent=None)
    with io.atomic_path(out / "hands.npz") as tmp:
        np.savez(tmp, **seq, fps=np.float32(meta["fps"]), K=np.asarray(meta["K"], np.float32))


def overlay_frames(images: list[np.ndarray], vertices: np.ndarray, faces: np.ndarray, K, color=None) -> list[np.ndarray]:
    """Draw the hand of each frame (vertices (T, V, 3) camera frame [m]) over images[t] (H, W, 3) uint8."""
    from megohand.render.overlay import HAND_COLOR, hand_mesh, overlay_batch

    c = HAND_COLOR if color is None else color
    return overlay_batch(images, np.asarray(K, np.float32), [[hand_mesh(v, faces, c)] for v in vertices])

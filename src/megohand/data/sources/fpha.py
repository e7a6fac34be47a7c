"""FPHA / F-PHAB (Garcia-Hernando et al., CVPR 2018): first-person hand actions, RealSense SR300 RGB-D.

Hands: **joints only**, right hand. ``skeleton.txt`` line = ``t`` + 21 x (x, y, z) in **mm** in the
depth camera's frame ("world coordinates" in the README), order Wrist, T/I/M/R/P MCP, then per finger
(T, I, M, R, P) PIP, DIP, TIP (``megohand.hand.joints.FPHA21_NAMES``). Line k belongs to
``color_<k:04d>.jpeg`` (as the official ``load_example.py``/``.m`` index them); the ``t`` column is
not used. All-zero or non-finite rows are unannotated frames (NaN joints).
The converter moves them into the **colour camera frame in metres**, ``X_c = (R X_d + t) / 1000``, with
the README's depth->colour extrinsics, and leaves MANO to the retargeting network
(``pipeline.episode_hands`` -> ``Retargeter.fit_sequence(order="fpha")``; ``hand_source="retargeted"``).

Camera (fixed, README values, the same in ``load_example.py``): colour K for 1920x1080, depth K for
640x480. Frames stored at another size (downscaled copies) get K scaled by the size ratio with the
pixel-centre rule ``c' = (c + 0.5) s - 0.5``. No ego-motion is given: no world->camera is stored.

Depth: 16-bit PNG, mm, at the **depth camera**. It is registered to the colour camera (the store keeps
depth at the RGB frame's size and camera): every valid depth pixel is back-projected, moved by the
extrinsics, projected with the colour K and fills the colour pixels inside its projected footprint;
the nearest surface wins; 0 = no measurement (:func:`register_depth`).

Text: action folder name -> "{Verb} the {noun}." ("charge_cell_phone" -> "Charge the cell phone."), with
the README's renames (liquid soap = dish soap, read letter = read paper, use flash = use spray) and a few
hand-written sentences for actions without a noun. Split: ``data_split_action_recognition.txt``
("Training N" / "Test N" headers followed by ``<subject>/<action>/<seq> <label>`` lines); sequences not
listed (or no file) are "train" (the body-line layout is not in the README: unverified). Task id =
``Subject_1/charge_cell_phone/1``; the three faulty sequences of docs/datasets.md are not listed by
``tasks()``. fps 30 (paper; unverified). Object poses (4 objects) are not read: FPHA has sensor depth.
Sources: the README and ``load_example.py``/``.m`` of guiggh/hand_pose_action; details in docs/datasets.md.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from .common import NativeEpisode, Source, SourceError, read_image, require, sentence

# README "Camera parameters" (also load_example.py / load_example.m)
COLOR_K = np.array([[1395.749023, 0.0, 935.732544], [0.0, 1395.749268, 540.681030], [0.0, 0.0, 1.0]])
COLOR_SIZE = (1920, 1080)  # (W, H) the colour K belongs to
DEPTH_K = np.array([[475.065948, 0.0, 315.944855], [0.0, 475.065857, 245.287079], [0.0, 0.0, 1.0]])
DEPTH_SIZE = (640, 480)
R_COLOR_FROM_DEPTH = np.array([
    [0.999988496304, -0.00468848412856, 0.000982563360594],
    [0.00469115935266, 0.999985218048, -0.00273845880292],
    [-0.000969709653873, 0.00274303671904, 0.99999576807],
])
T_COLOR_FROM_DEPTH_MM = np.array([25.7, 1.22, 3.902])
FPS = 30.0
POSE_DIRS = ("Hand_pose_annotation_v1", "Hand_pose_annotation_v1_1")
SKIP = {"Subject_2/close_milk/4", "Subject_2/put_tea_bag/2", "Subject_4/flip_sponge/2"}  # faulty (datasets.md)
TASK = re.compile(r"^Subject_\d+/[A-Za-z0-9_]+/\d+$")
NOUN_RENAMES = {"liquid soap": "dish soap", "letter": "paper", "flash": "spray"}  # README nomenclature note
SENTENCES = {
    "handshake": "Shake hands.",
    "high_five": "Give a high five.",
    "drink_mug": "Drink from the mug.",
    "scoop_spoon": "Scoop with the spoon.",
    "prick": "Prick with the fork.",
    "take_letter_from_enveloppe": "Take the letter from the envelope.",
}
LAYOUT = """FPHA (F-PHAB):  SRC/Video_files/Subject_<n>/<action>/<seq>/color/color_<NNNN>.jpeg (1920x1080),
      .../depth/depth_<NNNN>.png (640x480 uint16 mm at the depth camera; optional, registered to RGB);
      SRC/Hand_pose_annotation_v1[_1]/Subject_<n>/<action>/<seq>/skeleton.txt (t + 21x3 mm, depth camera);
      optional SRC/data_split_action_recognition.txt. Camera: README constants. Joints only: retargeted
      (--retarget-model; default the open hand's network). Task id = Subject_1/charge_cell_phone/1."""


def action_text(action: str) -> str:
    """'charge_cell_phone' -> 'Charge the cell phone.' (README renames applied)."""
    if action in SENTENCES:
        return SENTENCES[action]
    verb, _, noun = action.replace("_", " ").partition(" ")
    if not noun:
        return sentence(verb)
    noun = NOUN_RENAMES.get(noun, noun)
    return sentence(f"{verb} the {noun}")


def scale_intrinsics(K: np.ndarray, size_from: tuple[int, int], size_to: tuple[int, int]) -> np.ndarray:
    """K of frames (W,H) ``size_from`` -> K of the same view resized to ``size_to`` (pixel centres at integers)."""
    sx, sy = size_to[0] / size_from[0], size_to[1] / size_from[1]
    K = np.array(K, np.float64)
    K[0, 0], K[0, 1], K[1, 1] = K[0, 0] * sx, K[0, 1] * sx, K[1, 1] * sy
    K[0, 2], K[1, 2] = (K[0, 2] + 0.5) * sx - 0.5, (K[1, 2] + 0.5) * sy - 0.5
    return K


def depth_to_color_mm(X: np.ndarray) -> np.ndarray:
    """(...,3) depth-camera points [mm] -> colour-camera points [mm] (README extrinsics)."""
    return X @ R_COLOR_FROM_DEPTH.T + T_COLOR_FROM_DEPTH_MM


def register_depth(depth: np.ndarray, K_depth: np.ndarray, K_color: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Depth (h,w) [m] at the depth camera -> (H,W) float32 [m] at the colour camera, ``size`` = (W,H).

    Forward warp: each valid pixel (z > 0) is back-projected with ``K_depth``, moved by the extrinsics and
    projected with ``K_color``; it fills the colour pixels whose centres lie within its projected footprint
    (half-width ``0.5 (f_c / f_d) (z_d / z_c)`` px per axis); the nearest point wins; 0 = no measurement."""
    W, H = size
    v, u = np.nonzero(np.isfinite(depth) & (depth > 0))
    z = depth[v, u].astype(np.float64)
    P = np.stack([(u - K_depth[0, 2]) / K_depth[0, 0] * z, (v - K_depth[1, 2]) / K_depth[1, 1] * z, z], -1)
    P = P @ R_COLOR_FROM_DEPTH.T + T_COLOR_FROM_DEPTH_MM / 1000.0
    zc = P[:, 2]
    ok = zc > 1e-6
    P, z, zc = P[ok], z[ok], zc[ok]
    uc = K_color[0, 0] * P[:, 0] / zc + K_color[0, 2]
    vc = K_color[1, 1] * P[:, 1] / zc + K_color[1, 2]
    hx = 0.5 * K_color[0, 0] / K_depth[0, 0] * z / zc + 1e-6
    hy = 0.5 * K_color[1, 1] / K_depth[1, 1] * z / zc + 1e-6
    out = np.full(H * W, np.inf)
    if len(zc):
        r = int(np.ceil(max(hx.max(), hy.max())))
        x0, y0 = np.round(uc).astype(np.int64), np.round(vc).astype(np.int64)
        for dy in range(-r, r + 1):
            ys = y0 + dy
            my = (np.abs(ys - vc) <= hy) & (ys >= 0) & (ys < H)
            for dx in range(-r, r + 1):
                xs = x0 + dx
                m = my & (np.abs(xs - uc) <= hx) & (xs >= 0) & (xs < W)
                np.minimum.at(out, ys[m] * W + xs[m], zc[m])
    out[~np.isfinite(out)] = 0.0
    return out.reshape(H, W).astype(np.float32)


def read_skeleton(path: Path) -> np.ndarray:
    """skeleton.txt -> (T,21,3) depth-camera joints [mm] in FPHA order; unannotated rows NaN."""
    rows = []
    for i, line in enumerate(require(path, "FPHA skeleton.txt").read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            vals = np.array(line.split(), dtype=np.float64)
        except ValueError:
            raise SourceError(f"{path}: line {i} is not numeric") from None
        if vals.size != 64:
            raise SourceError(f"{path}: line {i} has {vals.size} numbers, expected 64 (t + 21 x 3)")
        rows.append(vals[1:].reshape(21, 3))
    if not rows:
        raise SourceError(f"{path}: no poses")
    J = np.stack(rows)
    J[~np.isfinite(J).all(axis=(1, 2)) | (np.abs(J).sum(axis=(1, 2)) == 0)] = np.nan
    return J


def _numbered(folder: Path, prefix: str, ext: str) -> dict[int, Path]:
    out = {}
    for p in folder.glob(f"{prefix}_*.{ext}"):
        num = p.stem[len(prefix) + 1 :]
        if num.isdigit():
            out[int(num)] = p
    return out


def _frames(folder: Path, prefix: str, ext: str, T: int, skel: Path, what: str) -> list[Path]:
    """The T frames ``<prefix>_<k:04d>.<ext>``, k = 0..T-1, or SourceError on any count/index mismatch."""
    found = _numbered(folder, prefix, ext)
    if len(found) != T:
        raise SourceError(f"{folder}: {len(found)} {what} frames, but {skel} has {T} poses")
    missing = [k for k in range(T) if k not in found]
    if missing:
        raise SourceError(f"missing {folder / f'{prefix}_{missing[0]:04d}.{ext}'} ({what} frames must be numbered 0..{T - 1})")
    return [found[k] for k in range(T)]


class FPHASource(Source):
    name = "fpha"
    layout = LAYOUT
    joints_only = True  # hands need the retargeting network

    def __init__(self, root):
        super().__init__(root)
        self._split_cache = None

    def tasks(self) -> list[str]:
        out = []
        for p in (self.root / "Video_files").glob("Subject_*/*/*"):
            task = str(p.relative_to(self.root / "Video_files").as_posix())
            if (p / "color").is_dir() and TASK.match(task) and task not in SKIP:
                out.append(task)
        return sorted(out)

    def _splits(self) -> dict[str, tuple[str, int | None]]:
        """task -> (split, action label) from data_split_action_recognition.txt."""
        if self._split_cache is None:
            self._split_cache = {}
            path = self.root / "data_split_action_recognition.txt"
            if path.exists():
                current = None
                for i, line in enumerate(path.read_text().splitlines(), 1):
                    tok = line.split()
                    if not tok:
                        continue
                    head = tok[0].lower()
                    if head in ("training", "train"):
                        current = "train"
                    elif head in ("test", "testing"):
                        current = "test"
                    elif current is None:
                        raise SourceError(f"{path}: line {i} comes before a 'Training'/'Test' header")
                    else:
                        label = int(tok[1]) if len(tok) > 1 and tok[1].isdigit() else None
                        self._split_cache[tok[0].strip("/")] = (current, label)
        return self._split_cache

    def _skeleton_path(self, task: str) -> Path:
        for d in POSE_DIRS:
            p = self.root / d / task / "skeleton.txt"
            if p.exists():
                return p
        return self.root / POSE_DIRS[0] / task / "skeleton.txt"

    def load(self, task: str) -> NativeEpisode:
        seq = self.root / "Video_files" / task
        if not TASK.match(task) or not (seq / "color").is_dir():
            raise SourceError(f"fpha: unknown task id {task!r} (no {seq / 'color'})")
        skel_path = self._skeleton_path(task)
        J_mm = read_skeleton(skel_path)
        T = len(J_mm)
        color = _frames(seq / "color", "color", "jpeg", T, skel_path, "colour")
        first = read_image(color[0])
        H, W = first.shape[:2]
        K = scale_intrinsics(COLOR_K, COLOR_SIZE, (W, H))
        joints = depth_to_color_mm(J_mm) / 1000.0  # NaN rows stay NaN
        depth = None
        if (seq / "depth").is_dir():
            depth_paths = _frames(seq / "depth", "depth", "png", T, skel_path, "depth")

            def depth():
                K_d = None
                for p in depth_paths:
                    d = read_image(p, mode=None)
                    if d.ndim != 2:
                        raise SourceError(f"{p}: depth must be a single-channel 16-bit image, got shape {d.shape}")
                    if K_d is None:
                        K_d = scale_intrinsics(DEPTH_K, DEPTH_SIZE, (d.shape[1], d.shape[0]))
                    yield register_depth(d.astype(np.float32) / 1000.0, K_d, K, (W, H))

        split, label = self._splits().get(task, ("train", None))
        action = task.split("/")[1]
        return NativeEpisode(
            dataset=self.name,
            episode=task,
            instruction=action_text(action),
            fps=FPS,
            width=W,
            height=H,
            K=K,
            split=split,
            num_frames=T,
            joints={"right": joints},
            joint_order="fpha",
            T_cam_from_world=None,
            rgb=lambda: (read_image(p) for p in color),
            depth=depth,
            depth_source="sensor" if depth else "none",
            hand_source="retargeted",
            extra={"action": action, "action_label": label, "pose_annotation": skel_path.parents[3].name,
                   "depth_registered_to_rgb": depth is not None},
        )

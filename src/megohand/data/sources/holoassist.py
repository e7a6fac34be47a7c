"""HoloAssist (Wang et al., ICCV 2023): HoloLens 2 recordings of instructed tasks, PV RGB 896x504.

Hands: HoloLens hand tracking (not ground truth, no MANO), both hands. ``Export_py/Hands/{Left,Right}_sync.txt``
(resampled to the PV frames: line k = frame k), tab-separated per line: metadata columns (3 in the v1
export, 5 = ``Time, IsGripped, IsPinched, IsTracked, IsActive`` in v2), 26 joint poses as row-major 4x4
(translation in the last column) in the **world** frame, 26 joint-valid flags, 26 tracked flags
(taeinkwon/PyHoloAssist ``hand_eye_project.py`` slices ``[3:-52]`` / ``[5:-52]``). Joint order =
Windows ``HandJointKind`` (``megohand.hand.joints.HOLOASSIST26_NAMES``). Joints with a zero valid flag, an
all-zero pose or non-finite values (and, in v2, untracked frames) are NaN.

Camera: ``Export_py/Video/Pose_sync.txt`` per frame ``index/time, timestamp (100 ns ticks), 16 values`` =
row-major 4x4 camera->world in the \\psi basis (x forward, y left, z up); ``Intrinsics.txt`` = 9 values
(row-major K, OpenCV layout) + width + height. World -> OpenCV camera, as PyHoloAssist projects:
``T_cam_from_world = CV_FROM_PSI @ inv(P)``, ``CV_FROM_PSI`` = inverse of
``[[0,0,1],[-1,0,0],[0,-1,0]]`` (x_cv = -y, y_cv = -z, z_cv = x). Joints are handed to the
retargeting network in that camera frame [m] (``order="holoassist"``; ``hand_source="retargeted"``).
Frames whose pose is missing or not rigid have NaN poses and no hands.

RGB: ``Export_py/Video/images_aligned/<k:06d>.png`` (PyHoloAssist's per-frame export), else
``Export_py/Video_pitchshift.mp4`` / ``Video_compress.mp4`` with ``Video/VideoMp4Timing.txt`` (start, end
ticks): frame k shows the video frame nearest to its timestamp, ``round((ticks_k - start) / 1e7 * fps)``,
as PyHoloAssist aligns them. Frames of another size than Intrinsics.txt get K scaled by the size ratio.
No depth (AHAT depth is another camera): virtual depth.

Text: ``data-annotation-trainval-v1_1.json`` (list of videos with ``video_name``, ``taskType``,
``events``; event ``label``, ``start``/``end`` in video seconds, ``attributes``): every "Fine grained
action" -> segment "{Verb} the {Adjective} {Noun}." over the frames whose video time
``(ticks_k - start) / 1e7`` lies in [start, end); incorrect actions are kept and listed in
``extra["incorrect_segments"]``. Episode instruction = the most frequent segment text, else "Use the
{taskType}.". Splits: ``data-splits-v1/{train,val,test}-v1.txt`` (video names); unlisted = "train".
fps = from the Pose_sync timestamps. Task id = the recording folder name, e.g. ``R0027-12-GoPro``.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from .common import (
    NativeEpisode,
    Source,
    SourceError,
    iter_video,
    numbered_frames,
    read_image,
    read_json,
    read_numbers,
    require,
    sentence,
    video_frame_count,
)

CV_FROM_PSI = np.array([[0.0, -1.0, 0.0, 0.0], [0.0, 0.0, -1.0, 0.0], [1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
TICKS_PER_S = 1e7
N_JOINTS = 26
META_COLUMNS = {3: "v1", 5: "v2"}
ANNOTATION = "data-annotation-trainval-v1_1.json"
VIDEOS = ("Video_pitchshift.mp4", "Video_compress.mp4")
LAYOUT = """HoloAssist:  SRC/<video name>/Export_py/Video/{Pose_sync.txt, Intrinsics.txt, VideoMp4Timing.txt},
      SRC/<video name>/Export_py/Hands/{Left,Right}_sync.txt (26 joints as 4x4, world, per PV frame);
      RGB: .../Export_py/Video/images_aligned/<k:06d>.png (one per Pose_sync line) or
      .../Export_py/Video_pitchshift.mp4 | Video_compress.mp4 (frames matched by timestamp);
      optional SRC/data-annotation-trainval-v1_1.json, SRC/data-splits-v1/{train,val,test}-v1.txt.
      No depth (virtual depth). Joints only: retargeted (--retarget-model). Task id = R0027-12-GoPro."""


def read_rows(path: Path, what: str) -> list[np.ndarray]:
    """Tab/space separated numeric lines -> list of float64 arrays (SourceError naming file and line)."""
    rows = []
    for i, line in enumerate(require(path, what).read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rows.append(np.array(line.replace(",", " ").split(), dtype=np.float64))
        except ValueError:
            raise SourceError(f"{path}: line {i} is not numeric") from None
    if not rows:
        raise SourceError(f"{path}: empty")
    return rows


def read_camera_poses(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Pose_sync.txt -> timestamps (T,) int64 ticks, camera->world (T,4,4) in the psi basis."""
    rows = read_rows(path, "HoloAssist camera poses")
    for i, r in enumerate(rows, 1):
        if r.size != 18:
            raise SourceError(f"{path}: row {i} has {r.size} values, expected 18 (index, timestamp, 4x4)")
    A = np.stack(rows)
    ticks = A[:, 1].astype(np.int64)
    if (np.diff(ticks) < 0).any():
        raise SourceError(f"{path}: timestamps (column 2) decrease")
    return ticks, A[:, 2:].reshape(-1, 4, 4)


def world_to_camera(P_cam_to_world: np.ndarray) -> np.ndarray:
    """(T,4,4) psi camera->world -> (T,4,4) world->OpenCV camera; NaN where the pose is not rigid."""
    out = np.full(P_cam_to_world.shape, np.nan)
    R = P_cam_to_world[:, :3, :3]
    with np.errstate(invalid="ignore"):
        rigid = np.isfinite(P_cam_to_world).all(axis=(1, 2)) & np.isclose(P_cam_to_world[:, 3], [0, 0, 0, 1]).all(1)
        rigid &= (np.abs(np.swapaxes(R, 1, 2) @ R - np.eye(3)).max(axis=(1, 2)) < 1e-3) & (np.linalg.det(R) > 0)
    if rigid.any():
        out[rigid] = CV_FROM_PSI @ np.linalg.inv(P_cam_to_world[rigid])
    return out


def read_hand(path: Path, T: int, pose_path: Path) -> tuple[np.ndarray, str]:
    """{Left,Right}_sync.txt -> world joint positions (T,26,3) [m] (NaN = not valid) and the format name."""
    rows = read_rows(path, "HoloAssist hand file")
    if len(rows) != T:
        raise SourceError(f"{path}: {len(rows)} frames, but {pose_path} has {T} frames")
    L = rows[0].size
    meta = L - N_JOINTS * 16 - 2 * N_JOINTS
    if meta not in META_COLUMNS:
        raise SourceError(f"{path}: {L} columns per line; expected 3 or 5 metadata columns + 26x16 pose values "
                          f"+ 52 flags ({3 + 468} or {5 + 468})")
    for i, r in enumerate(rows, 1):
        if r.size != L:
            raise SourceError(f"{path}: line {i} has {r.size} columns, line 1 has {L}")
    A = np.stack(rows)
    M = A[:, meta : meta + N_JOINTS * 16].reshape(T, N_JOINTS, 4, 4)
    valid = A[:, L - 2 * N_JOINTS : L - N_JOINTS] != 0
    valid &= np.isfinite(M).all(axis=(2, 3)) & (np.abs(M).sum(axis=(2, 3)) > 0)
    if meta == 5:
        valid &= (A[:, 3] != 0)[:, None]  # IsTracked
    X = M[..., :3, 3].copy()
    X[~valid] = np.nan
    return X, META_COLUMNS[meta]


def transform_points(T_cw: np.ndarray, X: np.ndarray) -> np.ndarray:
    """(T,4,4) x (T,N,3) -> (T,N,3)."""
    return np.einsum("tij,tnj->tni", T_cw[:, :3, :3], X) + T_cw[:, None, :3, 3]


def fine_text(attributes: dict) -> str | None:
    """Fine-grained action attributes -> "{Verb} the {Adjective} {Noun}." (None without a verb)."""
    items = (attributes or {}).items()
    a = {str(k).strip().lower(): str(v).replace("_", " ").strip() for k, v in items if isinstance(v, (str, int, float))}
    clean = lambda s: "" if s.lower() in ("", "none", "n/a", "na", "null") else s  # noqa: E731
    verb, adj, noun = clean(a.get("verb", "")).lower(), clean(a.get("adjective", "")), clean(a.get("noun", ""))
    if not verb:
        return None
    return sentence(" ".join(w for w in (verb, "the", adj, noun) if w) if noun else verb)


def _correct(attributes: dict) -> bool:
    for k, v in (attributes or {}).items():
        if str(k).strip().lower() == "action correctness":
            return str(v).strip().lower().startswith("correct")
    return True


def _video_fps(path: Path) -> float:
    import av

    try:
        with av.open(str(path)) as c:
            rate = c.streams.video[0].average_rate
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"cannot read video {path}: {e}") from None
    if not rate:
        raise SourceError(f"{path}: video has no frame rate")
    return float(rate)


def _pick(frames, idx: np.ndarray, path: Path):
    """Yield frames[idx[k]] for non-decreasing idx from a frame iterator."""
    it = iter(frames)
    cur_i, cur = -1, None
    for i in idx:
        while cur_i < i:
            cur = next(it, None)
            cur_i += 1
            if cur is None:
                raise SourceError(f"{path}: ended after {cur_i} frames, frame {i} needed")
        yield cur


def _scale_K(K: np.ndarray, size_from, size_to) -> np.ndarray:
    sx, sy = size_to[0] / size_from[0], size_to[1] / size_from[1]
    K = np.array(K, np.float64)
    K[0, 0], K[0, 1], K[1, 1] = K[0, 0] * sx, K[0, 1] * sx, K[1, 1] * sy
    K[0, 2], K[1, 2] = (K[0, 2] + 0.5) * sx - 0.5, (K[1, 2] + 0.5) * sy - 0.5
    return K


class HoloAssistSource(Source):
    name = "holoassist"
    layout = LAYOUT
    joints_only = True  # hands need the retargeting network

    def __init__(self, root):
        super().__init__(root)
        self._ann = None
        self._ann_path = None
        self._split_cache = None

    def tasks(self) -> list[str]:
        return sorted(p.parent.name for p in self.root.glob("*/Export_py") if (p / "Video" / "Pose_sync.txt").exists())

    def _annotations(self) -> dict:
        """video name -> annotation record (empty without the annotation file)."""
        if self._ann is None:
            path = self.root / ANNOTATION
            if not path.exists():
                path = next(iter(sorted(self.root.glob("data-annotation*.json"))), path)
            self._ann = {}
            if path.exists():
                data = read_json(path)
                if isinstance(data, dict):  # {video_name: record}
                    data = [dict(v, video_name=k) for k, v in data.items() if isinstance(v, dict)]
                if not isinstance(data, list):
                    raise SourceError(f"{path}: expected a list of video records")
                for rec in data:
                    if not isinstance(rec, dict) or "video_name" not in rec or not isinstance(rec.get("events", []), list):
                        raise SourceError(f"{path}: video record without 'video_name' / 'events' list: {str(rec)[:80]}")
                    self._ann[str(rec["video_name"])] = rec
                self._ann_path = path
        return self._ann

    def _splits(self) -> dict[str, str]:
        if self._split_cache is None:
            self._split_cache = {}
            folders = sorted(self.root.glob("data-splits-v1*"))
            if folders:
                for split in ("train", "val", "test"):
                    for p in sorted(folders[0].glob(f"{split}-v1*.txt")):
                        for line in p.read_text().splitlines():
                            if line.strip():
                                self._split_cache[line.strip()] = split
        return self._split_cache

    def _rgb(self, exp: Path, ticks: np.ndarray, pose_path: Path):
        """(frame iterator factory, first frame, source name, video start ticks or None)."""
        T = len(ticks)
        aligned = exp / "Video" / "images_aligned"
        timing_path = exp / "Video" / "VideoMp4Timing.txt"
        start = None
        if timing_path.exists():
            t = read_numbers(timing_path)
            if t.size < 1:
                raise SourceError(f"{timing_path}: expected start and end timestamps")
            start = int(t[0])
        if aligned.is_dir():
            pngs = numbered_frames(aligned, "png")
            if len(pngs) != T:
                raise SourceError(f"{aligned}: {len(pngs)} images, but {pose_path} has {T} frames")
            return (lambda: (read_image(p) for p in pngs)), read_image(pngs[0]), "images_aligned", start
        video = next((exp / v for v in VIDEOS if (exp / v).exists()), None)
        if video is None:
            raise SourceError(f"{exp}: no RGB (Video/images_aligned/ or {' / '.join(VIDEOS)})")
        if start is None:
            raise SourceError(f"missing {timing_path} (needed to match {video.name} frames to {pose_path})")
        n, fps = video_frame_count(video), _video_fps(video)
        t = (ticks - start) / TICKS_PER_S
        bad = (t < -1.0 / fps) | (t > n / fps)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise SourceError(f"{video}: {n} frames ({n / fps:.2f} s at {fps:g} fps), but frame {k} of {pose_path} "
                              f"is at {t[k]:.2f} s (frame count disagrees with the poses)")
        idx = np.clip(np.round(t * fps).astype(np.int64), 0, n - 1)
        return (lambda: _pick(iter_video(video), idx, video)), next(iter_video(video)), f"video:{video.name}", start

    def load(self, task: str) -> NativeEpisode:
        exp = self.root / task / "Export_py"
        pose_path = exp / "Video" / "Pose_sync.txt"
        if "/" in task or not task or not pose_path.exists():
            raise SourceError(f"holoassist: unknown task id {task!r} (no {pose_path})")
        ticks, P = read_camera_poses(pose_path)
        T = len(ticks)
        T_cw = world_to_camera(P)
        joints, fmt = {}, None
        for side, fname in (("left", "Left_sync.txt"), ("right", "Right_sync.txt")):
            X, fmt = read_hand(exp / "Hands" / fname, T, pose_path)
            J = transform_points(np.nan_to_num(T_cw), X)
            J[~np.isfinite(T_cw).all(axis=(1, 2))] = np.nan
            if np.isfinite(J).all(-1).any():
                joints[side] = J
        if not joints:
            raise SourceError(f"{exp / 'Hands'}: no tracked hand joints in any frame")
        intr_path = exp / "Video" / "Intrinsics.txt"
        intr = read_numbers(intr_path, 11)
        K = intr[:9].reshape(3, 3)
        if not (K[0, 0] > 0 and K[1, 1] > 0 and np.allclose(K[2], [0, 0, 1])):
            raise SourceError(f"{intr_path}: expected a row-major K [[fx,0,cx],[0,fy,cy],[0,0,1]], got {K.tolist()}")
        rgb, first, rgb_source, start = self._rgb(exp, ticks, pose_path)
        H, W = first.shape[:2]
        if (W, H) != (int(intr[9]), int(intr[10])):
            K = _scale_K(K, (intr[9], intr[10]), (W, H))
        fps = float((T - 1) * TICKS_PER_S / (ticks[-1] - ticks[0])) if T > 1 and ticks[-1] > ticks[0] else 30.0
        times = (ticks - (ticks[0] if start is None else start)) / TICKS_PER_S
        rec = self._annotations().get(task)
        segments = []
        for ev in (rec or {}).get("events", []):
            if not isinstance(ev, dict) or ev.get("label") != "Fine grained action":
                continue
            text = fine_text(ev.get("attributes"))
            try:
                s, e = float(ev["start"]), float(ev["end"])
            except (KeyError, TypeError, ValueError):
                raise SourceError(f"{self._ann_path}: {task}: fine-grained event without numeric start/end: "
                                  f"{str(ev)[:80]}") from None
            a, b = int(np.searchsorted(times, s, "left")), int(np.searchsorted(times, e, "left"))
            if text and b > a:
                segments.append((a, b, text, _correct(ev.get("attributes"))))
        segments.sort(key=lambda x: (x[0], x[1]))
        incorrect = [i for i, sg in enumerate(segments) if not sg[3]]
        segments = [sg[:3] for sg in segments]
        task_type = str((rec or {}).get("taskType", "") or "")
        if segments:
            instruction = Counter(t for _, _, t in segments).most_common(1)[0][0]
        else:
            instruction = sentence(f"use the {task_type}") if task_type else ""
        return NativeEpisode(
            dataset=self.name,
            episode=task,
            instruction=instruction,
            fps=round(fps, 4),
            width=W,
            height=H,
            K=K,
            split=self._splits().get(task, "train"),
            num_frames=T,
            joints=joints,
            joint_order="holoassist",
            segments=segments,
            T_cam_from_world=T_cw,
            rgb=rgb,
            depth=None,
            depth_source="none",
            hand_source="retargeted",
            extra={"task_type": task_type, "incorrect_segments": incorrect, "rgb_source": rgb_source,
                   "hand_format": fmt, "annotated": rec is not None},
        )

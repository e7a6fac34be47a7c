"""HOT3D (Banerjee et al. 2024): the per-sequence (VRS) release and HOT3D-Clips.

Hands: MANO, 15 PCA coefficients + ``wrist_xform`` (global orient + smplx transl), world frame,
``flat_hand_mean=False``, betas shared by both hands (official loader: smplx
``create(use_pca=True, num_pca_comps=15)``). Converted with ``pose45 = pca @ hands_components[:15]
+ hands_mean`` and moved into the RGB camera frame with ``T_cam_from_world = (T_world_device
T_device_camera)^-1`` (VRS) or the clip's ``T_world_from_camera`` inverted.

Fisheye: the Aria RGB camera (stream 214-1) and the Quest 3 mono cameras use FISHEYE624. Frames
are resampled to the pinhole camera with the same focal length and principal point (as the official
``convert_to_pinhole_camera``/``warp_image``); the stored ``K`` is that pinhole, the fisheye
parameters go to ``extra["fisheye624"]``. Hands live in the (shared) camera frame either way.
Quest 3 (no RGB) uses mono stream 1201-1, replicated to three channels.

Exact PCA->45 needs the real MANO ``hands_components``: with the bundled open hand the finger
poses are only approximate (the record says which hand model converted them).
"""

from __future__ import annotations

import csv
import io
import json
import tarfile
from pathlib import Path

import numpy as np

from .common import (
    Convention,
    NativeEpisode,
    ObjectTrack,
    RawHand,
    Source,
    SourceError,
    R_to_aa,
    invert_se3,
    quat_wxyz_to_R,
    read_json,
    read_jsonl,
    require,
    se3,
    sentence,
)
from .distortion import fisheye624_distort, fisheye624_params16, remap_bilinear, undistort_map

CONVENTION = Convention(flat_hand_mean=False, pca_components=15, transl="smplx", frame="world")
RGB_STREAM = "214-1"
MONO_STREAM = "1201-1"
TEST_PARTICIPANTS = {"P0004", "P0005", "P0006", "P0008", "P0016", "P0020"}
SIDES = {"0": "left", "1": "right"}

LAYOUT = """HOT3D (either form, both may sit under SRC):
  per-sequence release:  SRC/**/<P00xx_hash>/mano_hand_pose_trajectory.jsonl, headset_trajectory.csv,
      mps/slam/online_calibration.jsonl (Aria) or camera_models.json (Quest 3), masks/*.csv or
      box2d_hands.csv (frame timestamps of the camera stream), dynamic_objects.csv, metadata.json,
      recording.vrs (images; needs the optional projectaria-tools package);
      object names/meshes from SRC/**/object_library/{instance.json,<uid>.glb} if present.
      Task id = the sequence folder name, e.g. P0003_c701bd11.
  HOT3D-Clips:  SRC/<train_aria|train_quest3|test_aria|test_quest3>/clip-<id>.tar with
      <frame:06d>.{image_214-1.jpg,image_1201-1.jpg,cameras.json,hands.json,objects.json} and
      __hand_shapes.json__; optional SRC/clip_splits.json, SRC/object_models[_eval]/obj_<bop:06d>.glb.
      Task id = train_aria/clip-002832."""


def _pose_from_qt(q_wxyz, t) -> np.ndarray:
    return se3(quat_wxyz_to_R(np.asarray(q_wxyz, np.float64)), np.asarray(t, np.float64))


def _read_csv(path: Path) -> list[dict]:
    with open(require(path), newline="") as f:
        rows = list(csv.DictReader(f))
    return rows


def _object_poses_csv(path: Path) -> dict[str, dict[int, np.ndarray]]:
    """dynamic_objects.csv / headset_trajectory.csv -> uid -> timestamp -> T_world_object (4,4)."""
    cols = ["t_wo_x[m]", "t_wo_y[m]", "t_wo_z[m]", "q_wo_w", "q_wo_x", "q_wo_y", "q_wo_z"]
    rows = _read_csv(path)
    out: dict[str, dict[int, np.ndarray]] = {}
    if not rows:
        return out
    missing = [c for c in ["object_uid", "timestamp[ns]", *cols] if c not in rows[0]]
    if missing:
        raise SourceError(f"{path}: missing columns {missing}")
    try:
        vals = np.array([[float(r[c]) for c in cols] for r in rows])
    except ValueError as e:
        raise SourceError(f"{path}: non-numeric pose value ({e})") from None
    T = _pose_from_qt(vals[:, 3:7], vals[:, 0:3])
    for r, Ti in zip(rows, T):
        out.setdefault(r["object_uid"], {})[int(r["timestamp[ns]"])] = Ti
    return out


def _nearest(sorted_ts: np.ndarray, query: np.ndarray, tol_ns: int) -> np.ndarray:
    """Index of the nearest timestamp for each query, -1 when farther than tol_ns."""
    i = np.clip(np.searchsorted(sorted_ts, query), 1, len(sorted_ts) - 1)
    left, right = sorted_ts[i - 1], sorted_ts[i]
    j = np.where(np.abs(query - left) <= np.abs(right - query), i - 1, i)
    return np.where(np.abs(sorted_ts[j] - query) <= tol_ns, j, -1)


def _pinhole_K(p16: np.ndarray) -> np.ndarray:
    return np.array([[p16[0], 0, p16[2]], [0, p16[1], p16[3]], [0, 0, 1.0]])


class FisheyeToPinhole:
    """Resample FISHEYE624 frames to the pinhole camera with the same f and c (keeps the camera frame)."""

    def __init__(self, params, width: int, height: int):
        self.p16 = fisheye624_params16(params)
        self.K = _pinhole_K(self.p16)
        self.width, self.height = width, height
        self._map = None

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self._map is None:
            self._map = undistort_map(
                self.K, self.width, self.height, lambda ab: fisheye624_distort(ab, self.p16), self.p16[:2], self.p16[2:4]
            )
        return remap_bilinear(image, self._map)


def _instance_names(root: Path) -> dict[str, str]:
    """uid and BOP id -> object name from any object_library/instance.json under root (may be empty)."""
    names: dict[str, str] = {}
    for path in list(root.glob("instance.json")) + list(root.glob("*/instance.json")) + list(
        root.glob("*/*/instance.json")
    ):
        for uid, info in read_json(path).items():
            name = str(info.get("instance_name", uid)).replace("_", " ")
            names[str(uid)] = name
            if "instance_bop_id" in info:
                names[f"bop:{int(info['instance_bop_id'])}"] = name
    return names


def _most_moved(tracks: dict[str, np.ndarray]) -> str | None:
    """Key of the object whose position travels farthest over the episode."""
    best, best_len = None, -1.0
    for key, T in tracks.items():
        p = T[:, :3, 3]
        p = p[np.isfinite(p).all(1)]
        length = float(np.linalg.norm(np.diff(p, axis=0), axis=1).sum()) if len(p) > 1 else 0.0
        if length > best_len:
            best, best_len = key, length
    return best


class Hot3DSource(Source):
    name = "hot3d"
    layout = LAYOUT

    def __init__(self, root):
        super().__init__(root)
        self._names = None

    # -- discovery
    def _sequences(self) -> dict[str, Path]:
        out = {}
        for depth in ("*", "*/*", "*/*/*"):
            for p in self.root.glob(f"{depth}/mano_hand_pose_trajectory.jsonl"):
                out[p.parent.name] = p.parent
        return out

    def _clips(self) -> dict[str, Path]:
        out = {}
        for p in self.root.glob("*/clip-*.tar"):
            out[f"{p.parent.name}/{p.name[:-4]}"] = p
        return out

    def tasks(self) -> list[str]:
        return sorted({**self._sequences(), **self._clips()})

    @property
    def names(self) -> dict[str, str]:
        if self._names is None:
            self._names = _instance_names(self.root)
        return self._names

    def load(self, task: str) -> NativeEpisode:
        clips = self._clips()
        if task in clips:
            return self._load_clip(task, clips[task])
        seqs = self._sequences()
        if task in seqs:
            return self._load_sequence(task, seqs[task])
        raise SourceError(f"hot3d: unknown task id {task!r} under {self.root}")

    # -- per-sequence (VRS) release
    def camera_calibration(self, seq: Path) -> dict:
        """{'stream', 'params' (15/16), 'T_device_camera' (4,4), 'width', 'height'} of the ego camera."""
        aria = seq / "mps" / "slam" / "online_calibration.jsonl"
        quest = seq / "camera_models.json"
        if aria.exists():
            for line in read_jsonl(aria):
                for cam in line.get("CameraCalibrations", []):
                    if cam.get("Label") == "camera-rgb":
                        T = cam["T_Device_Camera"]
                        q = [T["UnitQuaternion"][0], *T["UnitQuaternion"][1]]
                        return {
                            "stream": RGB_STREAM,
                            "params": np.asarray(cam["Projection"]["Params"], np.float64),
                            "T_device_camera": _pose_from_qt(q, T["Translation"]),
                            "width": 1408,
                            "height": 1408,
                        }
            raise SourceError(f"{aria}: no 'camera-rgb' calibration found")
        if quest.exists():
            for cam in read_json(quest):
                if cam.get("stream_id") == MONO_STREAM:
                    T = cam["T_Device_Camera"]
                    return {
                        "stream": MONO_STREAM,
                        "params": np.asarray(cam["projectionParams"], np.float64),
                        "T_device_camera": _pose_from_qt(T["quaternion_wxyz"], T["translation_xyz"]),
                        "width": int(cam["imageWidth"]),
                        "height": int(cam["imageHeight"]),
                    }
            raise SourceError(f"{quest}: no stream {MONO_STREAM} camera")
        raise SourceError(f"missing camera calibration: {aria} (Aria) or {quest} (Quest 3)")

    def _frame_timestamps(self, seq: Path, stream: str) -> np.ndarray:
        for path in (seq / "masks" / "mask_hand_pose_available.csv", seq / "box2d_hands.csv"):
            if path.exists():
                rows = _read_csv(path)
                ts = sorted({int(r["timestamp[ns]"]) for r in rows if r.get("stream_id") == stream})
                if ts:
                    return np.array(ts, np.int64)
        vrs = seq / "recording.vrs"
        if vrs.exists():
            return np.array([t for t, _ in self._vrs_frames(vrs, stream, timestamps_only=True)], np.int64)
        raise SourceError(f"{seq}: no frame timestamps for stream {stream} (masks/*.csv, box2d_hands.csv or recording.vrs)")

    def _load_sequence(self, task: str, seq: Path) -> NativeEpisode:
        cal = self.camera_calibration(seq)
        ts = self._frame_timestamps(seq, cal["stream"])
        T_len = len(ts)
        hand_path = seq / "mano_hand_pose_trajectory.jsonl"
        by_ts = {}
        for rec in read_jsonl(hand_path):
            try:
                by_ts[int(rec["timestamp_ns"])] = rec["hand_poses"]
            except (KeyError, TypeError):
                raise SourceError(f"{hand_path}: record without timestamp_ns/hand_poses") from None
        hands = {}
        for key, side in SIDES.items():
            go, pose, transl, betas = np.zeros((T_len, 3)), np.zeros((T_len, 15)), np.zeros((T_len, 3)), np.zeros((T_len, 10))
            valid = np.zeros(T_len, bool)
            for i, t in enumerate(ts):
                h = by_ts.get(int(t), {}).get(key)
                if not h or "wrist_xform" not in h or "pose" not in h:
                    continue
                try:
                    w = h["wrist_xform"]
                    go[i] = R_to_aa(quat_wxyz_to_R(np.asarray(w["q_wxyz"], np.float64)))
                    transl[i] = w["t_xyz"]
                    pose[i] = h["pose"]
                    betas[i] = h["betas"]
                except (KeyError, ValueError, TypeError) as e:
                    raise SourceError(f"{hand_path}: bad hand record at {t} ({e})") from None
                valid[i] = True
            if valid.any():
                betas[~valid] = betas[valid][0]
                hands[side] = RawHand(go, pose, betas, transl, valid)
        if not hands:
            raise SourceError(f"{hand_path}: no MANO hand poses at the frames of stream {cal['stream']}")
        # headset trajectory -> T_world_device per frame
        traj_path = seq / "headset_trajectory.csv"
        traj = _object_poses_csv(traj_path)
        if not traj:
            raise SourceError(f"{traj_path}: empty headset trajectory")
        dev = next(iter(traj.values()))
        dev_ts = np.array(sorted(dev), np.int64)
        idx = _nearest(dev_ts, ts, tol_ns=5_000_000)
        T_world_device = np.stack([dev[int(dev_ts[j])] if j >= 0 else np.full((4, 4), np.nan) for j in idx])
        T_cam_from_world = invert_se3(T_world_device @ cal["T_device_camera"])
        for h in hands.values():
            h.valid &= idx >= 0
        # objects + text
        objects, instruction, obj_name = [], "", None
        dyn = seq / "dynamic_objects.csv"
        if dyn.exists():
            tracks = {}
            for uid, poses in _object_poses_csv(dyn).items():
                ots = np.array(sorted(poses), np.int64)
                j = _nearest(ots, ts, tol_ns=5_000_000)
                tracks[uid] = np.stack([poses[int(ots[k])] if k >= 0 else np.full((4, 4), np.nan) for k in j])
            moved = _most_moved(tracks)
            if moved is not None:
                obj_name = self.names.get(moved, "object")
            objects = [("uid", uid, T) for uid, T in tracks.items()]
        instruction = sentence(f"use the {obj_name}") if obj_name else "Use the object."
        fisheye = FisheyeToPinhole(cal["params"], cal["width"], cal["height"])
        participant = task.split("_")[0]
        vrs = seq / "recording.vrs"
        rgb = None
        if vrs.exists():
            stream = cal["stream"]

            def rgb():
                for _, img in self._vrs_frames(vrs, stream, wanted=ts):
                    img = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=2)
                    yield fisheye(img)

        return NativeEpisode(
            dataset=self.name,
            episode=task,
            instruction=instruction,
            fps=30.0,
            width=cal["width"],
            height=cal["height"],
            K=fisheye.K,
            split="test" if participant in TEST_PARTICIPANTS else "train",
            num_frames=T_len,
            convention=CONVENTION,
            hands=hands,
            T_cam_from_world=T_cam_from_world,
            rgb=rgb,
            depth=None,
            depth_source="none",
            objects=self._object_tracks(objects),
            extra={
                "form": "sequence",
                "stream": cal["stream"],
                "timestamps_ns": ts.tolist(),
                "fisheye624": fisheye.p16.tolist(),
                "images": "fisheye resampled to pinhole K (same f, c)",
                "manipulated_object": obj_name,
            },
        )

    @staticmethod
    def _vrs_frames(vrs: Path, stream: str, wanted=None, timestamps_only=False):
        try:
            from projectaria_tools.core import data_provider
            from projectaria_tools.core.stream_id import StreamId
        except ImportError:
            raise SourceError(f"{vrs}: reading VRS images needs the optional package projectaria-tools") from None
        prov = data_provider.create_vrs_data_provider(str(vrs))
        if prov is None:
            raise SourceError(f"cannot open {vrs}")
        sid = StreamId(stream)
        n = prov.get_num_data(sid)
        want = None if wanted is None else set(int(t) for t in wanted)
        for i in range(n):
            data, rec = prov.get_image_data_by_index(sid, i)
            t = int(rec.capture_timestamp_ns)
            if want is not None and t not in want:
                continue
            yield t, (None if timestamps_only else data.to_numpy_array())

    # -- HOT3D-Clips
    def _clip_split(self, task: str) -> str:
        folder, clip = task.split("/")
        path = self.root / "clip_splits.json"
        if path.exists():
            splits = read_json(path)
            cid = int(clip.split("-")[1])
            for name, ids in splits.items():
                for entry in ids if isinstance(ids, list) else ids.values():
                    vals = entry if isinstance(entry, list) else [entry]
                    if cid in [int(v) for v in vals if str(v).isdigit()]:
                        return "train" if name == "train" else "test"
        return "train" if folder.startswith("train") else "test"

    def _load_clip(self, task: str, tar_path: Path) -> NativeEpisode:
        try:
            tar = tarfile.open(tar_path)
            members = {m.name: m for m in tar.getmembers()}
        except (tarfile.TarError, OSError) as e:
            raise SourceError(f"cannot read clip archive {tar_path}: {e}") from None

        def load_json(name):
            if name not in members:
                raise SourceError(f"{tar_path}: missing {name}")
            try:
                return json.load(tar.extractfile(members[name]))
            except json.JSONDecodeError as e:
                raise SourceError(f"{tar_path}: corrupt JSON in {name}: {e}") from None

        frames = sorted(int(n.split(".")[0]) for n in members if n.endswith(".cameras.json"))
        if not frames:
            raise SourceError(f"{tar_path}: no <frame>.cameras.json entries")
        stream = RGB_STREAM if f"{frames[0]:06d}.image_{RGB_STREAM}.jpg" in members else MONO_STREAM
        T_len = len(frames)
        shape = load_json("__hand_shapes.json__") if "__hand_shapes.json__" in members else None
        betas = np.asarray(shape["mano"], np.float64) if shape else None
        T_world_cam = np.zeros((T_len, 4, 4))
        cal = None
        hands_raw = {s: {"go": np.zeros((T_len, 3)), "pose": np.zeros((T_len, 15)), "transl": np.zeros((T_len, 3)),
                         "valid": np.zeros(T_len, bool)} for s in ("left", "right")}
        obj_poses: dict[str, np.ndarray] = {}
        for i, f in enumerate(frames):
            key = f"{f:06d}"
            cams = load_json(f"{key}.cameras.json")
            if stream not in cams:
                raise SourceError(f"{tar_path}: {key}.cameras.json has no stream {stream}")
            c = cams[stream]
            T_world_cam[i] = _pose_from_qt(c["T_world_from_camera"]["quaternion_wxyz"], c["T_world_from_camera"]["translation_xyz"])
            if cal is None:
                cal = c["calibration"]
            hj = f"{key}.hands.json"
            if hj in members and betas is not None:
                hands = load_json(hj)
                for side in ("left", "right"):
                    mp = (hands.get(side) or {}).get("mano_pose")
                    if mp is None:
                        continue
                    w = np.asarray(mp["wrist_xform"], np.float64).reshape(6)
                    d = hands_raw[side]
                    d["go"][i], d["transl"][i], d["pose"][i], d["valid"][i] = w[:3], w[3:], mp["thetas"], True
            oj = f"{key}.objects.json"
            if oj in members:
                for oid, o in load_json(oj).items():
                    T = o["T_world_from_object"] if "T_world_from_object" in o else o[0]["T_world_from_object"]
                    obj_poses.setdefault(oid, np.full((T_len, 4, 4), np.nan))[i] = _pose_from_qt(
                        T["quaternion_wxyz"], T["translation_xyz"]
                    )
        hands = {
            side: RawHand(d["go"], d["pose"], np.tile(betas, (T_len, 1)), d["transl"], d["valid"])
            for side, d in hands_raw.items()
            if d["valid"].any()
        }
        fisheye = FisheyeToPinhole(cal["projection_params"], int(cal["image_width"]), int(cal["image_height"]))
        moved = _most_moved(obj_poses)
        obj_name = self.names.get(f"bop:{int(moved)}", "object") if moved is not None and moved.isdigit() else None
        instruction = sentence(f"use the {obj_name}") if obj_name else "Use the object."

        def rgb():
            from PIL import Image

            with tarfile.open(tar_path) as t2:
                for f in frames:
                    name = f"{f:06d}.image_{stream}.jpg"
                    try:
                        img = np.array(Image.open(io.BytesIO(t2.extractfile(name).read())).convert("RGB"))
                    except Exception as e:  # noqa: BLE001
                        raise SourceError(f"{tar_path}: cannot read {name}: {e}") from None
                    yield fisheye(img)

        missing = [f for f in frames if f"{f:06d}.image_{stream}.jpg" not in members]
        if missing:
            raise SourceError(f"{tar_path}: {len(missing)} frames lack image_{stream}.jpg (first {missing[0]:06d})")
        tar.close()
        return NativeEpisode(
            dataset=self.name,
            episode=task,
            instruction=instruction,
            fps=30.0,
            width=fisheye.width,
            height=fisheye.height,
            K=fisheye.K,
            split=self._clip_split(task),
            num_frames=T_len,
            convention=CONVENTION,
            hands=hands,
            T_cam_from_world=invert_se3(T_world_cam),
            rgb=rgb,
            depth=None,
            depth_source="none",
            objects=self._object_tracks([("bop", k, v) for k, v in obj_poses.items()]),
            extra={
                "form": "clip",
                "stream": stream,
                "fisheye624": fisheye.p16.tolist(),
                "images": "fisheye resampled to pinhole K (same f, c)",
                "manipulated_object": obj_name,
            },
        )

    # -- object meshes for virtual depth (only when meshes are found)
    def _object_tracks(self, items) -> list[ObjectTrack]:
        out = []
        for kind, key, T in items:
            if kind == "uid":
                cands = list(self.root.glob(f"**/object_library/{key}.glb"))
            else:
                cands = [p for d in ("object_models_eval", "object_models") for p in self.root.glob(f"{d}/obj_{int(key):06d}.glb")]
            if not cands:
                continue
            mesh = load_glb(cands[0])
            if mesh is None:
                continue
            name = self.names.get(key if kind == "uid" else f"bop:{int(key)}", str(key))
            out.append(ObjectTrack(name, mesh[0], mesh[1], T))
        return out


def load_glb(path: Path):
    """GLB mesh -> (vertices (V,3) float32 m, faces (F,3) int64), or None without trimesh."""
    try:
        import trimesh
    except ImportError:
        import warnings

        warnings.warn(f"{path}: object meshes need the optional package trimesh; virtual depth shows hands only",
                      stacklevel=2)
        return None
    try:
        scene = trimesh.load(str(path), force="scene", process=False)
        mesh = scene.to_geometry() if hasattr(scene, "to_geometry") else scene.dump(concatenate=True)
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"cannot read mesh {path}: {e}") from None
    return np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64)

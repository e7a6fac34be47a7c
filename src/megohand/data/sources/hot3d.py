"""HOT3D (Banerjee et al. 2024): the per-sequence (VRS) release and HOT3D-Clips.

Hands, two annotations of the same hands:

* MANO: 15 PCA coefficients + ``wrist_xform`` (global orient + smplx transl), world frame,
  ``flat_hand_mean=False``, betas shared by both hands (official loader: smplx
  ``create(use_pca=True, num_pca_comps=15)``). Converted with ``pose45 = pca @ hands_components[:15]
  + hands_mean``: exact with real MANO, and only with it.
* UmeTrack: ``umetrack_hand_pose_trajectory.jsonl`` (20 joint angles + wrist transform per frame) with
  the wearer's ``umetrack_hand_user_profile.json`` (clips: ``hands.json`` ``umetrack_pose`` and
  ``__hand_shapes.json__["umetrack"]``); the profile's skinning model
  (:mod:`megohand.hand.umetrack`) gives 21 joints, which the retargeting network + refinement fit with any
  hand model. Used when the loaded hand model cannot decode MANO's PCA coefficients (the bundled open
  hand); :func:`megohand.data.sources.pipeline.hand_path` decides, the store records which
  (``extra.hand_path``; ``hand_source="retargeted"``). MANO's thumb1 has no UmeTrack landmark: its
  stand-in is read by the network but not fitted (``NativeEpisode.joints_unobserved``). Without a
  profile the PCA path runs anyway and ``convert`` / ``validate`` say that the fingers are approximate.

  Providing the profiles: HOT3D distributes one ``umetrack_hand_user_profile.json`` per sequence, in the
  sequence folder of the per-sequence release (beside ``umetrack_hand_pose_trajectory.jsonl``, where
  HOT3D's own ``PathProvider`` reads it); keep it there. A copy without it (such as an annotation-only
  download) converts through the PCA path with the warning; copy each sequence's profile into its folder
  and convert again. HOT3D-Clips carry the profile inside every clip (``__hand_shapes.json__``).

Frames and clocks (per-sequence release): the annotations (hands, headset, objects, masks, boxes) are
on the recording's TIME_CODE clock. The frames converted are the camera stream's annotated timestamps
(``masks/mask_hand_pose_available.csv`` or ``box2d_hands.csv``); each takes the image whose
timestamp is closest on the same clock (Aria: ``TimeDomain.TIME_CODE`` of projectaria-tools; Quest 3: the
VRS record time, as HOT3D's ``QuestDataProvider`` reads it), within ``FRAME_TOLERANCE_NS`` (1 ms, the
toolkit's frameset tolerance); a frame without one is an error naming its time. Aria device timestamps
(``capture_timestamp_ns``) are another clock and are not used.

Camera: Aria RGB stream 214-1 with the **factory calibration** stored in ``recording.vrs`` (as HOT3D's
``AriaDataProvider.get_camera_calibration``); without the VRS the MPS online calibration
(``mps/slam/online_calibration.jsonl``, first record) stands in (a few px different), and
``extra.calibration`` says which. Quest 3 (no RGB): mono stream 1201-1 from ``camera_models.json``,
replicated to three channels. ``T_cam_from_world = (T_world_device T_device_camera)^-1``
(clips: ``T_world_from_camera`` inverted).

Fisheye: FISHEYE624 frames are resampled to the pinhole camera with the same focal length and principal
point (as the official ``convert_to_pinhole_camera``/``warp_image``); the stored ``K`` is that pinhole, the
fisheye parameters go to ``extra["fisheye624"]``. Hands live in the (shared) camera frame either way.

Units: HOT3D stores metres. A sequence whose hands are not within arm's reach of the headset in metres
(median 0.05-2 m) stops with an error; ``units="mm"`` converts millimetre files, ``units="m"`` skips the check.
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
    read_tar_member,
    require,
    se3,
    sentence,
)
from .distortion import fisheye624_distort, fisheye624_params16, remap_bilinear, undistort_map

CONVENTION = Convention(flat_hand_mean=False, pca_components=15, transl="smplx", frame="world")
RGB_STREAM = "214-1"
RGB_LABEL = "camera-rgb"
FRAME_TOLERANCE_NS = 1_000_000  # HOT3D's recommended frameset tolerance (1 ms)
REACH_M = (0.05, 2.0)  # median hand-to-headset distance of a sequence in metres
MONO_STREAM = "1201-1"
TEST_PARTICIPANTS = {"P0004", "P0005", "P0006", "P0008", "P0016", "P0020"}
SIDES = {"0": "left", "1": "right"}

LAYOUT = """HOT3D (either form, both may sit under SRC):
  per-sequence release:  SRC/**/<P00xx_hash>/mano_hand_pose_trajectory.jsonl, headset_trajectory.csv,
      mps/slam/online_calibration.jsonl (Aria) or camera_models.json (Quest 3), masks/*.csv or
      box2d_hands.csv (frame timestamps of the camera stream), dynamic_objects.csv, metadata.json,
      recording.vrs (images + Aria factory calibration; needs the optional package projectaria-tools
      for Aria, pyvrs for Quest 3); optional umetrack_hand_pose_trajectory.jsonl +
      umetrack_hand_user_profile.json (fingers without MANO: UmeTrack joints -> retargeting);
      object names/meshes from SRC/**/object_library/{instance.json,<uid>.glb} if present.
      Task id = the sequence folder name, e.g. P0003_c701bd11.
  HOT3D-Clips:  SRC/<train_aria|train_quest3|test_aria|test_quest3>/clip-<id>.tar with
      <frame:06d>.{image_214-1.jpg,image_1201-1.jpg,cameras.json,hands.json,objects.json} and
      __hand_shapes.json__ (MANO betas, UmeTrack profile); optional SRC/clip_splits.json, SRC/object_models[_eval]/obj_<bop:06d>.glb.
      Task id = train_aria/clip-002832."""


def _pose_from_qt(q_wxyz, t) -> np.ndarray:
    return se3(quat_wxyz_to_R(np.asarray(q_wxyz, np.float64)), np.asarray(t, np.float64))


def _read_csv(path: Path) -> list[dict]:
    with open(require(path), newline="") as f:
        rows = list(csv.DictReader(f))
    return rows


def _object_poses_csv(path: Path, scale: float = 1.0) -> dict[str, dict[int, np.ndarray]]:
    """dynamic_objects.csv / headset_trajectory.csv -> uid -> timestamp -> T_world_object (4,4);
    translations times ``scale`` (1e-3 for millimetre files)."""
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
    T = _pose_from_qt(vals[:, 3:7], vals[:, 0:3] * scale)
    for r, Ti in zip(rows, T):
        out.setdefault(r["object_uid"], {})[int(r["timestamp[ns]"])] = Ti
    return out


def _poses_by_time(path: Path) -> dict[int, dict]:
    """A *_hand_pose_trajectory.jsonl -> timestamp [ns] -> {"0": left, "1": right} records."""
    out = {}
    for rec in read_jsonl(path):
        try:
            out[int(rec["timestamp_ns"])] = rec["hand_poses"]
        except (KeyError, TypeError, ValueError):
            raise SourceError(f"{path}: record without timestamp_ns/hand_poses") from None
    return out


def _check_metres(hands: dict, T_world_device: np.ndarray, hand_path: Path, traj_path: Path) -> None:
    """Stop when the hands are not within arm's reach of the headset in metres (mm files, mixed units)."""
    d = []
    for h in hands.values():
        ok = h.valid & np.isfinite(T_world_device).all(axis=(1, 2))
        d.append(np.linalg.norm(h.transl[ok] - T_world_device[ok, :3, 3], axis=1))
    d = np.concatenate(d) if d else np.zeros(0)
    if not len(d):
        return
    med = float(np.median(d))
    if not REACH_M[0] <= med <= REACH_M[1]:
        guess = " (millimetres?)" if REACH_M[0] * 1e3 <= med <= REACH_M[1] * 1e3 or med > 1e3 else ""
        raise SourceError(
            f"{hand_path} / {traj_path}: the hands are a median {med:.4g} units from the headset, not within "
            f"{REACH_M[0]}-{REACH_M[1]} m{guess}; HOT3D stores metres",
            hint="millimetre files: units='mm' (megohand convert --units mm); to keep the values as they are: "
                 "units='m' (--units m or --skip-unit-checks)")


def umetrack_camera_joints(profile, poses: list, T_cam_from_world: np.ndarray, side: str, where) -> np.ndarray | None:
    """UmeTrack poses -> MANO21 joints (T,21,3) in the camera frame [m], NaN rows where a pose (or the camera)
    is missing; None when no frame has one.

    poses: per frame ``(T_world_from_wrist (4,4) [m], joint_angles (>=20,))``, or None."""
    import torch

    from megohand.hand import umetrack

    ok = np.array([p is not None for p in poses]) & np.isfinite(T_cam_from_world).all(axis=(1, 2))
    if not ok.any():
        return None
    sel = [poses[i] for i in np.flatnonzero(ok)]
    try:
        W = torch.as_tensor(T_cam_from_world[ok]) @ umetrack.wrist_frame(np.stack([p[0] for p in sel]), side)
        J = umetrack.mano21_joints(profile, [list(p[1])[: umetrack.NUM_ANGLES] for p in sel], W).numpy()
    except (ValueError, TypeError, RuntimeError) as e:
        raise SourceError(f"{where}: bad UmeTrack {side} hand pose ({e})") from None
    out = np.full((len(poses), 21, 3), np.nan)
    out[ok] = J
    return out


def _stand_ins(joints: dict) -> tuple[str, ...]:
    """MANO21 points of UmeTrack-derived joints that are stand-ins, not landmarks (thumb1): the retargeting
    network reads them, the refinement does not fit them (:data:`megohand.hand.umetrack.UNOBSERVED`)."""
    if not joints:
        return ()
    from megohand.hand.umetrack import UNOBSERVED

    return UNOBSERVED


def match_frames(frame_ts, wanted, tol_ns: int, what: str) -> np.ndarray:
    """Index into ``frame_ts`` of the closest frame for each wanted time (same clock, ns).

    Raises SourceError naming the first wanted time without a frame within ``tol_ns``."""
    frame_ts = np.asarray(frame_ts, np.int64)
    wanted = np.asarray(wanted, np.int64)
    if not len(frame_ts):
        raise SourceError(f"{what}: no frames")
    order = np.argsort(frame_ts, kind="stable")
    srt = frame_ts[order]
    if len(srt) == 1:
        j = np.where(np.abs(wanted - srt[0]) <= tol_ns, 0, -1)
    else:
        j = _nearest(srt, wanted, tol_ns)
    if (j < 0).any():
        k = int(np.flatnonzero(j < 0)[0])
        raise SourceError(
            f"{what}: no frame within {tol_ns / 1e6:g} ms of annotation time {int(wanted[k])} ns (frame {k} of "
            f"{len(wanted)}, {int((j < 0).sum())} unmatched); the stream's frames span {int(srt[0])}..{int(srt[-1])} ns "
            f"on the annotation (TIME_CODE) clock")
    return order[j]


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
    refine_steps = 300  # the UmeTrack path (no MANO) reaches its box-IoU goal at 300, not 100 (docs/datasets.md)

    def __init__(self, root, units: str = "auto"):
        """units: "auto" (check that translations are metres; stop otherwise), "m" (no check) or "mm"."""
        super().__init__(root)
        if units not in ("auto", "m", "mm"):
            raise SourceError(f"hot3d: units must be 'auto', 'm' or 'mm', got {units!r}")
        self.units = units
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
    def open_recording(self, vrs: Path, headset: str):
        """The sequence's ``recording.vrs`` as an :class:`AriaRecording` or :class:`QuestRecording`."""
        return AriaRecording(vrs) if headset == "Aria" else QuestRecording(vrs)

    @staticmethod
    def headset(seq: Path) -> str:
        """"Aria" or "Quest3" (metadata.json, else which calibration file is present)."""
        meta = seq / "metadata.json"
        if meta.exists():
            name = str(read_json(meta).get("headset", ""))
            if name in ("Aria", "Quest3"):
                return name
        return "Aria" if (seq / "mps").is_dir() or not (seq / "camera_models.json").exists() else "Quest3"

    def camera_calibration(self, seq: Path, recording=None) -> dict:
        """{'stream', 'params' (15/16), 'T_device_camera' (4,4), 'width', 'height', 'source'} of the ego camera.

        Aria: the factory calibration of ``recording`` (an open :class:`AriaRecording`) when given, else
        the MPS online calibration; Quest 3: ``camera_models.json``."""
        if recording is not None and hasattr(recording, "calibration"):
            cal = recording.calibration(RGB_LABEL)
            return {"stream": RGB_STREAM, **cal, "source": f"factory calibration ({recording.path})"}
        aria = seq / "mps" / "slam" / "online_calibration.jsonl"
        quest = seq / "camera_models.json"
        if aria.exists():
            for line in read_jsonl(aria):
                for cam in line.get("CameraCalibrations", []):
                    if cam.get("Label") == RGB_LABEL:
                        T = cam["T_Device_Camera"]
                        q = [T["UnitQuaternion"][0], *T["UnitQuaternion"][1]]
                        return {
                            "stream": RGB_STREAM,
                            "params": np.asarray(cam["Projection"]["Params"], np.float64),
                            "T_device_camera": _pose_from_qt(q, T["Translation"]),
                            "width": 1408,
                            "height": 1408,
                            "source": f"MPS online calibration, first record ({aria}); no recording.vrs",
                        }
            raise SourceError(f"{aria}: no '{RGB_LABEL}' calibration found")
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
                        "source": f"factory calibration ({quest})",
                    }
            raise SourceError(f"{quest}: no stream {MONO_STREAM} camera")
        raise SourceError(f"missing camera calibration: {aria} (Aria) or {quest} (Quest 3)")

    def _frame_timestamps(self, seq: Path, stream: str, recording=None) -> np.ndarray:
        """Annotated timestamps of the camera stream [ns, TIME_CODE clock]; else every frame of the recording."""
        for path in (seq / "masks" / "mask_hand_pose_available.csv", seq / "box2d_hands.csv"):
            if path.exists():
                rows = _read_csv(path)
                ts = sorted({int(r["timestamp[ns]"]) for r in rows if r.get("stream_id") == stream})
                if ts:
                    return np.array(ts, np.int64)
        if recording is not None:
            return np.unique(recording.timestamps(stream))
        raise SourceError(f"{seq}: no frame timestamps for stream {stream} (masks/*.csv, box2d_hands.csv or recording.vrs)")

    def _load_sequence(self, task: str, seq: Path) -> NativeEpisode:
        vrs = seq / "recording.vrs"
        recording = self.open_recording(vrs, self.headset(seq)) if vrs.exists() else None
        cal = self.camera_calibration(seq, recording)
        ts = self._frame_timestamps(seq, cal["stream"], recording)
        T_len = len(ts)
        scale = 1e-3 if self.units == "mm" else 1.0
        hand_path = seq / "mano_hand_pose_trajectory.jsonl"
        by_ts = _poses_by_time(hand_path)
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
                    transl[i] = np.asarray(w["t_xyz"], np.float64) * scale
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
        traj = _object_poses_csv(traj_path, scale)
        if not traj:
            raise SourceError(f"{traj_path}: empty headset trajectory")
        dev = next(iter(traj.values()))
        dev_ts = np.array(sorted(dev), np.int64)
        idx = _nearest(dev_ts, ts, tol_ns=5_000_000)
        T_world_device = np.stack([dev[int(dev_ts[j])] if j >= 0 else np.full((4, 4), np.nan) for j in idx])
        if self.units == "auto":
            _check_metres(hands, T_world_device, hand_path, traj_path)
        T_cam_from_world = invert_se3(T_world_device @ cal["T_device_camera"])
        for h in hands.values():
            h.valid &= idx >= 0
        joints, profile_path = self._umetrack_joints(seq, ts, T_cam_from_world, scale)
        # objects + text
        objects, instruction, obj_name = [], "", None
        dyn = seq / "dynamic_objects.csv"
        if dyn.exists():
            tracks = {}
            for uid, poses in _object_poses_csv(dyn, scale).items():
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
        rgb = None
        if recording is not None:
            stream = cal["stream"]
            frame_idx = match_frames(recording.timestamps(stream), ts, FRAME_TOLERANCE_NS, f"{vrs} stream {stream}")

            def rgb():
                for k in frame_idx:
                    img = recording.image(stream, int(k))
                    img = img[..., 0] if img.ndim == 3 and img.shape[2] == 1 else img
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
            joints=joints,
            joint_order="mano",
            joints_unobserved=_stand_ins(joints),
            T_cam_from_world=T_cam_from_world,
            rgb=rgb,
            depth=None,
            depth_source="none",
            objects=self._object_tracks(objects),
            extra={
                "form": "sequence",
                "stream": cal["stream"],
                "timestamps_ns": ts.tolist(),
                "clock": "TIME_CODE (annotation clock)",
                "calibration": cal["source"],
                "fisheye624": fisheye.p16.tolist(),
                "images": "fisheye resampled to pinhole K (same f, c)",
                "manipulated_object": obj_name,
                "umetrack_profile": profile_path,
            },
        )

    def _umetrack_joints(self, seq: Path, ts: np.ndarray, T_cam_from_world: np.ndarray, scale: float = 1.0):
        """UmeTrack MANO21 joints per side, (T,21,3) camera frame [m], NaN where not annotated; and the
        profile's path. ({}, None) without the annotation or the wearer's hand profile."""
        traj = seq / "umetrack_hand_pose_trajectory.jsonl"
        prof = seq / "umetrack_hand_user_profile.json"
        if not (traj.exists() and prof.exists()):
            return {}, None
        from megohand.hand import umetrack

        try:
            profile = umetrack.UmeTrackProfile.from_json(prof)
        except ValueError as e:
            raise SourceError(str(e)) from None
        by_ts = _poses_by_time(traj)
        out = {}
        for key, side in SIDES.items():
            poses = []
            for t in ts:
                r = by_ts.get(int(t), {}).get(key)
                try:
                    ok = bool(r) and "wrist_xform" in r and "joint_angles" in r
                    w = r["wrist_xform"] if ok else None
                    poses.append((_pose_from_qt(w["q_wxyz"], np.asarray(w["t_xyz"], np.float64) * scale),
                                  r["joint_angles"]) if ok else None)
                except (KeyError, TypeError, ValueError) as e:
                    raise SourceError(f"{traj}: bad UmeTrack hand record at {t} ({e})") from None
            J = umetrack_camera_joints(profile, poses, T_cam_from_world, side, traj)
            if J is not None:
                out[side] = J
        return out, str(prof)

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
            data = read_tar_member(tar, members[name], tar_path)  # size-limited (a gzip tar can expand to anything)
            try:
                return json.loads(data)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise SourceError(f"{tar_path}: corrupt JSON in {name}: {e}") from None

        frames = sorted(int(n.split(".")[0]) for n in members if n.endswith(".cameras.json"))
        if not frames:
            raise SourceError(f"{tar_path}: no <frame>.cameras.json entries")
        stream = RGB_STREAM if f"{frames[0]:06d}.image_{RGB_STREAM}.jpg" in members else MONO_STREAM
        T_len = len(frames)
        shape = load_json("__hand_shapes.json__") if "__hand_shapes.json__" in members else None
        betas = np.asarray(shape["mano"], np.float64) if shape and "mano" in shape else None
        profile = None
        if shape and isinstance(shape.get("umetrack"), dict) and shape["umetrack"]:
            from megohand.hand import umetrack

            try:
                profile = umetrack.UmeTrackProfile.from_dict(shape["umetrack"], source=f"{tar_path}:__hand_shapes.json__")
            except ValueError as e:
                raise SourceError(str(e)) from None
        ume_poses = {"left": [None] * len(frames), "right": [None] * len(frames)}
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
            if hj in members and profile is not None:
                for side, h in load_json(hj).items():
                    up = (h or {}).get("umetrack_pose") if side in ume_poses else None
                    if not up:
                        continue
                    try:  # hand_tracking_toolkit reads T_world_from_wrist; the clips README names a 4x4 wrist_xform
                        if "T_world_from_wrist" in up:
                            Tw = up["T_world_from_wrist"]
                            W = _pose_from_qt(Tw["quaternion_wxyz"], Tw["translation_xyz"])
                        else:
                            W = np.asarray(up["wrist_xform"], np.float64).reshape(4, 4)
                        ume_poses[side][i] = (W, up["joint_angles"])
                    except (KeyError, TypeError, ValueError) as e:
                            raise SourceError(f"{tar_path}: bad umetrack_pose in {hj} ({e})") from None
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
        T_cam_from_world = invert_se3(T_world_cam)
        joints = {}
        for side, poses in ume_poses.items():
            J = umetrack_camera_joints(profile, poses, T_cam_from_world, side, tar_path) if profile else None
            if J is not None:
                joints[side] = J
        if not hands and not joints:
            raise SourceError(f"{tar_path}: no hand annotations (hands.json with mano_pose / umetrack_pose, "
                              "__hand_shapes.json__)")
        fisheye = FisheyeToPinhole(cal["projection_params"], int(cal["image_width"]), int(cal["image_height"]))
        moved = _most_moved(obj_poses)
        obj_name = self.names.get(f"bop:{int(moved)}", "object") if moved is not None and moved.isdigit() else None
        instruction = sentence(f"use the {obj_name}") if obj_name else "Use the object."

        def rgb():
            from PIL import Image

            with tarfile.open(tar_path) as t2:
                for f in frames:
                    name = f"{f:06d}.image_{stream}.jpg"
                    data = read_tar_member(t2, name, tar_path)
                    try:
                        img = np.array(Image.open(io.BytesIO(data)).convert("RGB"))
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
            joints=joints,
            joint_order="mano",
            joints_unobserved=_stand_ins(joints),
            T_cam_from_world=T_cam_from_world,
            rgb=rgb,
            depth=None,
            depth_source="none",
            objects=self._object_tracks([("bop", k, v) for k, v in obj_poses.items()]),
            extra={
                "form": "clip",
                "stream": stream,
                "umetrack_profile": f"{tar_path}:__hand_shapes.json__" if profile is not None else None,
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


class AriaRecording:
    """An Aria ``recording.vrs`` through projectaria-tools: frames on the TIME_CODE clock, factory calibration.

    ``provider`` (default: ``data_provider.create_vrs_data_provider(path)``) must offer
    ``get_timestamps_ns(stream_id, time_domain)``, ``get_image_data_by_index(stream_id, i)`` and
    ``get_device_calibration()``; ``stream_id`` makes its stream ids from "214-1" and ``time_code`` is its
    TIME_CODE domain (tests pass a stand-in for all three)."""

    def __init__(self, path, provider=None, stream_id=None, time_code=None):
        self.path = Path(path)
        if provider is None:
            try:
                from projectaria_tools.core import data_provider
                from projectaria_tools.core.sensor_data import TimeDomain
                from projectaria_tools.core.stream_id import StreamId
            except ImportError:
                raise SourceError(f"{path}: reading Aria VRS files needs the optional package projectaria-tools "
                                  "(pip install projectaria-tools)") from None
            provider = data_provider.create_vrs_data_provider(str(path))
            if provider is None:
                raise SourceError(f"cannot open {path}")
            stream_id, time_code = StreamId, TimeDomain.TIME_CODE
        self.provider, self._sid, self._time_code = provider, stream_id, time_code

    def timestamps(self, stream: str) -> np.ndarray:
        """(N,) int64 [ns] TIME_CODE timestamps of the stream's frames, in frame-index order."""
        return np.asarray(self.provider.get_timestamps_ns(self._sid(stream), self._time_code), np.int64)

    def image(self, stream: str, index: int) -> np.ndarray:
        data, _ = self.provider.get_image_data_by_index(self._sid(stream), int(index))
        return np.asarray(data.to_numpy_array())

    def calibration(self, label: str) -> dict:
        """{'params', 'T_device_camera' (4,4), 'width', 'height'} of camera ``label`` (factory calibration)."""
        calib = self.provider.get_device_calibration()
        cam = None if calib is None else calib.get_camera_calib(label)
        if cam is None:
            raise SourceError(f"{self.path}: no factory calibration for {label!r}")
        w, h = (int(v) for v in cam.get_image_size())
        return {
            "params": np.asarray(cam.projection_params(), np.float64),
            "T_device_camera": np.asarray(cam.get_transform_device_camera().to_matrix(), np.float64),
            "width": w,
            "height": h,
        }


class QuestRecording:
    """A Quest 3 ``recording.vrs`` through pyvrs: its record times are the annotation clock (HOT3D's
    ``QuestDataProvider``: ``int(record.timestamp * 1e9)``)."""

    def __init__(self, path, reader=None):
        self.path = Path(path)
        if reader is None:
            try:
                from pyvrs import ImageConversion, SyncVRSReader
            except ImportError:
                raise SourceError(f"{path}: reading Quest 3 VRS files needs the optional package pyvrs "
                                  "(pip install vrs)") from None
            reader = SyncVRSReader(str(path))
            reader.set_image_conversion(ImageConversion.NORMALIZE)  # as HOT3D's QuestDataProvider
            reader.set_stream_type_image_conversion(8010, ImageConversion.NORMALIZE_GREY8)
        self.reader = reader
        self._records: dict[str, object] = {}

    def _stream(self, stream: str):
        if stream not in self._records:
            self._records[stream] = self.reader.filtered_by_fields(stream_ids={stream}, record_types={"data"})
        return self._records[stream]

    def timestamps(self, stream: str) -> np.ndarray:
        return np.array([int(r.timestamp * 1e9) for r in self._stream(stream)], np.int64)

    def image(self, stream: str, index: int) -> np.ndarray:
        return np.asarray(self._stream(stream)[int(index)].image_blocks[0])


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

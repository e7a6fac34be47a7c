"""OakInk2 (Zhan et al., CVPR 2024): bimanual complex tasks, egocentric view 848x480 at 30 fps.

Hands (``anno_preview/<token>.pkl`` ``raw_mano[frame]``): manotorch ``ManoLayer(rot_mode="quat",
use_pca=False, flat_hand_mean=True, center_idx=0)``: 16 quaternions **wxyz** (row 0 = global
orient), ``tsl`` = posed **wrist position** (world, m) -> smplx ``transl = tsl - J0(betas)``.
Camera: per-frame ``cam_extr["egocentric"][frame]`` world->camera and ``cam_intr``; images are in
the folder of the camera *serial* (``cam_def`` maps serial -> name). Text: the task goal
(``program/task_target.json``) for the episode, free-text ``seg_desc`` per primitive segment.
"""

from __future__ import annotations

import ast
import warnings

import numpy as np

from .common import (
    Convention,
    NativeEpisode,
    ObjectTrack,
    RawHand,
    Source,
    SourceError,
    R_to_aa,
    quat_wxyz_to_R,
    read_image,
    read_json,
    read_pickle,
    sentence,
)

CONVENTION = Convention(flat_hand_mean=True, transl="wrist", frame="world")
CAMERA = "egocentric"
LAYOUT = """OakInk2:  SRC/anno_preview/<scene_XX__YYYY++seq__<hash>__<date>>.pkl (cam_def, frame_id_list, cam_intr,
      cam_extr, raw_mano, obj_list, obj_transf); SRC/data/<token>/<egocentric camera serial>/<frame_id:06d>.png|jpg
      (the unpacked data/<token>.tar); SRC/program/{task_target.json, program_info/<token>.json,
      desc_info/<token>.json}; optional SRC/object_{raw,preview}/align_ds/<obj_id>/*.obj|ply (virtual depth),
      SRC/split/{train,val,test}.txt (OakInk2-TaMF split, one sequence key per line).
      Task id = scene_04__A008/seq__ff070467cd91f735acab__2023-04-23-11-28-29."""


def _frame_range(key) -> tuple[int, int] | None:
    """'((lh_beg, lh_end), (rh_beg, rh_end))' (either may be None) -> enclosing (beg, end) mocap ids."""
    pair = ast.literal_eval(key) if isinstance(key, str) else key
    ranges = [r for r in pair if r is not None]
    if not ranges:
        return None
    return min(r[0] for r in ranges), max(r[1] for r in ranges)


class OakInk2Source(Source):
    name = "oakink2"
    layout = LAYOUT

    def tasks(self) -> list[str]:
        return sorted(p.stem.replace("++", "/") for p in (self.root / "anno_preview").glob("*.pkl"))

    def _split(self, key: str) -> str:
        for split in ("train", "val", "test"):
            path = self.root / "split" / f"{split}.txt"
            if path.exists() and key in {line.strip() for line in path.read_text().splitlines()}:
                return split
        return "train"

    def load(self, task: str) -> NativeEpisode:
        token = task.replace("/", "++")
        anno_path = self.root / "anno_preview" / f"{token}.pkl"
        if not anno_path.exists():
            raise SourceError(f"oakink2: unknown task id {task!r} (no {anno_path})")
        anno = read_pickle(anno_path)
        try:
            cam_def = anno["cam_def"]
            fids = [int(f) for f in anno["frame_id_list"]]
            intr, extr, raw = anno["cam_intr"][CAMERA], anno["cam_extr"][CAMERA], anno["raw_mano"]
        except (KeyError, TypeError) as e:
            raise SourceError(f"{anno_path}: missing annotation field {e}") from None
        serial = {v: k for k, v in cam_def.items()}.get(CAMERA)
        if serial is None:
            raise SourceError(f"{anno_path}: cam_def has no '{CAMERA}' camera")
        T = len(fids)
        try:
            K = np.asarray(intr[fids[0]], np.float64).reshape(3, 3)
            T_cw = np.stack([np.asarray(extr[f], np.float64).reshape(4, 4) for f in fids])
        except KeyError as e:
            raise SourceError(f"{anno_path}: no egocentric camera for frame {e}") from None
        hands = {}
        for prefix, side in (("lh", "left"), ("rh", "right")):
            go, pose, transl, betas = np.zeros((T, 3)), np.zeros((T, 45)), np.zeros((T, 3)), np.zeros((T, 10))
            valid = np.zeros(T, bool)
            for k, f in enumerate(fids):
                rec = raw.get(f)
                if rec is None or f"{prefix}__pose_coeffs" not in rec:
                    continue
                try:
                    q = np.asarray(rec[f"{prefix}__pose_coeffs"], np.float64).reshape(16, 4)
                    aa = R_to_aa(quat_wxyz_to_R(q))
                    go[k], pose[k] = aa[0], aa[1:].reshape(45)
                    transl[k] = np.asarray(rec[f"{prefix}__tsl"], np.float64).reshape(3)
                    betas[k] = np.asarray(rec[f"{prefix}__betas"], np.float64).reshape(10)
                except (KeyError, ValueError) as e:
                    raise SourceError(f"{anno_path}: bad raw_mano record at frame {f} ({e})") from None
                valid[k] = True
            if valid.any():
                hands[side] = RawHand(go, pose, betas, transl, valid)
        if not hands:
            raise SourceError(f"{anno_path}: no MANO hands at the image frames")
        # text
        prog = self.root / "program"
        targets = read_json(prog / "task_target.json") if (prog / "task_target.json").exists() else {}
        segments = []
        desc_path = prog / "desc_info" / f"{token}.json"
        if desc_path.exists():
            fid_arr = np.asarray(fids)
            for key, val in read_json(desc_path).items():
                rng = _frame_range(key)
                text = val.get("seg_desc") if isinstance(val, dict) else None
                if rng is None or not text:
                    continue
                inside = np.flatnonzero((fid_arr >= rng[0]) & (fid_arr <= rng[1]))
                if len(inside):
                    segments.append((int(inside[0]), int(inside[-1]) + 1, sentence(text)))
            segments.sort()
        goal = targets.get(task)
        instruction = sentence(goal) if goal else (segments[0][2] if segments else "")
        # frames
        img_dir = self.root / "data" / token / str(serial)

        def frame_path(f):
            for ext in ("png", "jpg"):
                p = img_dir / f"{f:06d}.{ext}"
                if p.exists():
                    return p
            raise SourceError(f"missing image {img_dir / f'{f:06d}.png'} (or .jpg)")

        paths = [frame_path(f) for f in fids]
        H, W = read_image(paths[0]).shape[:2]
        return NativeEpisode(
            dataset=self.name,
            episode=task,
            instruction=instruction,
            fps=30.0,
            width=W,
            height=H,
            K=K,
            split=self._split(task),
            num_frames=T,
            convention=CONVENTION,
            hands=hands,
            segments=segments,
            T_cam_from_world=T_cw,
            rgb=lambda: (read_image(p) for p in paths),
            objects=self._objects(anno, fids, anno_path),
            extra={"frame_ids": fids, "camera_serial": str(serial)},
        )

    def _objects(self, anno, fids, anno_path) -> list[ObjectTrack]:
        """Object meshes (metres) from object_raw/ or object_preview/ (the toolkit's newer name) align_ds/."""
        bases = [self.root / d / "align_ds" for d in ("object_raw", "object_preview")]
        bases = [b for b in bases if b.is_dir()]
        out = []
        for obj in anno.get("obj_list", []):
            files = [p for base in bases for p in sorted((base / str(obj)).glob("*")) if p.suffix in (".obj", ".ply")]
            if not files:
                continue
            poses = anno.get("obj_transf", {}).get(obj)
            if poses is None:
                raise SourceError(f"{anno_path}: obj_transf has no poses for object {obj!r}")
            try:
                import trimesh

                mesh = trimesh.load(str(files[0]), process=False, force="mesh")
            except ImportError:
                warnings.warn(f"{anno_path.name}: object meshes need the optional package trimesh; virtual depth "
                              "shows hands only", stacklevel=2)
                return []
            except Exception as e:  # noqa: BLE001
                raise SourceError(f"cannot read mesh {files[0]}: {e}") from None
            T = np.stack([np.asarray(poses[f], np.float64).reshape(4, 4) if f in poses else np.full((4, 4), np.nan) for f in fids])
            out.append(ObjectTrack(str(obj), np.asarray(mesh.vertices, np.float32), np.asarray(mesh.faces, np.int64), T))
        return out


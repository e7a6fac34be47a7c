"""TACO (Liu et al., CVPR 2024): bimanual tool-action-object sequences, egocentric RGB-D.

Hands: manopth ``ManoLayer(use_pca=False, center_idx=0)`` (flat mean), per frame ``hand_pose`` (48)
and ``hand_trans`` (= the posed **wrist position**, world, m) -> smplx ``transl = hand_trans - J0``.
Camera: per-frame world->camera extrinsics, constant K. Depth: 16-bit, scale 4000 (0.25 mm).
Text: the triplet ``(action, tool, target)`` -> "{Action} the {target} with the {tool}."
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .common import (
    Convention,
    NativeEpisode,
    RawHand,
    Source,
    SourceError,
    check_count,
    iter_video,
    read_numbers,
    read_npy,
    read_pickle,
    require,
    sentence,
    video_frame_count,
)

CONVENTION = Convention(flat_hand_mean=True, transl="wrist", frame="world")
DEPTH_SCALE = 4000.0  # uint16 units per metre
LAYOUT = """TACO:  SRC/Egocentric_RGB_Videos/<(action, tool, target)>/<YYYYMMDD_NNN>/color.mp4
      SRC/Egocentric_Depth_Videos/<triplet>/<seq>/egocentric_depth.avi (16-bit, 0.25 mm; optional)
      SRC/Egocentric_Camera_Parameters/<triplet>/<seq>/{egocentric_intrinsic.txt, egocentric_frame_extrinsic.npy}
      SRC/Hand_Poses/<triplet>/<seq>/{left,right}_hand.pkl, {left,right}_hand_shape.pkl
      optional SRC/data_lists/v1_overall_data_train_test_split.txt (train, test_1..4 -> test).
      Task id = (dust, roller, pan)/20230927_032."""


def triplet_instruction(triplet: str) -> str:
    """'(dust, roller, pan)' -> 'Dust the pan with the roller.'"""
    parts = [p.strip() for p in triplet.strip().strip("()").split(",")]
    if len(parts) != 3 or not all(parts):
        raise SourceError(f"TACO: triplet folder name {triplet!r} is not '(action, tool, target)'")
    action, tool, target = parts
    return sentence(f"{action} the {target} with the {tool}")


class TACOSource(Source):
    name = "taco"
    layout = LAYOUT

    def tasks(self) -> list[str]:
        hp = self.root / "Hand_Poses"
        return sorted(f"{p.parent.name}/{p.name}" for p in hp.glob("*/*") if p.is_dir())

    def _splits(self) -> dict[str, str]:
        path = self.root / "data_lists" / "v1_overall_data_train_test_split.txt"
        out = {}
        if path.exists():
            for line in path.read_text().splitlines():
                if "," in line:
                    seq, split = (x.strip() for x in line.split(",", 1))
                    out[seq] = "train" if split == "train" else "test"
        return out

    def _hand(self, folder: Path, side: str, T_expected: int | None):
        path = folder / f"{side}_hand.pkl"
        if not path.exists():
            return None
        data = read_pickle(path)
        if not isinstance(data, dict) or not data:
            raise SourceError(f"{path}: expected a non-empty dict frame -> {{hand_pose, hand_trans}}")
        keys = sorted(data)
        try:
            pose = np.stack([np.asarray(data[k]["hand_pose"], np.float64).reshape(48) for k in keys])
            trans = np.stack([np.asarray(data[k]["hand_trans"], np.float64).reshape(3) for k in keys])
        except (KeyError, TypeError, ValueError) as e:
            raise SourceError(f"{path}: bad frame record ({type(e).__name__}: {e})") from None
        shape_path = folder / f"{side}_hand_shape.pkl"
        betas = np.zeros(10)
        if shape_path.exists():
            sd = read_pickle(shape_path)
            try:
                betas = np.asarray(sd["hand_shape"], np.float64).reshape(10)
            except (KeyError, TypeError, ValueError) as e:
                raise SourceError(f"{shape_path}: bad 'hand_shape' ({e})") from None
            if not np.isfinite(betas).all():
                raise SourceError(f"{shape_path}: 'hand_shape' holds NaN/inf ({betas.tolist()}); expected 10 finite numbers")
        T = len(keys)
        if T_expected is not None:
            check_count(path, T, T_expected, "hand frames")
        return RawHand(pose[:, :3], pose[:, 3:], np.tile(betas, (T, 1)), trans, np.ones(T, bool))

    def load(self, task: str) -> NativeEpisode:
        if task.count("/") != 1:
            raise SourceError(f"taco: task id must be '<triplet>/<sequence>', got {task!r}")
        hand_dir = self.root / "Hand_Poses" / task
        if not hand_dir.is_dir():
            raise SourceError(f"taco: unknown task id {task!r} (no folder {hand_dir})")
        triplet, seq = task.split("/")
        cam_dir = self.root / "Egocentric_Camera_Parameters" / task
        extr_path = cam_dir / "egocentric_frame_extrinsic.npy"
        T_cw = read_npy(extr_path).astype(np.float64)
        if T_cw.ndim != 3 or T_cw.shape[1:] != (4, 4):
            raise SourceError(f"{extr_path}: expected (N,4,4) world->camera, got {T_cw.shape}")
        T = len(T_cw)
        K = read_numbers(cam_dir / "egocentric_intrinsic.txt", 9).reshape(3, 3)
        hands = {s: h for s in ("left", "right") if (h := self._hand(hand_dir, s, T)) is not None}
        if not hands:
            raise SourceError(f"{hand_dir}: no left_hand.pkl / right_hand.pkl")
        video = require(self.root / "Egocentric_RGB_Videos" / task / "color.mp4", "egocentric RGB video")
        check_count(video, video_frame_count(video), T, "video frames")
        depth_video = self.root / "Egocentric_Depth_Videos" / task / "egocentric_depth.avi"
        first = next(iter_video(video))
        H, W = first.shape[:2]
        depth = None
        if depth_video.exists():
            check_count(depth_video, video_frame_count(depth_video), T, "depth frames")

            def depth():
                for d in iter_video(depth_video, "gray16le"):
                    yield d.astype(np.float32) / DEPTH_SCALE

        return NativeEpisode(
            dataset=self.name,
            episode=task,
            instruction=triplet_instruction(triplet),
            fps=30.0,
            width=W,
            height=H,
            K=K,
            split=self._splits().get(seq, "train"),
            num_frames=T,
            convention=CONVENTION,
            hands=hands,
            T_cam_from_world=T_cw,
            rgb=lambda: iter_video(video),
            depth=depth,
            depth_source="sensor" if depth else "none",
            extra={"triplet": triplet},
        )

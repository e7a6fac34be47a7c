"""H2O (Kwon et al., ICCV 2021): two hands manipulating objects, egocentric cam4 RGB-D 1280x720.

Hands (``hand_pose_MANO/<frame:06d>.txt``, 124 numbers): per hand (left first) ``valid, transl(3),
pose(48), betas(10)`` in the **camera frame** of cam4; manopth ``use_pca=False, flat_hand_mean=True``,
``verts/1000 + trans`` on the un-centred output = smplx ``transl`` -> already canonical.
Camera: ``cam_intrinsics.txt`` (fx fy cx cy w h), ``cam_pose`` camera->world (inverted for storage).
Depth: 16-bit PNG, millimetres (treated as registered to the RGB camera).
Text: per-frame ``action_label`` ids -> "{Verb} the {noun}." segments.
"""

from __future__ import annotations

import numpy as np

from .common import (
    Convention,
    NativeEpisode,
    RawHand,
    Source,
    SourceError,
    invert_se3,
    read_image,
    read_numbers,
    sentence,
)

CONVENTION = Convention(flat_hand_mean=True, transl="smplx", frame="camera")
NOUNS = ["book", "espresso", "lotion", "spray", "milk", "cocoa", "chips", "cappuccino"]
ACTIONS = (
    [("grab", n) for n in NOUNS]
    + [("place", n) for n in NOUNS]
    + [("open", "lotion"), ("open", "milk"), ("open", "chips"), ("close", "lotion"), ("close", "milk"), ("close", "chips"),
       ("pour", "milk"), ("take out", "espresso"), ("take out", "cocoa"), ("take out", "chips"), ("take out", "cappuccino"),
       ("put in", "espresso"), ("put in", "cocoa"), ("put in", "cappuccino"), ("apply", "lotion"), ("apply", "spray"),
       ("read", "book"), ("read", "espresso"), ("spray", "spray"), ("squeeze", "lotion")]
)  # action id i (1..36) -> ACTIONS[i - 1], as listed in the H2O README
VAL = {"subject3/k2", "subject3/o1", "subject3/o2"}
TRAIN = {"subject1", "subject2", "subject3/h1", "subject3/h2", "subject3/k1"}
LAYOUT = """H2O:  SRC/subject<N>/<scene>/<seq>/cam4/{rgb/<frame:06d>.png, depth/<frame:06d>.png (uint16 mm),
      cam_pose/<frame:06d>.txt (camera->world 4x4), hand_pose_MANO/<frame:06d>.txt (124 numbers),
      action_label/<frame:06d>.txt (optional), cam_intrinsics.txt (fx fy cx cy w h)}.
      Task id = subject1/o1/7/cam4."""


def action_text(action_id: int) -> str:
    verb, noun = ACTIONS[action_id - 1]
    return sentence(f"{verb} the {noun}")


def label_segments(labels: np.ndarray) -> list[tuple[int, int, str]]:
    """Per-frame action ids -> [(start, end_exclusive, text)] for runs of the same non-zero id."""
    out, start = [], 0
    for k in range(1, len(labels) + 1):
        if k == len(labels) or labels[k] != labels[start]:
            if 1 <= labels[start] <= len(ACTIONS):
                out.append((start, k, action_text(int(labels[start]))))
            start = k
    return out


def official_split(task: str) -> str:
    subject, scene = task.split("/")[:2]
    if f"{subject}/{scene}" in VAL:
        return "val"
    if subject in TRAIN or f"{subject}/{scene}" in TRAIN:
        return "train"
    return "test"


class H2OSource(Source):
    name = "h2o"
    layout = LAYOUT

    def tasks(self) -> list[str]:
        return sorted(str(p.relative_to(self.root)) for p in self.root.glob("subject*/*/*/cam4") if (p / "rgb").is_dir())

    def load(self, task: str) -> NativeEpisode:
        cam = self.root / task
        if not task.endswith("/cam4") or not (cam / "rgb").is_dir():
            raise SourceError(f"h2o: unknown task id {task!r} (no {cam / 'rgb'})")
        # the frame list comes from the annotations; a frame missing anywhere else is an error naming it
        frames = sorted(p.stem for p in (cam / "hand_pose_MANO").glob("*.txt"))
        T = len(frames)
        if T == 0:
            raise SourceError(f"{cam / 'hand_pose_MANO'}: no annotated frames (<frame:06d>.txt)")
        try:
            numbers = [int(f) for f in frames]
        except ValueError:
            raise SourceError(f"{cam / 'hand_pose_MANO'}: file names must be frame numbers, got {frames[:3]}") from None
        gaps = sorted(set(range(numbers[0], numbers[-1] + 1)) - set(numbers))
        if gaps:
            raise SourceError(f"missing {cam / 'hand_pose_MANO' / f'{gaps[0]:06d}.txt'} ({len(gaps)} frame(s) between "
                              f"{frames[0]} and {frames[-1]} lack an annotation)")
        extra = sorted({p.stem for p in (cam / "rgb").glob("*.png")} - set(frames))
        if extra:
            raise SourceError(f"missing {cam / 'hand_pose_MANO' / (extra[0] + '.txt')} (rgb/{extra[0]}.png has no "
                              f"annotation; {len(extra)} images lack one)")
        for sub, ext in (("rgb", "png"), ("cam_pose", "txt")):
            missing = [f for f in frames if not (cam / sub / f"{f}.{ext}").exists()]
            if missing:
                raise SourceError(f"missing {cam / sub / f'{missing[0]}.{ext}'} ({len(missing)} of {T} annotated "
                                  f"frames lack {sub})")
        mano = np.stack([read_numbers(cam / "hand_pose_MANO" / f"{f}.txt", 124) for f in frames])
        hands = {}
        for side, off in (("left", 0), ("right", 62)):
            v = mano[:, off : off + 62]
            valid = v[:, 0] > 0.5
            if valid.any():
                hands[side] = RawHand(v[:, 4:7], v[:, 7:52], v[:, 52:62], v[:, 1:4], valid)
        T_wc = np.stack([read_numbers(cam / "cam_pose" / f"{f}.txt", 16).reshape(4, 4) for f in frames])
        intr = read_numbers(cam / "cam_intrinsics.txt", 6)
        K = np.array([[intr[0], 0, intr[2]], [0, intr[1], intr[3]], [0, 0, 1.0]])
        labels = np.zeros(T, int)
        if (cam / "action_label").is_dir():
            labels = np.array([int(read_numbers(cam / "action_label" / f"{f}.txt", 1)[0]) for f in frames])
        segments = label_segments(labels)
        ids, counts = np.unique(labels[labels > 0], return_counts=True)
        instruction = action_text(int(ids[np.argmax(counts)])) if len(ids) else ""
        rgb_paths = [cam / "rgb" / f"{f}.png" for f in frames]
        depth_paths = [cam / "depth" / f"{f}.png" for f in frames]
        has_depth = (cam / "depth").is_dir()
        if has_depth:
            missing = [p for p in depth_paths if not p.exists()]
            if missing:
                raise SourceError(f"missing depth frame {missing[0]} ({len(missing)} of {T})")

        def depth():
            for p in depth_paths:
                yield read_image(p, mode=None).astype(np.float32) / 1000.0

        return NativeEpisode(
            dataset=self.name,
            episode=task,
            instruction=instruction,
            fps=30.0,
            width=int(intr[4]),
            height=int(intr[5]),
            K=K,
            split=official_split(task),
            num_frames=T,
            convention=CONVENTION,
            hands=hands,
            segments=segments,
            T_cam_from_world=invert_se3(T_wc),
            rgb=lambda: (read_image(p) for p in rgb_paths),
            depth=depth if has_depth else None,
            depth_source="sensor" if has_depth else "none",
            extra={"frames": [int(f) for f in frames]},
        )


"""HOI4D (Liu et al., CVPR 2022): category-level human-object interaction, helmet RGB-D 1920x1080.

Hands (``handpose/refinehandpose_{right,left}/<seq>/<frame>.pickle``): ``poseCoeff`` (48),
``beta`` (10), ``trans`` (3) in the **camera frame**; manopth ``use_pca=False, flat_hand_mean=True``,
``joints/1000 + trans`` on the un-centred output = smplx ``transl``: already canonical.
Camera: one K per camera id (``camera_params/<ZY...>/intrin.npy``); hands and depth are camera-frame,
so no world transform is stored. Depth: registered uint16 mm. Mostly 15 fps (fps = frames / duration).
Text: task id -> ``definitions/task/task_definitions.csv`` sentence + category ("Pick and place a toy
car."); ``action/color.json`` events -> per-segment "{Event} the {category}.".
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from .common import (
    Convention,
    NativeEpisode,
    RawHand,
    Source,
    SourceError,
    iter_video,
    numbered_frames,
    read_image,
    read_json,
    read_npy,
    read_pickle,
    require,
    sentence,
    video_frame_count,
)

CONVENTION = Convention(flat_hand_mean=True, transl="smplx", frame="camera")
KEY = re.compile(r"^ZY\d+/H\d+/C\d+/N\d+/S\d+/s\d+/T\d+$")
LAYOUT = """HOI4D:  SRC/ZY2021080000<c>/H<h>/C<c>/N<n>/S<s>/s<l>/T<t>/align_rgb/image.mp4 (or decoded <frame:05d>.jpg),
      .../align_depth/depth_video.avi (16-bit mm; or decoded <frame:05d>.png), optional .../action/color.json;
      SRC/camera_params/ZY2021080000<c>/intrin.npy; SRC/handpose/refinehandpose_{right,left}/<key>/<frame>.pickle;
      optional SRC/definitions/task/task_definitions.csv (or SRC/task_definitions.csv), SRC/release.txt, SRC/testset.txt.
      Task id = ZY20210800001/H1/C1/N19/S100/s02/T1."""


def task_sentence(task_text: str, category: str) -> str:
    """Task definition + category -> instruction. 'it' becomes the object ('Put it in the drawer' ->
    'Put the toy car in the drawer.'); a bare verb phrase gets the object ('Pick and place' -> 'Pick and
    place a toy car.', before any parenthesis); texts that already name an object stay as they are."""
    cat = category.strip().lower()
    text = task_text.strip()
    if re.search(r"\bit\b", text):
        return sentence(re.sub(r"\bit\b", f"the {cat}", text, count=1))
    words = set(re.findall(r"[a-z]+", text.lower()))
    if not cat or words & {"a", "an", "the", "something", "another"} or cat.split()[-1] in words:
        return sentence(text)
    head, paren, tail = text.partition("(")
    return sentence(f"{head.strip()} a {cat}" + (f" ({tail}" if paren else ""))


class HOI4DSource(Source):
    name = "hoi4d"
    layout = LAYOUT

    def __init__(self, root):
        super().__init__(root)
        self._defs = None

    def tasks(self) -> list[str]:
        out = []
        for p in self.root.glob("ZY*/H*/C*/N*/S*/s*/T*"):
            if (p / "align_rgb").is_dir():
                out.append(str(p.relative_to(self.root)))
        return sorted(out)

    def _definitions(self) -> dict[str, tuple[str, dict[str, str]]]:
        if self._defs is None:
            self._defs = {}
            for path in (self.root / "definitions" / "task" / "task_definitions.csv", self.root / "task_definitions.csv"):
                if path.exists():
                    with open(path, newline="") as f:
                        for row in csv.DictReader(f):
                            cid = row.get("Category ID", "").strip()
                            tasks = {k: v for k, v in row.items() if k and k.startswith("T") and v and v != "N/A"}
                            self._defs[cid] = (row.get("Category", "").strip(), tasks)
                    break
        return self._defs

    def _split(self, key: str) -> str:
        for name, split in (("testset.txt", "test"), ("release.txt", "train")):
            path = self.root / name
            if path.exists() and key in {line.strip() for line in path.read_text().splitlines()}:
                return split
        return "train"

    def _hand(self, key: str, side: str, T: int):
        folder = self.root / "handpose" / f"refinehandpose_{side}" / key
        if not folder.is_dir():
            return None
        go, pose, betas, transl = np.zeros((T, 3)), np.zeros((T, 45)), np.zeros((T, 10)), np.zeros((T, 3))
        valid = np.zeros(T, bool)
        for p in folder.glob("*.pickle"):
            if not p.stem.isdigit():
                continue
            k = int(p.stem)
            if k >= T:
                raise SourceError(f"{p}: frame {k} beyond the video's {T} frames")
            d = read_pickle(p)
            try:
                pc = np.asarray(d["poseCoeff"], np.float64).reshape(48)
                betas[k] = np.asarray(d["beta"], np.float64).reshape(10)
                transl[k] = np.asarray(d["trans"], np.float64).reshape(3)
            except (KeyError, TypeError, ValueError) as e:
                raise SourceError(f"{p}: bad hand record ({type(e).__name__}: {e})") from None
            go[k], pose[k], valid[k] = pc[:3], pc[3:], True
        if not valid.any():
            return None
        betas[~valid] = betas[valid][0]
        return RawHand(go, pose, betas, transl, valid)

    def load(self, task: str) -> NativeEpisode:
        seq = self.root / task
        if not KEY.match(task) or not (seq / "align_rgb").is_dir():
            raise SourceError(f"hoi4d: unknown task id {task!r} (no {seq / 'align_rgb'})")
        rgb_dir, depth_dir = seq / "align_rgb", seq / "align_depth"
        jpgs = numbered_frames(rgb_dir, "jpg", digits=5)
        video = rgb_dir / "image.mp4"
        if jpgs:
            T, fps = len(jpgs), 15.0
            first = read_image(jpgs[0])
            rgb = lambda: (read_image(p) for p in jpgs)  # noqa: E731
        else:
            T = video_frame_count(require(video, "HOI4D RGB video (or decoded frames)"))
            fps = _video_fps(video) or 15.0
            first = next(iter_video(video))
            rgb = lambda: iter_video(video)  # noqa: E731
        H, W = first.shape[:2]
        cam_id = task.split("/")[0]
        K = read_npy(self.root / "camera_params" / cam_id / "intrin.npy").astype(np.float64).reshape(3, 3)
        hands = {s: h for s in ("right", "left") if (h := self._hand(task, s, T)) is not None}
        if not hands:
            raise SourceError(f"hoi4d {task}: no hand pickles under {self.root / 'handpose' / 'refinehandpose_right' / task}")
        # depth
        pngs = numbered_frames(depth_dir, "png", digits=5)
        depth_video = depth_dir / "depth_video.avi"
        depth = None
        if pngs:
            if len(pngs) != T:
                raise SourceError(f"{depth_dir}: {len(pngs)} depth frames, but the video has {T} frames")
            depth = lambda: (read_image(p, mode=None).astype(np.float32) / 1000.0 for p in pngs)  # noqa: E731
        elif depth_video.exists():
            n = video_frame_count(depth_video)
            if n != T:
                raise SourceError(f"{depth_video}: {n} depth frames, but the video has {T} frames")
            depth = lambda: (d.astype(np.float32) / 1000.0 for d in iter_video(depth_video, "gray16le"))  # noqa: E731
        # text
        parts = task.split("/")
        category, tasks = self._definitions().get(parts[2], ("", {}))
        task_text = tasks.get(parts[6])
        instruction = task_sentence(task_text, category) if task_text else sentence(f"interact with the {category.lower() or 'object'}")
        segments = []
        action = seq / "action" / "color.json"
        if action.exists():
            segments = _events(read_json(action), action, fps, T, category.lower() or "object")
        return NativeEpisode(
            dataset=self.name,
            episode=task,
            instruction=instruction,
            fps=fps,
            width=W,
            height=H,
            K=K,
            split=self._split(task),
            num_frames=T,
            convention=CONVENTION,
            hands=hands,
            segments=segments,
            T_cam_from_world=None,
            rgb=rgb,
            depth=depth,
            depth_source="sensor" if depth else "none",
            extra={"category": category, "task_text": task_text, "fps_flag": "15 fps source" if fps < 20 else ""},
        )


def _video_fps(path: Path) -> float | None:
    import av

    try:
        with av.open(str(path)) as c:
            rate = c.streams.video[0].average_rate
            return float(rate) if rate else None
    except Exception:  # noqa: BLE001
        return None


def _events(data, path: Path, fps: float, T: int, obj: str) -> list[tuple[int, int, str]]:
    """action/color.json events (``events`` or older ``markResult.marks``) -> frame segments."""
    events = data.get("events") if isinstance(data, dict) else None
    if events is None and isinstance(data, dict):
        events = (data.get("markResult") or {}).get("marks")
    if not isinstance(events, list):
        raise SourceError(f"{path}: no 'events' list")
    out = []
    for ev in events:
        try:
            name = ev.get("event") or ev.get("label")
            start = float(ev.get("startTime", ev.get("hdTimeStart")))
            end = float(ev.get("endTime", ev.get("hdTimeEnd")))
        except (TypeError, ValueError, AttributeError):
            raise SourceError(f"{path}: bad event {ev!r}") from None
        s, e = max(0, int(round(start * fps))), min(T, int(round(end * fps)))
        if name and e > s:
            out.append((s, e, sentence(f"{name} the {obj}")))
    return out

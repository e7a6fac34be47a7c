"""ARCTIC (Fan et al., CVPR 2023): bimanual articulated-object manipulation, egocentric view 0.

Hands (``raw_seqs/sXX/<seq>.mano.npy``, a pickled dict read through the restricted unpickler):
``rot`` (T,3), ``pose`` (T,45), ``trans`` (T,3), ``shape`` (10,) per side, **world**, smplx
``MANO(use_pca=False, flat_hand_mean=False)`` -> ``pose + hands_mean``. Camera
(``<seq>.egocam.dist.npy``): ``R_k_cam_np``/``T_k_cam_np`` world->ego per frame, ``intrinsics``,
``dist8``. View-0 images are **distorted**; they are resampled to the undistorted pinhole camera
with the same K (OpenCV 8-coefficient model), where ARCTIC's own 2D/3D ground truth lives.
Image index = frame + ``meta/misc.json[sid]["ioi_offset"]``. Objects (virtual depth):
``<seq>.object.npy`` = [articulation rad, axis-angle, translation mm]; mesh (mm) from
``meta/object_vtemplates/<obj>/{mesh.obj, parts.json}``, top part rotated about -z by the angle.
Text: Text2HOI ``description/sXX/<seq>/description.txt`` segments when present, else
"Use the {object}." / "Grab the {object}." from the sequence name.
"""

from __future__ import annotations

import re

import numpy as np

from .common import (
    Convention,
    NativeEpisode,
    ObjectTrack,
    RawHand,
    Source,
    SourceError,
    aa_to_R,
    read_image,
    read_json,
    read_npy,
    read_npy_object,
    require,
    se3,
    sentence,
)
from .distortion import opencv8_distort, remap_bilinear, undistort_map

CONVENTION = Convention(flat_hand_mean=False, transl="smplx", frame="world")
OBJECT_NAMES = {"capsulemachine": "capsule machine", "espressomachine": "espresso machine", "waffleiron": "waffle iron"}
EGO_VIEW = "0"
LAYOUT = """ARCTIC:  SRC/raw_seqs/s<NN>/<object>_<grab|use>_<nn>.{mano,egocam.dist,object}.npy;
      SRC/images/s<NN>/<seq>/0/<frame + ioi_offset:05d>.jpg (egocentric view 0, distorted);
      SRC/meta/misc.json (per-subject ioi_offset); optional SRC/meta/object_vtemplates/<object>/{mesh.obj,parts.json}
      (virtual depth), SRC/splits_json/protocol_p2.json (else every episode is 'test': zero-shot),
      SRC/description/s<NN>/<seq>/description.txt (Text2HOI text). Task id = s01/box_use_02."""


def object_name(seq: str) -> str:
    obj = seq.split("_")[0]
    return OBJECT_NAMES.get(obj, obj)


def default_instruction(seq: str) -> str:
    verb = "grab" if seq.split("_")[1:2] == ["grab"] else "use"
    return sentence(f"{verb} the {object_name(seq)}")


def read_descriptions(path, seq: str, T: int) -> list[tuple[int, int, str]]:
    """Text2HOI description.txt lines '<start>-<end> <verb>, <hand> ...' -> segments (end exclusive)."""
    out = []
    for line in path.read_text().splitlines():
        m = re.match(r"\s*(\d+)\s*-\s*(\d+)\s+([^,]+)", line)
        if not m:
            if line.strip():
                raise SourceError(f"{path}: cannot parse line {line!r} (expected '<start>-<end> <verb>, ...')")
            continue
        s, e, verb = int(m.group(1)), min(int(m.group(2)) + 1, T), m.group(3).strip()
        if e > s:
            out.append((s, e, sentence(f"{verb} the {object_name(seq)}")))
    return out


class ArcticSource(Source):
    name = "arctic"
    layout = LAYOUT

    def tasks(self) -> list[str]:
        return sorted(f"{p.parent.name}/{p.name[: -len('.mano.npy')]}" for p in (self.root / "raw_seqs").glob("s*/*.mano.npy"))

    def _split(self, task: str) -> str:
        path = self.root / "splits_json" / "protocol_p2.json"
        if path.exists():
            splits = read_json(path)
            for name in ("val", "test"):
                if task in splits.get(name, []):
                    return name
            return "train"
        return "test"

    def load(self, task: str) -> NativeEpisode:
        if not re.match(r"^s\d+/[a-z]+_(grab|use)_\d+$", task):
            raise SourceError(f"arctic: unknown task id {task!r} (expected like s01/box_use_02)")
        sid, seq = task.split("/")
        base = self.root / "raw_seqs" / sid / seq
        mano_path = base.with_name(seq + ".mano.npy")
        if not mano_path.exists():
            raise SourceError(f"arctic: unknown task id {task!r} (no {mano_path})")
        mano = read_npy_object(mano_path)
        ego_path = base.with_name(seq + ".egocam.dist.npy")
        ego = read_npy_object(ego_path)
        try:
            R = np.asarray(ego["R_k_cam_np"], np.float64)
            t = np.asarray(ego["T_k_cam_np"], np.float64).reshape(-1, 3)
            K = np.asarray(ego["intrinsics"], np.float64).reshape(3, 3)
            dist = np.asarray(ego["dist8"], np.float64).reshape(-1)
        except (KeyError, TypeError, ValueError) as e:
            raise SourceError(f"{ego_path}: missing or bad field {e}") from None
        T = len(R)
        hands = {}
        for side in ("right", "left"):
            try:
                d = mano[side]
                rot, pose, trans = (np.asarray(d[k], np.float64) for k in ("rot", "pose", "trans"))
                shape = np.asarray(d["shape"], np.float64).reshape(-1, 10)
            except (KeyError, TypeError, ValueError) as e:
                raise SourceError(f"{mano_path}: missing or bad '{side}' field {e}") from None
            if len(rot) != T:
                raise SourceError(f"{mano_path}: {len(rot)} {side}-hand frames, but {ego_path.name} has {T}")
            betas = np.broadcast_to(shape, (T, 10)).copy() if len(shape) in (1, T) else None
            if betas is None:
                raise SourceError(f"{mano_path}: '{side}' shape has {len(shape)} rows for {T} frames")
            hands[side] = RawHand(rot, pose, betas, trans, np.ones(T, bool))
        misc = read_json(self.root / "meta" / "misc.json")
        try:
            offset = int(misc[sid]["ioi_offset"])
        except (KeyError, TypeError, ValueError):
            raise SourceError(f"{self.root / 'meta' / 'misc.json'}: no ioi_offset for {sid}") from None
        img_dir = self.root / "images" / sid / seq / EGO_VIEW
        paths = [img_dir / f"{k + offset:05d}.jpg" for k in range(T)]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise SourceError(f"missing image {missing[0]} ({len(missing)} of {T} egocentric frames missing)")
        H, W = read_image(paths[0]).shape[:2]
        fxy, cxy = K[[0, 1], [0, 1]], K[:2, 2]
        state = {}

        def undistort(img):
            if "map" not in state:
                state["map"] = undistort_map(K, W, H, lambda ab: opencv8_distort(ab, dist), fxy, cxy)
            return remap_bilinear(img, state["map"])

        desc = self.root / "description" / sid / seq / "description.txt"
        segments = read_descriptions(desc, seq, T) if desc.exists() else []
        return NativeEpisode(
            dataset=self.name,
            episode=task,
            instruction=segments[0][2] if segments else default_instruction(seq),
            fps=30.0,
            width=W,
            height=H,
            K=K,
            split=self._split(task),
            num_frames=T,
            convention=CONVENTION,
            hands=hands,
            segments=segments,
            T_cam_from_world=se3(R, t),
            rgb=lambda: (undistort(read_image(p)) for p in paths),
            objects=self._objects(base.with_name(seq + ".object.npy"), seq, T),
            extra={"ioi_offset": offset, "dist8": dist.tolist(), "images": "undistorted to pinhole K"},
        )

    def _objects(self, obj_path, seq: str, T: int) -> list[ObjectTrack]:
        tmpl = self.root / "meta" / "object_vtemplates" / seq.split("_")[0]
        if not obj_path.exists() or not (tmpl / "mesh.obj").exists():
            return []
        params = read_npy(obj_path).astype(np.float64)
        if params.shape != (T, 7):
            raise SourceError(f"{obj_path}: expected ({T}, 7) object parameters, got {params.shape}")
        verts, faces = _read_obj(require(tmpl / "mesh.obj"))
        top = np.asarray(read_json(require(tmpl / "parts.json")), bool).reshape(-1)
        if top.shape[0] != len(verts):
            raise SourceError(f"{tmpl / 'parts.json'}: {top.shape[0]} flags for {len(verts)} vertices")
        R_glob = aa_to_R(params[:, 1:4])
        t = params[:, 4:7] / 1000.0
        R_top = R_glob @ aa_to_R(params[:, :1] * np.array([[0.0, 0.0, -1.0]]))
        verts = verts / 1000.0
        out = []
        for name, sel, Rk in (("bottom", ~top, R_glob), ("top", top, R_top)):
            fsel = faces[sel[faces].all(1)]
            if len(fsel):
                out.append(ObjectTrack(f"{seq.split('_')[0]}:{name}", verts.astype(np.float32), fsel, se3(Rk, t)))
        return out


def _read_obj(path):
    """Minimal Wavefront OBJ reader: vertices (V,3) float64 and triangulated faces (F,3) int64."""
    verts, faces = [], []
    with open(path) as f:
        for line in f:
            if line.startswith("v "):
                verts.append([float(x) for x in line.split()[1:4]])
            elif line.startswith("f "):
                idx = [int(tok.split("/")[0]) - 1 for tok in line.split()[1:]]
                faces.extend([idx[0], idx[i], idx[i + 1]] for i in range(1, len(idx) - 1))
    if not verts or not faces:
        raise SourceError(f"{path}: no vertices/faces")
    return np.asarray(verts), np.asarray(faces, np.int64)

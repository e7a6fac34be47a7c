"""What every dataset converter shares: the native-episode record, the MANO convention rules that
bring a source's hands into the project's canonical form, safe file readers, and the episode writer.

A source module reads its released files (pure numpy) into a :class:`NativeEpisode`: per side a
:class:`RawHand` in the source's own convention (described by a :class:`Convention`), the
world->camera transforms, intrinsics, text, split and lazy RGB / depth readers.
:func:`canonical_hands` then applies these rules:

* PCA -> 45-D (HOT3D): ``pose45 = coeffs @ hands_components[:n]``;
* ``flat_hand_mean=False`` -> absolute local rotations: ``pose45 + hands_mean``;
* wrist-position translation (TACO, OakInk2) -> smplx ``transl = tsl - J0(betas)``;
* world -> RGB camera: ``R_cam = R_cw R``, ``transl_cam = R_cw (J0 + transl) + t_cw - J0``.

Canonical output per side: ``global_orient`` (T,3), ``hand_pose`` (T,15,3) (absolute local
axis-angle), ``betas`` (T,10), ``transl`` (T,3) [m], ``valid`` (T,) bool, in the RGB camera frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Literal

import numpy as np

from megohand.errors import UserError


class SourceError(UserError):
    """Bad or missing dataset input; the message names the file and the problem."""


# ----------------------------------------------------------------------------- records


@dataclass
class RawHand:
    """One side's hand sequence as released (float64 numpy).

    global_orient (T,3) axis-angle; hand_pose (T,45) axis-angle or (T,n) PCA coefficients;
    betas (T,10); transl (T,3) [m] (meaning given by the Convention); valid (T,) bool.
    """

    global_orient: np.ndarray
    hand_pose: np.ndarray
    betas: np.ndarray
    transl: np.ndarray
    valid: np.ndarray

    def __post_init__(self):
        T = len(self.valid)
        self.global_orient = np.asarray(self.global_orient, np.float64).reshape(T, 3)
        self.hand_pose = np.asarray(self.hand_pose, np.float64).reshape(T, -1)
        self.betas = np.asarray(self.betas, np.float64).reshape(T, -1)
        self.transl = np.asarray(self.transl, np.float64).reshape(T, 3)
        self.valid = np.asarray(self.valid, bool).reshape(T)


@dataclass(frozen=True)
class Convention:
    """How a source's MANO parameters are meant (the rules are in this module's docstring)."""

    flat_hand_mean: bool = True
    pca_components: int = 0  # > 0: hand_pose holds this many PCA coefficients
    transl: Literal["smplx", "wrist"] = "smplx"  # "wrist": transl is the posed wrist position
    frame: Literal["camera", "world"] = "camera"


@dataclass
class ObjectTrack:
    """A rigid object for virtual depth: mesh in its own frame [m] and its per-frame pose.

    vertices (V,3), faces (F,3), T_world_from_object (T,4,4) (world = the episode's world frame, i.e.
    ``T_cam_from_world`` applies, for world-frame sources; the camera frame for camera-frame sources;
    NaN rows = pose unknown, not drawn). ``parts``: optional extra (vertices, faces, poses) for
    articulated pieces, same conventions. Rendered by :mod:`megohand.data.virtual_depth`.
    """

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    T_world_from_object: np.ndarray
    parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=list)


@dataclass
class NativeEpisode:
    """A source episode read from native files, before canonicalisation.

    ``hands``: side -> RawHand (params, in ``convention``); or ``joints``: side -> (T,21,3) camera
    frame [m] in ``joint_order`` with NaN rows for invalid frames (sources without MANO);
    ``joints_unobserved``: names (of ``joint_order``) of points that are stand-ins the retargeting
    network reads but the refinement does not fit (:meth:`megohand.hand.retarget.Retargeter.fit_sequence`).
    ``T_cam_from_world`` (T,4,4) or None (camera-frame sources). ``rgb()`` yields T frames
    (H,W,3) uint8; ``depth()`` returns (T,H,W) float32 metres; either may be None.
    """

    dataset: str
    episode: str
    instruction: str
    fps: float
    width: int
    height: int
    K: np.ndarray
    split: str
    num_frames: int
    convention: Convention = Convention()
    hands: dict[str, RawHand] = field(default_factory=dict)
    joints: dict[str, np.ndarray] = field(default_factory=dict)
    joint_order: str = "mano21"
    joints_unobserved: tuple[str, ...] = ()
    segments: list[tuple[int, int, str]] = field(default_factory=list)
    T_cam_from_world: np.ndarray | None = None
    rgb: Callable[[], Iterable[np.ndarray]] | None = None
    depth: Callable[[], np.ndarray] | None = None
    depth_source: str = "none"
    hand_source: str = "gt"
    objects: list[ObjectTrack] = field(default_factory=list)
    extra: dict = field(default_factory=dict)


# ----------------------------------------------------------------------------- conventions


def _hand_constants(hand):
    """(hands_mean (45,), hands_components (45,45) or None) of a HandModel as float64 numpy."""
    import torch

    def np64(x):
        return x.detach().double().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float64)

    comps = getattr(hand, "hands_components", None)
    return np64(hand.hands_mean).reshape(45), (None if comps is None else np64(comps).reshape(-1, 45))


def hand_fidelity(conv: Convention, hand) -> str:
    """Why ``hand`` cannot represent poses released in ``conv`` faithfully ("" when it can).

    Released MANO poses are only exact on MANO: PCA coefficients need MANO's ``hands_components``
    (the bundled open hand's basis is the identity, so they become the first finger rotations), and
    ``flat_hand_mean=False`` poses are offsets from MANO's ``hands_mean``, which no other hand has.
    """
    if getattr(hand, "is_mano", False):
        return ""
    name = getattr(hand, "name", "this hand model")
    why = []
    if conv.pca_components:
        why.append(f"its {conv.pca_components} MANO PCA coefficients need MANO's hands_components")
    if not conv.flat_hand_mean:
        why.append("its poses are offsets from MANO's hands_mean")
    if not why:
        return ""
    return f"fingers approximate: {' and '.join(why)}, and {name!r} is not MANO (give --mano-dir)"


def rest_wrist(hand, betas: np.ndarray) -> np.ndarray:
    """J0(betas): rest wrist joint (T,3) [m] for betas (T,10)."""
    import torch

    with torch.no_grad():
        J = hand.rest_joints(torch.as_tensor(betas, dtype=torch.float64))
    return J[..., 0, :].double().cpu().numpy()


def canonical_hands(raw: RawHand, conv: Convention, hand, T_cam_from_world: np.ndarray | None) -> dict:
    """Apply the source's convention rules; return canonical camera-frame params (float32) + valid."""
    import torch

    from megohand.geometry.camera import hand_to_camera
    from megohand.geometry.rotations import axis_angle_to_matrix, matrix_to_axis_angle

    mean, comps = _hand_constants(hand)
    pose = raw.hand_pose
    if conv.pca_components:
        if comps is None:
            raise SourceError(f"hand model {getattr(hand, 'name', hand)!r} has no PCA components")
        n = conv.pca_components
        pose = pose[:, :n] @ comps[:n]
    if pose.shape[1] != 45:
        raise SourceError(f"hand pose must have 45 values per frame, got {pose.shape[1]}")
    if not conv.flat_hand_mean:
        pose = pose + mean
    betas = raw.betas
    J0 = rest_wrist(hand, betas)
    transl = raw.transl - J0 if conv.transl == "wrist" else raw.transl
    go = raw.global_orient
    if conv.frame == "world":
        if T_cam_from_world is None:
            raise SourceError("world-frame hands need per-frame world->camera transforms")
        R, t = hand_to_camera(
            axis_angle_to_matrix(torch.as_tensor(go)),
            torch.as_tensor(transl),
            torch.as_tensor(J0),
            torch.as_tensor(np.asarray(T_cam_from_world, np.float64)),
        )
        go, transl = matrix_to_axis_angle(R).numpy(), t.numpy()
    bad_betas = raw.valid & ~np.isfinite(betas).all(1)
    if bad_betas.any():
        raise SourceError(f"betas (shape parameters): NaN/inf in {bad_betas.sum()} frame(s) the source marks valid, "
                          f"first {np.flatnonzero(bad_betas)[:5].tolist()}; expected finite numbers")
    valid = raw.valid & np.isfinite(go).all(1) & np.isfinite(transl).all(1) & np.isfinite(pose).all(1)
    if raw.valid.any() and not valid.any():
        raise SourceError(f"every one of the {raw.valid.sum()} annotated frames holds NaN/inf in its pose or "
                          "translation; expected finite numbers")
    out = {
        "global_orient": go,
        "hand_pose": pose.reshape(-1, 15, 3),
        "betas": betas,
        "transl": transl,
    }
    out = {k: np.where(valid.reshape((-1,) + (1,) * (v.ndim - 1)), v, 0.0).astype(np.float32) for k, v in out.items()}
    out["valid"] = valid
    return out


# ----------------------------------------------------------------------------- safe readers


def require(path: Path, what: str = "file") -> Path:
    path = Path(path)
    if not path.exists():
        raise SourceError(f"missing {what}: {path}")
    return path


def read_json(path: Path):
    try:
        with open(require(path)) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise SourceError(f"corrupt JSON in {path}: {e}") from None


def read_jsonl(path: Path) -> list:
    out = []
    with open(require(path)) as f:
        for i, line in enumerate(f, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SourceError(f"corrupt JSON on line {i} of {path}: {e}") from None
    return out


def _safe_storage_from_bytes(data: bytes):
    import io

    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def _restricted_unpickler(f):
    """The hand package's restricted unpickler, extended with plain torch tensors (TACO and OakInk2
    pickle ``torch.Tensor``s): tensors are rebuilt from their storage by ``torch.load(weights_only=True)``."""
    import collections

    import torch

    from megohand.hand import mano_io

    class Unpickler(mano_io._RestrictedUnpickler):
        def find_class(self, module, name):
            if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
                return torch._utils._rebuild_tensor_v2
            if (module, name) == ("torch.storage", "_load_from_bytes"):
                return _safe_storage_from_bytes
            if (module, name) == ("collections", "OrderedDict"):
                return collections.OrderedDict
            return super().find_class(module, name)

    return Unpickler(f, encoding="latin1")


def read_pickle(path: Path, f=None):
    """Dataset pickle through the restricted unpickler (numpy, builtins, plain torch tensors only);
    tensors come back as numpy arrays. ``f``: an open binary file positioned at the pickle."""
    path = Path(path)
    try:
        if f is None:
            with open(require(path), "rb") as fh:
                obj = _restricted_unpickler(fh).load()
        else:
            obj = _restricted_unpickler(f).load()
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001 - any unpickling failure is bad input
        raise SourceError(f"cannot read pickle {path} safely: {type(e).__name__}: {e}") from None
    return _tree(obj)


def _tree(obj):
    import torch

    from megohand.hand import mano_io

    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu().numpy()
    if isinstance(obj, mano_io.ChumpyArray):
        return obj.array
    if isinstance(obj, dict):
        return {k: _tree(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_tree(v) for v in obj)
    return obj


def read_npy_object(path: Path):
    """A ``.npy`` holding a pickled object (ARCTIC's ``np.save(dict)``) read through the restricted
    unpickler, never ``np.load(allow_pickle=True)``. Plain numeric .npy files are returned as arrays."""
    path = require(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
            if dtype.hasobject:
                obj = read_pickle(path, f)
                if isinstance(obj, np.ndarray) and obj.dtype == object and obj.shape == ():
                    obj = obj.item()
                return _tree(obj)
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    return read_npy(path)


def read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(require(path), allow_pickle=False)
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"cannot read array {path}: {e}") from None


def read_numbers(path: Path, count: int | None = None) -> np.ndarray:
    """Whitespace/comma separated numbers in a text file -> float64 (n,), optionally checked."""
    text = require(path).read_text()
    try:
        vals = np.array(text.replace(",", " ").split(), dtype=np.float64)
    except ValueError as e:
        raise SourceError(f"non-numeric content in {path}: {e}") from None
    if count is not None and vals.size != count:
        raise SourceError(f"{path}: expected {count} numbers, found {vals.size}")
    return vals


def read_image(path: Path, mode: str | None = "RGB") -> np.ndarray:
    """Image file -> numpy (uint8 RGB by default; mode=None keeps e.g. 16-bit depth)."""
    from PIL import Image

    try:
        with Image.open(require(path)) as im:
            if mode:
                im = im.convert(mode)
            arr = np.array(im)
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"cannot read image {path}: {e}") from None
    return arr


def video_frame_count(path: Path) -> int:
    """Number of decodable frames of a video (decodes if the container does not say)."""
    import av

    try:
        with av.open(str(require(path))) as c:
            n = c.streams.video[0].frames
            if n:
                return int(n)
            return sum(1 for _ in c.decode(video=0))
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"cannot read video {path}: {e}") from None


def iter_video(path: Path, fmt: str = "rgb24") -> Iterator[np.ndarray]:
    """Decode frames of a video: rgb24 -> (H,W,3) uint8; gray16le -> (H,W) uint16."""
    import av

    try:
        with av.open(str(require(path))) as c:
            for frame in c.decode(video=0):
                yield frame.to_ndarray(format=fmt)
    except SourceError:
        raise
    except Exception as e:  # noqa: BLE001
        raise SourceError(f"cannot decode video {path}: {e}") from None


MAX_MEMBER_BYTES = 256 * 2**20  # one archive member (a JSON file, a frame) decompressed


def read_tar_member(tar, member, archive: Path, max_bytes: int | None = None) -> bytes:
    """Bytes of one member of an open ``tarfile`` archive, refusing members that decompress to more than
    ``max_bytes`` (default ``MAX_MEMBER_BYTES``; a compressed archive can claim or expand to any size) or that are
    not regular files."""
    import tarfile

    max_bytes = MAX_MEMBER_BYTES if max_bytes is None else max_bytes
    info = member if isinstance(member, tarfile.TarInfo) else tar.getmember(member)
    if not info.isfile():
        raise SourceError(f"{archive}: {info.name} is not a regular file")
    if info.size > max_bytes:
        raise SourceError(f"{archive}: {info.name} is {info.size} bytes, more than the {max_bytes} allowed for one entry")
    f = tar.extractfile(info)
    data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise SourceError(f"{archive}: {info.name} decompresses to more than {max_bytes} bytes")
    return data


def numbered_frames(folder: Path, ext: str, digits: int = 6) -> list[Path]:
    """The files ``<k>.<ext>`` of ``folder`` whose names are frame numbers, in order; they must be 0..N-1
    without a gap (a missing frame would shift every later one), else a SourceError names the first missing
    file (``<k:0{digits}d>.<ext>``)."""
    files = sorted((p for p in folder.glob(f"*.{ext}") if p.stem.isdigit()), key=lambda p: int(p.stem))
    for k, p in enumerate(files):
        if int(p.stem) != k:
            raise SourceError(f"missing {folder / f'{k:0{digits}d}.{ext}'} (frames must be numbered 0..{len(files) - 1} "
                              "without gaps; a missing one would shift every later frame)")
    return files


def check_count(path: Path, found: int, expected: int, what: str = "frames") -> None:
    if found != expected:
        raise SourceError(f"{path}: {found} {what}, but the poses have {expected} frames")


def se3(R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(...,3,3), (...,3) -> (...,4,4)."""
    R = np.asarray(R, np.float64)
    T = np.zeros(R.shape[:-2] + (4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = t
    T[..., 3, 3] = 1
    return T


def quat_wxyz_to_R(q: np.ndarray) -> np.ndarray:
    """(...,4) quaternion w,x,y,z -> (...,3,3) (through the project's rotation module)."""
    import torch

    from megohand.geometry.rotations import quat_wxyz_to_matrix

    return quat_wxyz_to_matrix(torch.as_tensor(np.asarray(q, np.float64))).numpy()


def aa_to_R(aa: np.ndarray) -> np.ndarray:
    import torch

    from megohand.geometry.rotations import axis_angle_to_matrix

    return axis_angle_to_matrix(torch.as_tensor(np.asarray(aa, np.float64))).numpy()


def R_to_aa(R: np.ndarray) -> np.ndarray:
    import torch

    from megohand.geometry.rotations import matrix_to_axis_angle

    return matrix_to_axis_angle(torch.as_tensor(np.asarray(R, np.float64))).numpy()


def invert_se3(T: np.ndarray) -> np.ndarray:
    T = np.asarray(T, np.float64)
    R, t = T[..., :3, :3], T[..., :3, 3]
    Rt = np.swapaxes(R, -1, -2)
    return se3(Rt, -(Rt @ t[..., None])[..., 0])


def sentence(text: str) -> str:
    """Capitalise the first letter and end with a full stop: 'pour the milk' -> 'Pour the milk.'"""
    text = " ".join(str(text).replace("_", " ").split())
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


# ----------------------------------------------------------------------------- base class


class Source:
    """A dataset in its native layout under ``root``. Subclasses set ``name``, ``layout`` (the
    expected source layout, shown by ``megohand convert --help``) and implement tasks/load."""

    name: str = ""
    layout: str = ""
    refine_steps: int = 100
    """Retargeting refinement steps ``convert`` uses for this dataset unless --refine-steps says otherwise."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise SourceError(f"{self.name}: source folder {self.root} does not exist")

    def tasks(self) -> list[str]:
        """Native episode ids found under root, sorted."""
        raise NotImplementedError

    def load(self, task: str) -> NativeEpisode:
        """Read one episode; raise SourceError naming the file on bad input."""
        raise NotImplementedError

    def check_task(self, task: str) -> None:
        if task not in set(self.tasks()):
            raise SourceError(f"{self.name}: unknown task id {task!r} under {self.root}")

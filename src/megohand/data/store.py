"""The unified on-disk store: one format that every converter writes and training reads.

Layout (details in docs/data_format.md)::

    ROOT/store.json                                    {"format": "megohand-store", "version": 1}
    ROOT/<dataset>/index.json                          episodes -> dir, split, num_frames (rebuilt atomically)
    ROOT/<dataset>/episodes/<safe id>/meta.json        EpisodeMeta + a "store" block (frames, files, sides)
    ROOT/<dataset>/episodes/<safe id>/frames.parquet   per-frame hands, timestamps, T_cam_from_world
    ROOT/<dataset>/episodes/<safe id>/rgb.pack         JPEG frames (megohand.data.video pack)
    ROOT/<dataset>/episodes/<safe id>/depth.pack       uint16 mm depth, zstd per frame (when depth exists)
    ROOT/<dataset>/episodes/<safe id>/rgb_<S>.pack     training-size copy of short side S (optional; + depth_<S>.pack)

Episode ids are the datasets' native task ids (``s01/box_use_02``); the directory name is a reversible
percent-encoding of the id (``episode_dirname`` / ``episode_from_dirname``). An episode is written to
``<dataset>/.tmp/`` and renamed into place only when complete, so readers never see half an episode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import math
import os
import shutil
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator
from urllib.parse import quote, unquote

import numpy as np

from megohand import io
from megohand.errors import UserError
from megohand.data.video import Pack, PackError, PackWriter, decode_depth_mm, decode_jpeg, encode_depth, encode_jpeg

FORMAT = "megohand-store"
VERSION = 1
SIDES = ("right", "left")
SPLITS = ("train", "val", "test")
HAND_SOURCES = ("gt", "retargeted", "synthetic")
DEPTH_SOURCES = ("sensor", "rendered", "estimated", "none")
# field -> per-frame shape
HAND_FIELDS: dict[str, tuple[int, ...]] = {
    "global_orient": (3,),
    "hand_pose": (15, 3),
    "betas": (10,),
    "transl": (3,),
}
# optional per-frame hand field: mean joint error [mm] of retargeted hands (NaN where not valid)
FIT_ERROR = "fit_error_mm"


class StoreError(UserError):
    """A problem with stored data; the message names the dataset/episode, the field and the file."""


# ---------------------------------------------------------------- names


def episode_dirname(episode: str) -> str:
    """Native episode id -> a safe, reversible directory name (percent-encoding of all but [A-Za-z0-9_.~-])."""
    if not isinstance(episode, str) or not episode:
        raise ValueError(f"episode id must be a non-empty string, got {episode!r}")
    name = quote(episode, safe="-_.~")
    if name.startswith("."):
        name = "%2E" + name[1:]
    if len(name.encode()) > 240:
        raise ValueError(f"episode id too long for a directory name once encoded ({len(name)} chars): {episode!r}")
    return name


def episode_from_dirname(name: str) -> str:
    """Inverse of ``episode_dirname``."""
    return unquote(name)


def is_plain_name(name) -> bool:
    """True for a bare file name (no folder part, not '.' or '..'): files an episode names stay inside it."""
    return isinstance(name, str) and bool(name) and name not in (".", "..") and "/" not in name and "\\" not in name


def check_dataset_name(name: str) -> str:
    ok = isinstance(name, str) and name and all(c.isalnum() or c in "-_." for c in name) and not name.startswith(".")
    if not ok:
        raise ValueError(f"dataset name must be non-empty [A-Za-z0-9_.-] not starting with '.', got {name!r}")
    return name


# ---------------------------------------------------------------- metadata


@dataclass
class EpisodeMeta:
    """What is known about one episode. ``segments``: (start, end, text), frames [start, end), end exclusive.

    ``width``/``height``/``K`` describe the stored RGB frames (0 = filled in by the writer from the frames).
    """

    dataset: str
    episode: str
    instruction: str = ""
    segments: list = field(default_factory=list)
    fps: float = 30.0
    width: int = 0
    height: int = 0
    K: list | None = None
    split: str = "train"
    hand_source: str = "gt"
    depth_source: str = "none"
    hand_model: str = "mano"
    extra: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["segments"] = [[int(s), int(e), str(t)] for s, e, t in self.segments]
        d["K"] = None if self.K is None else np.asarray(self.K, dtype=float).tolist()
        return d

    @staticmethod
    def from_dict(d: dict) -> "EpisodeMeta":
        names = {f.name for f in dataclasses.fields(EpisodeMeta)}
        m = EpisodeMeta(**{k: v for k, v in d.items() if k in names})
        m.segments = [(int(s), int(e), str(t)) for s, e, t in m.segments]
        return m

    def problems(self, num_frames: int | None = None) -> list[tuple[str, str]]:
        """Every problem as (field, message); empty when the metadata is consistent."""
        out = []
        try:
            check_dataset_name(self.dataset)
        except ValueError as e:
            out.append(("dataset", str(e)))
        if not isinstance(self.episode, str) or not self.episode:
            out.append(("episode", f"must be a non-empty string, got {self.episode!r}"))
        if not isinstance(self.instruction, str):
            out.append(("instruction", f"must be a string, got {type(self.instruction).__name__}"))
        if not (isinstance(self.fps, (int, float)) and math.isfinite(self.fps) and self.fps > 0):
            out.append(("fps", f"must be a positive number, got {self.fps!r}"))
        for name in ("width", "height"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v > 0):
                out.append((name, f"must be a positive integer, got {v!r}"))
        try:
            K = np.asarray(self.K, dtype=float)
            if K.shape != (3, 3):
                out.append(("K", f"must be 3x3, got shape {K.shape}"))
            elif not np.all(np.isfinite(K)) or K[0, 0] <= 0 or K[1, 1] <= 0 or not np.allclose(K[2], [0, 0, 1]):
                out.append(("K", f"must be finite with fx, fy > 0 and last row [0, 0, 1], got {K.tolist()}"))
        except (TypeError, ValueError):
            out.append(("K", f"must be a 3x3 number array, got {self.K!r}"))
        for name, allowed in (("split", SPLITS), ("hand_source", HAND_SOURCES), ("depth_source", DEPTH_SOURCES)):
            if getattr(self, name) not in allowed:
                out.append((name, f"must be one of {allowed}, got {getattr(self, name)!r}"))
        if not isinstance(self.hand_model, str) or not self.hand_model:
            out.append(("hand_model", f"must be a non-empty string, got {self.hand_model!r}"))
        if not isinstance(self.extra, dict):
            out.append(("extra", f"must be a dict, got {type(self.extra).__name__}"))
        try:
            for i, (s, e, t) in enumerate(self.segments):
                bad = not (isinstance(t, str) and int(s) == s and int(e) == e and 0 <= s < e)
                if not bad and num_frames is not None and e > num_frames:
                    bad = True
                if bad:
                    out.append(("segments", f"segment {i} ({s}, {e}, {t!r}) is not 0 <= start < end <= num_frames "
                                            f"({num_frames}) with text"))
        except (TypeError, ValueError):
            out.append(("segments", f"must be a list of (start, end, text), got {self.segments!r}"))
        return out


@dataclass(frozen=True)
class EpisodeRef:
    """Index entry of one episode."""

    dataset: str
    episode: str
    split: str
    num_frames: int
    has_depth: bool


# ---------------------------------------------------------------- small file helpers


def read_json(path: Path, what: str) -> Any:
    if not path.exists():
        raise StoreError(f"{what}: file missing ({path})")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreError(f"{what}: not valid JSON ({path}): {e}") from None


def has_episodes(root: str | Path) -> bool:
    """True once the store at ``root`` holds a complete episode (a failed writer then leaves it to be resumed)."""
    return any(p.is_file() for p in Path(root).glob("*/episodes/*/meta.json"))


@contextlib.contextmanager
def _locked(path: Path):
    import fcntl

    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ref_from_meta(meta: dict) -> dict:
    st = meta.get("store", {})
    return {
        "dir": episode_dirname(meta["episode"]),
        "split": meta.get("split", "train"),
        "num_frames": int(st.get("num_frames", 0)),
        "has_depth": bool(st.get("depth_file")),
    }


def scan_index(dataset_dir: Path) -> dict:
    """Index of a dataset built from the episode folders on disk (episodes without a readable meta.json are skipped)."""
    episodes = {}
    ep_root = dataset_dir / "episodes"
    if ep_root.is_dir():
        for d in sorted(ep_root.iterdir()):
            try:
                meta = json.loads((d / "meta.json").read_text())
                episodes[meta["episode"]] = _ref_from_meta(meta)
            except (OSError, ValueError, KeyError, TypeError):
                continue
    return _with_counts({"format": FORMAT, "version": VERSION, "dataset": dataset_dir.name, "episodes": episodes})


def _with_counts(index: dict) -> dict:
    """Add per-split episode and frame counts (a summary; ``episodes`` is authoritative)."""
    splits: dict = {}
    for e in index["episodes"].values():
        c = splits.setdefault(e["split"], {"episodes": 0, "frames": 0})
        c["episodes"] += 1
        c["frames"] += int(e["num_frames"])
    index["splits"] = dict(sorted(splits.items()))
    return index


# ---------------------------------------------------------------- writer


class StoreWriter:
    """Writes episodes into ROOT; atomic per episode; resumable with ``has_episode``.

    Args:
        root: store folder (created).
        jpeg_quality: JPEG quality of the RGB frames (90: visually lossless, ~10x smaller than raw).
        max_short_side: if set, RGB (area filter) and depth (nearest) frames whose short side is larger are
            downscaled to it at write time and K is scaled to match (original size kept in meta.store).
            Keeps 1080p+ sources fast to read for 224 px training; the frames are then at that size *instead*.
        copy_sizes: short sides [px] of training-size copies written *beside* the stored frames (``FrameCopy``:
            RGB area-averaged, depth nearest, K scaled), each only where the stored frames' short side is larger.
            Training reads the smallest copy that still fits the model's input (``megohand.data.observation``).
    """

    def __init__(self, root: str | Path, jpeg_quality: int = 90, max_short_side: int | None = None,
                 copy_sizes: Iterable[int] = ()):
        self.root = Path(root)
        self.jpeg_quality = int(jpeg_quality)
        self.max_short_side = max_short_side
        self.copy_sizes = check_copy_sizes(copy_sizes)
        self.root.mkdir(parents=True, exist_ok=True)
        marker = self.root / "store.json"
        if marker.exists():
            info = read_json(marker, f"store {self.root}")
            if info.get("format") != FORMAT:
                raise StoreError(f"{marker}: not a megohand store (format {info.get('format')!r})")
        else:
            io.write_json(marker, {"format": FORMAT, "version": VERSION})

    def episode_dir(self, dataset: str, episode: str) -> Path:
        return self.root / check_dataset_name(dataset) / "episodes" / episode_dirname(episode)

    def has_episode(self, dataset: str, episode: str) -> bool:
        """True when the episode was completely written (its folder exists only after the final rename)."""
        return (self.episode_dir(dataset, episode) / "meta.json").exists()

    def write_episode(
        self,
        meta: EpisodeMeta,
        hands: dict[str, dict[str, np.ndarray]],
        rgb: np.ndarray | Iterable[np.ndarray],
        depth: np.ndarray | Iterable[np.ndarray] | None = None,
        T_cam_from_world: np.ndarray | None = None,
        timestamps: np.ndarray | None = None,
        overwrite: bool = False,
    ) -> EpisodeRef:
        """Write one episode atomically.

        Args:
            meta: EpisodeMeta (width/height 0 -> taken from the frames; K required).
            hands: {"right"|"left": {"global_orient" (T,3), "hand_pose" (T,15,3) or (T,45), "betas" (T,10) or (10,),
                "transl" (T,3), "valid" (T,) bool (optional, default all True), "fit_error_mm" (T,) (optional: the
                retargeting's mean joint error, >= 0 in valid frames, stored as NaN in the others)}}; a missing side
                is stored as zeros with valid False. Valid frames must be finite; non-finite values of invalid
                frames are stored as 0.
            rgb: (T,H,W,3) uint8 array or an iterable of T (H,W,3) uint8 frames (streamed, never all in memory).
            depth: (T,H,W) metres (float) or uint16 mm, an iterable of frames, or None. Same H, W as rgb.
            T_cam_from_world: (T,4,4) rigid transforms or None.
            timestamps: (T,) seconds; default k / fps.
            overwrite: replace an existing episode (else FileExistsError).
        """
        import pyarrow as pa
        import pyarrow.parquet as pq

        what = f"{meta.dataset}/{meta.episode}"
        final = self.episode_dir(meta.dataset, meta.episode)
        if final.exists() and not overwrite:
            raise FileExistsError(f"{what}: episode already in the store ({final}); use has_episode to resume "
                                  "or overwrite=True")
        columns, sides, T = _hand_columns(hands, what)
        cols: dict[str, Any] = {"frame_index": pa.array(np.arange(T, dtype=np.int32))}
        if timestamps is None:
            ts = np.arange(T, dtype=np.float64) / float(meta.fps)
        else:
            ts = np.asarray(timestamps, dtype=np.float64)
            if ts.shape != (T,) or not np.all(np.isfinite(ts)):
                raise StoreError(f"{what} [timestamp]: need ({T},) finite seconds, got shape {ts.shape}")
        cols["timestamp"] = pa.array(ts)
        cols.update(columns)
        if T_cam_from_world is not None:
            M = np.asarray(T_cam_from_world, dtype=np.float64)
            if M.shape != (T, 4, 4):
                raise StoreError(f"{what} [T_cam_from_world]: need ({T}, 4, 4), got {M.shape}")
            bad = rigid_problems(M)
            if bad:
                raise StoreError(f"{what} [T_cam_from_world]: {bad}")
            cols["T_cam_from_world"] = _fixed_list(M.reshape(T, 16))

        # fail fast on metadata (width/height 0 are filled from the frames later)
        pre = [(f, m) for f, m in meta.problems(T) if not (f in ("width", "height") and getattr(meta, f) == 0)]
        if pre:
            raise StoreError(f"{what}: bad metadata: " + "; ".join(f"{f}: {m}" for f, m in pre))
        try:
            json.dumps(meta.to_dict(), allow_nan=False, default=io.json_default)
        except (TypeError, ValueError) as e:
            raise StoreError(f"{what} [extra]: metadata is not JSON-serialisable: {e}") from None

        tmp_root = self.root / meta.dataset / ".tmp"
        tmp_root.mkdir(parents=True, exist_ok=True)
        _clean_stale_tmp(tmp_root)
        tmp = tmp_root / f"{final.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            # frames: RGB (+ depth) streamed into packs
            rgb_w = PackWriter(tmp / "rgb.pack", "jpeg")
            depth_w = PackWriter(tmp / "depth.pack", "zdepth16") if depth is not None else None
            size = _FrameSizer(self.max_short_side)
            depth_iter = iter(depth) if depth is not None else None
            copies: list[CopyWriter] = []
            n = 0
            for frame in rgb:
                frame = np.asarray(frame)
                if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
                    raise StoreError(f"{what} [rgb]: frame {n} must be (H,W,3) uint8, got {frame.shape} {frame.dtype}")
                size.check(frame.shape[:2], what, n)
                if n == 0:
                    copies = [CopyWriter(tmp, c, *size.out, depth is not None, self.jpeg_quality)
                              for c in self.copy_sizes if c < min(size.out)]
                stored = size.rgb(frame)
                rgb_w.append(encode_jpeg(stored, self.jpeg_quality))
                d = None
                if depth_iter is not None:
                    try:
                        d = np.asarray(next(depth_iter))
                    except StopIteration:
                        raise StoreError(f"{what} [depth]: only {n} depth frames for more RGB frames") from None
                    if d.shape != frame.shape[:2]:
                        raise StoreError(f"{what} [depth]: frame {n} is {d.shape}, RGB is {frame.shape[:2]}")
                    d = size.depth(d)
                    depth_w.append(encode_depth(d))
                for c in copies:
                    c.append(stored, d)
                n += 1
                if n > T:
                    break
            if n != T:
                raise StoreError(f"{what} [rgb]: {n if n <= T else 'more than ' + str(T)} frames, hands have {T}")
            if depth_iter is not None and next(depth_iter, None) is not None:
                raise StoreError(f"{what} [depth]: more depth frames than the {T} RGB frames")
            rgb_w.close()
            if depth_w is not None:
                depth_w.close()
            for c in copies:
                c.close()

            # metadata (width/height/K follow the stored frames)
            m = EpisodeMeta.from_dict(meta.to_dict())
            h0, w0 = size.orig
            if m.width == 0 and m.height == 0:
                m.width, m.height = w0, h0
            if (m.height, m.width) != (h0, w0):
                raise StoreError(f"{what} [width/height]: meta says {m.width}x{m.height}, frames are {w0}x{h0}")
            if m.K is not None and size.down is not None:
                m.K = size.down.K(np.asarray(m.K, float)).tolist()
            m.height, m.width = size.out
            if depth is None and m.depth_source != "none":
                raise StoreError(f"{what} [depth_source]: is {m.depth_source!r} but no depth given")
            if depth is not None and m.depth_source == "none":
                raise StoreError(f"{what} [depth_source]: depth frames given but depth_source is 'none'")
            probs = m.problems(T)
            if probs:
                raise StoreError(f"{what}: bad metadata: " + "; ".join(f"{f}: {msg}" for f, msg in probs))
            # parquet
            pq.write_table(pa.table(cols), tmp / "frames.parquet", compression="zstd")
            d = m.to_dict()
            d["store"] = {
                "format": FORMAT,
                "version": VERSION,
                "num_frames": T,
                "sides": sides,
                "rgb_file": "rgb.pack",
                "rgb_codec": "jpeg",
                "depth_file": "depth.pack" if depth is not None else None,
                "depth_codec": "zdepth16" if depth is not None else None,
                "depth_unit": "mm" if depth is not None else None,
                "has_T_cam_from_world": T_cam_from_world is not None,
                "original_size": [w0, h0],
                "copies": [c.info(m.K) for c in copies],
                "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            }
            io.write_json(tmp / "meta.json", d)
            io.fsync_path(tmp)
            final.parent.mkdir(parents=True, exist_ok=True)
            if final.exists():  # overwrite: move the old one aside first, then swap
                old = tmp_root / f"{final.name}.old.{uuid.uuid4().hex[:8]}"
                os.replace(final, old)
                os.replace(tmp, final)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, final)
            io.fsync_path(final.parent)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        self._update_index(m.dataset, {m.episode: _ref_from_meta(d)})
        return EpisodeRef(m.dataset, m.episode, m.split, T, depth is not None)

    def _update_index(self, dataset: str, entries: dict) -> None:
        ds_dir = self.root / dataset
        with _locked(ds_dir / ".index.lock"):
            path = ds_dir / "index.json"
            try:
                index = json.loads(path.read_text()) if path.exists() else None
            except ValueError:
                index = None
            if index is None or index.get("format") != FORMAT:
                index = scan_index(ds_dir)
            index["episodes"].update(entries)
            index["episodes"] = dict(sorted(index["episodes"].items()))
            io.write_json(path, _with_counts(index))

    def rebuild_index(self, dataset: str) -> dict:
        """Rescan ``dataset``'s episode folders and rewrite its index.json atomically."""
        ds_dir = self.root / check_dataset_name(dataset)
        with _locked(ds_dir / ".index.lock"):
            index = scan_index(ds_dir)
            io.write_json(ds_dir / "index.json", index)
        return index


def check_copy_sizes(sizes: Iterable[int]) -> tuple[int, ...]:
    """Sorted distinct copy sizes; each an integer in [16, 4096] (ValueError otherwise)."""
    out = tuple(sorted({int(x) for x in sizes}))
    bad = [x for x in sizes if int(x) != x or not 16 <= int(x) <= 4096]
    if bad:
        raise ValueError(f"copy sizes must be integers in [16, 4096] px, got {list(sizes)}")
    return out


def check_copy_sizes_option(sizes, option: str = "--copy-sizes") -> tuple[int, ...]:
    """``check_copy_sizes`` for a command-line option (UserError naming it)."""
    from megohand.errors import check

    try:
        return check_copy_sizes(sizes)
    except ValueError:
        check(False, option, list(sizes), "sizes in [16, 4096] px")


def copy_file_names(size: int) -> tuple[str, str]:
    """(RGB pack, depth pack) file names of the copy at ``size``."""
    return f"rgb_{size}.pack", f"depth_{size}.pack"


class CopyWriter:
    """Writes one training-size copy (``FrameCopy``) of an episode's frames into ``folder``, frame by frame,
    under temporary names; ``close()`` fsyncs them, ``commit()`` renames them to their final names."""

    def __init__(self, folder: Path, size: int, height: int, width: int, with_depth: bool, jpeg_quality: int = 90):
        self.folder, self.size, self.quality = Path(folder), int(size), int(jpeg_quality)
        self.down = Downscale.of(width, height, self.size)
        self.names = copy_file_names(self.size)
        tag = f".tmp.{os.getpid()}.{uuid.uuid4().hex[:8]}"
        self.tmp = [self.folder / f".{name}{tag}" for name in self.names]
        self.rgb = PackWriter(self.tmp[0], "jpeg")
        self.depth = PackWriter(self.tmp[1], "zdepth16") if with_depth else None

    def append(self, rgb: np.ndarray, depth: np.ndarray | None = None) -> None:
        """One stored frame: (H, W, 3) uint8 and (H, W) depth (metres or uint16 mm) or None."""
        self.rgb.append(encode_jpeg(self.down.rgb(rgb), self.quality))
        if self.depth is not None:
            self.depth.append(encode_depth(self.down.depth(depth)))

    def close(self) -> None:
        for w in (self.rgb, self.depth):
            if w is not None:
                w.close()
        self.commit()

    def commit(self) -> None:
        """Rename the packs to their final names (atomic each; the episode's meta.json lists them only after)."""
        for tmp, name in zip(self.tmp, self.names):
            if tmp.exists():
                os.replace(tmp, self.folder / name)

    def abort(self) -> None:
        for w, tmp in zip((self.rgb, self.depth), self.tmp):
            if w is not None:
                w.abort()
            tmp.unlink(missing_ok=True)

    def info(self, K) -> dict:
        """The copy's entry in meta.json's ``store.copies`` (K: the stored frames' intrinsics)."""
        g = self.down
        return {"size": self.size, "width": g.width, "height": g.height, "K": g.K(np.asarray(K, float)).tolist(),
                "box": [float(x) for x in g.box], "rgb_file": self.names[0], "rgb_codec": "jpeg",
                "jpeg_quality": self.quality, "depth_file": self.names[1] if self.depth is not None else None,
                "depth_codec": "zdepth16" if self.depth is not None else None}


def add_episode_copies(path: Path, sizes: Iterable[int], jpeg_quality: int = 90, overwrite: bool = False,
                       progress=None) -> list[int]:
    """Add training-size copies to the stored episode in folder ``path`` (resumable, atomic per episode): the
    copies' packs are written under temporary names, fsynced and renamed, and the episode's meta.json lists them
    only after that (rewritten atomically), so a reader sees all of an episode's new copies or none. Sizes the
    episode already lists are kept (``overwrite``: written again); sizes not smaller than its frames' short side
    are skipped. ``progress(n)`` is called per frame. Returns the sizes written."""
    path = Path(path)
    d = read_json(path / "meta.json", f"{path.name} [meta.json]")
    ep = Episode(path, d.get("dataset", ""), d.get("episode", ""))
    st = d["store"]
    have = {int(c["size"]): c for c in st.get("copies") or []}
    todo = [c for c in check_copy_sizes(sizes)
            if c < min(ep.meta.width, ep.meta.height) and (overwrite or c not in have)]
    if not todo:
        return []
    _clean_stale_files(path)
    writers = [CopyWriter(path, c, ep.meta.height, ep.meta.width, ep.has_depth, jpeg_quality) for c in todo]
    try:
        for k in range(ep.num_frames):
            rgb, depth = ep.rgb(k), ep.depth_mm(k)
            for w in writers:
                w.append(rgb, depth)
            if progress is not None:
                progress(1)
        for w in writers:
            w.close()
    except BaseException:
        for w in writers:
            w.abort()
        raise
    for w in writers:
        have[w.size] = w.info(ep.K)
    st["copies"] = [have[c] for c in sorted(have)]
    io.write_json(path / "meta.json", d)
    io.fsync_path(path)
    return todo


def _clean_stale_files(folder: Path) -> None:
    """Remove the temporary packs (``.<name>.tmp.<pid>.<hex>``) of copy writers that no longer run."""
    for f in folder.glob(".*.tmp.*"):
        if _left_by_dead_writer(f.name):
            f.unlink(missing_ok=True)


def _left_by_dead_writer(name: str) -> bool:
    """Whether a temporary name ``....<pid>.<hex>`` belongs to another process that no longer runs."""
    try:
        pid = int(name.split(".")[-2])
    except (ValueError, IndexError):
        return False
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


def _clean_stale_tmp(tmp_root: Path) -> None:
    """Remove temporary episode folders left by processes that no longer run (killed writers)."""
    for d in tmp_root.iterdir():
        if ".old." not in d.name and _left_by_dead_writer(d.name):
            shutil.rmtree(d, ignore_errors=True)


def _fixed_list(a: np.ndarray):
    import pyarrow as pa

    a = np.ascontiguousarray(a)
    return pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1])


def _hand_columns(hands: dict, what: str):
    """Validate hand arrays and build the parquet columns. Returns (columns, sides present, T)."""
    unknown = set(hands) - set(SIDES)
    if unknown:
        raise StoreError(f"{what} [hands]: unknown sides {sorted(unknown)}; expected {SIDES}")
    if not hands:
        raise StoreError(f"{what} [hands]: no hand given")
    T = None
    arrays = {}
    for side, h in hands.items():
        missing = set(HAND_FIELDS) - set(h)
        if missing:
            raise StoreError(f"{what} [{side}]: missing fields {sorted(missing)}")
        n = np.asarray(h["transl"]).shape[0]
        if T is None:
            T = n
        if n != T:
            raise StoreError(f"{what} [{side}.transl]: {n} frames, other side has {T}")
        valid = np.ones(T, bool) if h.get("valid") is None else np.asarray(h["valid"])
        if valid.shape != (T,) or valid.dtype != bool:
            raise StoreError(f"{what} [{side}.valid]: need ({T},) bool, got {valid.shape} {valid.dtype}")
        arrays[side] = {"valid": valid}
        for name, shp in HAND_FIELDS.items():
            a = np.asarray(h[name], dtype=np.float64)
            if name == "betas" and a.shape == (10,):
                a = np.broadcast_to(a, (T, 10))
            if name == "hand_pose" and a.shape == (T, 45):
                a = a.reshape(T, 15, 3)
            if a.shape != (T, *shp):
                raise StoreError(f"{what} [{side}.{name}]: need {(T, *shp)}, got {a.shape}")
            bad = ~np.isfinite(a).reshape(T, -1).all(1)
            if np.any(bad & valid):
                frames = np.flatnonzero(bad & valid)
                raise StoreError(f"{what} [{side}.{name}]: non-finite values (NaN/inf) in valid frames "
                                 f"{frames[:10].tolist()}{' ...' if len(frames) > 10 else ''}")
            a = np.where(np.isfinite(a), a, 0.0)
            arrays[side][name] = a.reshape(T, -1).astype(np.float32)
        if h.get(FIT_ERROR) is not None:
            e = np.asarray(h[FIT_ERROR], dtype=np.float64)
            if e.shape != (T,):
                raise StoreError(f"{what} [{side}.{FIT_ERROR}]: need ({T},), got {e.shape}")
            bad = np.flatnonzero(valid & ~(np.isfinite(e) & (e >= 0)))
            if len(bad):
                raise StoreError(f"{what} [{side}.{FIT_ERROR}]: not a finite error >= 0 in valid frames "
                                 f"{bad[:10].tolist()}{' ...' if len(bad) > 10 else ''}")
            arrays[side][FIT_ERROR] = np.where(valid, e, np.nan).astype(np.float32)
    if T == 0:
        raise StoreError(f"{what}: episode has no frames")
    import pyarrow as pa

    cols = {}
    for side in SIDES:
        for name, shp in HAND_FIELDS.items():
            a = arrays[side][name] if side in arrays else np.zeros((T, int(np.prod(shp))), np.float32)
            cols[f"{side}_{name}"] = _fixed_list(a)
        cols[f"{side}_valid"] = pa.array(arrays[side]["valid"] if side in arrays else np.zeros(T, bool))
        if FIT_ERROR in arrays.get(side, {}):
            cols[f"{side}_{FIT_ERROR}"] = pa.array(arrays[side][FIT_ERROR])
    return cols, [s for s in SIDES if s in arrays], T


def rigid_problems(M: np.ndarray, tol: float = 1e-3) -> str:
    """'' if every (..., 4, 4) is a finite rigid transform, else a description naming the bad frames."""
    M = np.asarray(M, dtype=np.float64).reshape(-1, 4, 4)
    finite = np.isfinite(M).reshape(len(M), -1).all(1)
    Ms = np.where(finite[:, None, None], M, np.eye(4))
    R = Ms[:, :3, :3]
    orth = np.abs(R @ np.swapaxes(R, 1, 2) - np.eye(3)).reshape(len(M), -1).max(1) < tol
    det = np.abs(np.linalg.det(R) - 1.0) < tol
    last = np.abs(Ms[:, 3] - [0, 0, 0, 1]).max(1) < 1e-6
    bad = np.flatnonzero(~(finite & orth & det & last))
    if len(bad) == 0:
        return ""
    return (f"not a finite rigid transform (orthonormal R, det +1, last row 0 0 0 1) in frames "
            f"{bad[:10].tolist()}{' ...' if len(bad) > 10 else ''}")


def scale_intrinsics(K: np.ndarray, scale_xy: tuple[float, float]) -> np.ndarray:
    """K of an image resized by (sx, sy) (pixel-centre convention: u' = (u + 0.5) * s - 0.5)."""
    sx, sy = scale_xy
    K = np.array(K, dtype=float)
    K[0, 0] *= sx
    K[0, 1] *= sx
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 1] *= sy
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K


@dataclass(frozen=True)
class Downscale:
    """How a width x height frame becomes one of short side ``size``: the region ``box`` = (x0, y0, x1, y1) of the
    frame [px, pixel edges; centred, within a pixel of the whole frame] resized by ``scale`` (the same along x and y)
    to ``width`` x ``height``. The long side is rounded down so that it differs from ``size`` by an even number:
    then the centred square of the small frame is the centred square of the frame, resampled."""

    width: int
    height: int
    box: tuple[float, float, float, float]
    scale: float

    @staticmethod
    def of(width: int, height: int, size: int) -> "Downscale":
        s = size / min(width, height)
        w, h = (size + 2 * math.floor((n * s - size) / 2 + 1e-9) for n in (width, height))
        bw, bh = w / s, h / s
        return Downscale(w, h, ((width - bw) / 2, (height - bh) / 2, (width + bw) / 2, (height + bh) / 2), s)

    def K(self, K: np.ndarray) -> np.ndarray:
        """Intrinsics of the small frame (pixel-centre convention: u' = (u - x0 + 0.5) * scale - 0.5)."""
        K = np.array(K, dtype=float)
        K[0, 2] -= self.box[0]
        K[1, 2] -= self.box[1]
        return scale_intrinsics(K, (self.scale, self.scale))

    def rgb(self, frame: np.ndarray) -> np.ndarray:
        """(H, W, 3) uint8 -> (height, width, 3) uint8, area average (PIL's box filter)."""
        from PIL import Image

        return np.asarray(Image.fromarray(frame).resize((self.width, self.height), Image.BOX, box=self.box))

    def depth(self, d: np.ndarray) -> np.ndarray:
        """(H, W) depth -> (height, width), nearest neighbour at the small pixels' centres (never mixes depths)."""
        return resize_nearest(d, (self.height, self.width), self.box)

    def enlarge(self, d: np.ndarray, out_hw: tuple[int, int]) -> np.ndarray:
        """(height, width) -> (H, W) nearest neighbour: the inverse of ``depth`` (which takes back exactly ``d``)."""
        H, W = out_hw
        ys = np.clip(np.floor((np.arange(H) + 0.5 - self.box[1]) * self.scale).astype(np.int64), 0, self.height - 1)
        xs = np.clip(np.floor((np.arange(W) + 0.5 - self.box[0]) * self.scale).astype(np.int64), 0, self.width - 1)
        return d[ys[:, None], xs[None, :]]


class _FrameSizer:
    """Keeps every frame of an episode the same size and applies the optional write-time downscale."""

    def __init__(self, max_short_side: int | None):
        self.max_short_side = max_short_side
        self.orig = None
        self.out = None
        self.down: Downscale | None = None

    def check(self, hw, what, k):
        hw = tuple(int(x) for x in hw)
        if self.orig is None:
            self.orig = hw
            h, w = hw
            if self.max_short_side and min(h, w) > self.max_short_side:
                self.down = Downscale.of(w, h, self.max_short_side)
                self.out = (self.down.height, self.down.width)
            else:
                self.out = hw
        elif hw != self.orig:
            raise StoreError(f"{what} [rgb]: frame {k} is {hw}, frame 0 is {self.orig}")

    def rgb(self, frame):
        return frame if self.down is None else self.down.rgb(frame)

    def depth(self, d):
        return d if self.down is None else self.down.depth(d)


def resize_nearest(a: np.ndarray, out_hw: tuple[int, int], box: tuple[float, float, float, float] | None = None
                   ) -> np.ndarray:
    """(H, W, ...) -> (h, w, ...) nearest neighbour at pixel centres (never mixes depth across edges); ``box``
    (x0, y0, x1, y1) [px edges]: the region of ``a`` to resize (default: all of it)."""
    H, W = a.shape[:2]
    h, w = out_hw
    x0, y0, x1, y1 = (0, 0, W, H) if box is None else box
    ys = np.clip(np.floor(y0 + (np.arange(h) + 0.5) * ((y1 - y0) / h)).astype(np.int64), 0, H - 1)
    xs = np.clip(np.floor(x0 + (np.arange(w) + 0.5) * ((x1 - x0) / w)).astype(np.int64), 0, W - 1)
    return a[ys[:, None], xs[None, :]]


# ---------------------------------------------------------------- reader


@dataclass(frozen=True, eq=False)
class FrameSet:
    """One set of an episode's frames: the stored frames (``size`` None) or the training-size copy of short side
    ``size`` (``store.copies`` in meta.json); ``K`` (3, 3) is that of its width x height pixels."""

    size: int | None
    width: int
    height: int
    K: np.ndarray
    rgb_file: str
    depth_file: str | None


class Episode:
    """Lazy reader of one stored episode. Hands and the frame table load on first use; frames are read one at a time."""

    def __init__(self, path: Path, dataset: str, episode: str, header: tuple[EpisodeMeta, dict] | None = None):
        """``header``: the checked (meta, store block) of an earlier reader of this unchanged folder (``Store.open``
        passes it, so reopening an episode costs no JSON parse and no checks)."""
        self.path = Path(path)
        self.what = f"{dataset}/{episode}"
        if header is not None:
            self.meta, self.store_info = header
            self.num_frames = int(self.store_info["num_frames"])
        else:
            self._read_meta(dataset, episode)
        self._table = None
        self._hands: dict[str, dict] = {}
        self._packs: dict[str, Pack] = {}
        self._sets: list[FrameSet] | None = None

    def _read_meta(self, dataset: str, episode: str) -> None:
        d = read_json(self.path / "meta.json", f"{self.what} [meta.json]")
        try:
            self.meta = EpisodeMeta.from_dict(d)
            self.store_info = d["store"]
            self.num_frames = int(self.store_info["num_frames"])
        except (KeyError, TypeError, ValueError) as e:
            raise StoreError(f"{self.what} [meta.json]: malformed ({e!r}) ({self.path / 'meta.json'})") from None
        probs = self.meta.problems(self.num_frames)
        if probs:
            raise StoreError(f"{self.what} [meta.json]: " + "; ".join(f"{f}: {m}" for f, m in probs)
                             + f" ({self.path / 'meta.json'})")
        if self.meta.episode != episode or self.meta.dataset != dataset:
            raise StoreError(f"{self.what} [meta.json]: says {self.meta.dataset}/{self.meta.episode} "
                             f"({self.path / 'meta.json'})")

    # -- per-frame table
    def _frames(self):
        if self._table is None:
            import pyarrow.parquet as pq

            p = self.path / "frames.parquet"
            if not p.exists():
                raise StoreError(f"{self.what} [frames.parquet]: file missing ({p})")
            try:
                t = pq.read_table(p)
            except Exception as e:
                raise StoreError(f"{self.what} [frames.parquet]: unreadable ({p}): {e}") from None
            if t.num_rows != self.num_frames:
                raise StoreError(f"{self.what} [frames.parquet]: {t.num_rows} rows, meta says {self.num_frames} "
                                 f"frames ({p})")
            self._table = t
        return self._table

    def column(self, name: str) -> np.ndarray:
        """One per-frame column as a numpy array (T, ...)."""
        t = self._frames()
        if name not in t.column_names:
            raise StoreError(f"{self.what} [{name}]: column missing in {self.path / 'frames.parquet'}")
        col = t.column(name).combine_chunks()
        if col.null_count:
            raise StoreError(f"{self.what} [{name}]: {col.null_count} missing (null) frames in "
                             f"{self.path / 'frames.parquet'}")
        if hasattr(col, "flatten") and hasattr(col.type, "list_size"):
            return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), col.type.list_size)
        return col.to_numpy(zero_copy_only=False)

    @property
    def timestamps(self) -> np.ndarray:
        return self.column("timestamp")

    def hands(self, side: str = "right") -> dict[str, np.ndarray]:
        """{"global_orient" (T,3), "hand_pose" (T,15,3), "betas" (T,10), "transl" (T,3) float32, "valid" (T,) bool}.

        Raises StoreError naming the field and frames if valid frames hold NaN/inf."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        if side not in self._hands:
            T = self.num_frames
            out = {"valid": self.column(f"{side}_valid").astype(bool)}
            for name, shp in HAND_FIELDS.items():
                a = self.column(f"{side}_{name}").astype(np.float32, copy=False)
                if a.shape != (T, int(np.prod(shp))):
                    raise StoreError(f"{self.what} [{side}_{name}]: shape {a.shape}, expected ({T}, {np.prod(shp)})")
                bad = np.flatnonzero(~np.isfinite(a).all(1) & out["valid"])
                if len(bad):
                    raise StoreError(f"{self.what} [{side}_{name}]: NaN/inf in valid frames "
                                     f"{bad[:10].tolist()}{' ...' if len(bad) > 10 else ''} "
                                     f"({self.path / 'frames.parquet'})")
                out[name] = a.reshape(T, *shp)
            self._hands[side] = out
        return self._hands[side]

    def fit_error_mm(self, side: str = "right") -> np.ndarray | None:
        """(T,) float32 mean joint error [mm] of a retargeted hand's fit (NaN where not valid), or None
        when the episode stores none for ``side`` (ground-truth hands, older stores)."""
        if side not in SIDES:
            raise ValueError(f"side must be one of {SIDES}, got {side!r}")
        t = self._frames()
        name = f"{side}_{FIT_ERROR}"
        if name not in t.column_names:
            return None
        return t.column(name).combine_chunks().to_numpy(zero_copy_only=False).astype(np.float32)

    @property
    def T_cam_from_world(self) -> np.ndarray | None:
        """(T, 4, 4) float64 world->camera transforms, or None when the source has none."""
        if "T_cam_from_world" not in self._frames().column_names:
            return None
        return self.column("T_cam_from_world").reshape(-1, 4, 4)

    @property
    def K(self) -> np.ndarray:
        return np.asarray(self.meta.K, dtype=np.float64)

    @property
    def has_depth(self) -> bool:
        return bool(self.store_info.get("depth_file"))

    # -- frames
    @functools.cached_property
    def full_frames(self) -> "FrameSet":
        """The stored frames (meta width, height, K; rgb.pack, depth.pack); built once (read per frame)."""
        return FrameSet(None, self.meta.width, self.meta.height, self.K, self.store_info.get("rgb_file", "rgb.pack"),
                        self.store_info.get("depth_file"))

    def frame_sets(self) -> list["FrameSet"]:
        """The stored frames, then the training-size copies (meta.json ``store.copies``) from small to large."""
        if self._sets is None:
            sets = [self.full_frames]
            for i, c in enumerate(self.store_info.get("copies") or []):
                try:
                    fs = FrameSet(int(c["size"]), int(c["width"]), int(c["height"]), np.asarray(c["K"], np.float64),
                                  c["rgb_file"], c.get("depth_file"))
                except (KeyError, TypeError, ValueError) as e:
                    raise StoreError(f"{self.what} [copies]: entry {i} malformed ({e!r}) ({self.path / 'meta.json'})"
                                     ) from None
                if fs.K.shape != (3, 3) or min(fs.width, fs.height) < 1 or (fs.depth_file is None) == self.has_depth:
                    raise StoreError(f"{self.what} [copies]: entry {i} needs width, height >= 1, a 3x3 K and depth "
                                     f"exactly when the episode has depth ({self.path / 'meta.json'})")
                sets.append(fs)
            self._sets = sets[:1] + sorted(sets[1:], key=lambda f: f.size)
        return self._sets

    def frames_for(self, size: int | None) -> "FrameSet":
        """The smallest copy whose short side is at least ``size`` (it fits a model input of size x size), else the
        stored frames (also for ``size`` None)."""
        if size is not None:
            for fs in self.frame_sets()[1:]:
                if min(fs.width, fs.height) >= size:
                    return fs
        return self.frame_sets()[0]

    def _pack(self, name: str, field: str) -> Pack:
        if not is_plain_name(name):
            raise StoreError(f"{self.what} [{field}]: {name!r} is not a file name inside {self.path} "
                             f"(paths are confined to the store)")
        pack = self._packs.get(name)
        if pack is None:
            pack = self._packs[name] = Pack(self.path / name)
        return pack

    def _read(self, kind: str, k: int, frames: "FrameSet | None" = None) -> bytes:
        fs = frames or self.full_frames
        if not 0 <= k < self.num_frames:
            raise IndexError(f"{self.what} [{kind}]: frame {k} out of range 0..{self.num_frames - 1}")
        pack = self._pack(fs.rgb_file if kind == "rgb" else fs.depth_file, f"{kind}_file")
        try:
            n = len(pack)
            if n != self.num_frames:
                raise StoreError(f"{self.what} [{kind}]: {pack.path.name} holds {n} frames, meta says "
                                 f"{self.num_frames} ({pack.path})")
            return pack.read(k)
        except PackError as e:
            raise StoreError(f"{self.what} [{kind}]: {e}") from None

    def rgb_image(self, k: int, min_size: tuple[int, int] | None = None, frames: "FrameSet | None" = None):
        """Frame k as a PIL image (of ``frames``, default the stored frames); ``min_size=(w, h)`` allows a faster
        reduced-size decode (>= min_size)."""
        fs = frames or self.full_frames
        try:
            im = decode_jpeg(self._read("rgb", k, fs), min_size)
        except StoreError:
            raise
        except Exception as e:
            raise StoreError(f"{self.what} [rgb]: frame {k} does not decode ({self.path / fs.rgb_file}): {e}") from None
        if min_size is None and im.size != (fs.width, fs.height):
            raise StoreError(f"{self.what} [rgb]: frame {k} of {fs.rgb_file} is {im.size[0]}x{im.size[1]}, meta says "
                             f"{fs.width}x{fs.height}")
        return im

    def rgb(self, k: int, frames: "FrameSet | None" = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB of frame k (of ``frames``, default the stored frames)."""
        return np.asarray(self.rgb_image(k, frames=frames))

    def depth_mm(self, k: int, frames: "FrameSet | None" = None) -> np.ndarray | None:
        """(H, W) uint16 millimetres of frame k (0 = no measurement), or None without depth."""
        if not self.has_depth:
            return None
        fs = frames or self.full_frames
        try:
            d = decode_depth_mm(self._read("depth", k, fs))
        except PackError as e:
            raise StoreError(f"{self.what} [depth]: frame {k}: {e}") from None
        if d.shape != (fs.height, fs.width):
            raise StoreError(f"{self.what} [depth]: frame {k} of {fs.depth_file} is {d.shape}, meta says "
                             f"{(fs.height, fs.width)}")
        return d

    def depth(self, k: int, frames: "FrameSet | None" = None) -> np.ndarray | None:
        """(H, W) float32 metres of frame k (0 = no measurement), or None without depth."""
        d = self.depth_mm(k, frames)
        return None if d is None else d.astype(np.float32) / np.float32(1000.0)

    def __repr__(self):
        return f"Episode({self.what}, {self.num_frames} frames, {self.path})"


class Store:
    """Read access to a store. Cheap to pickle (DataLoader workers reopen files lazily in their own process)."""

    def __init__(self, root: str | Path, cache_episodes: int = 64):
        self.root = Path(root)
        if not self.root.is_dir():
            raise StoreError(f"store {self.root}: folder missing")
        self.cache_episodes = cache_episodes
        self._indexes: dict[str, dict] = {}
        self._open: OrderedDict = OrderedDict()
        self._headers: dict = {}

    def __getstate__(self):
        return {"root": self.root, "cache_episodes": self.cache_episodes, "_indexes": self._indexes}

    def __setstate__(self, s):
        self.__dict__.update(s)
        self._open, self._headers = OrderedDict(), {}

    def datasets(self) -> list[str]:
        """Dataset names (folders holding index.json or episodes/)."""
        return sorted(d.name for d in self.root.iterdir()
                      if d.is_dir() and not d.name.startswith(".")
                      and ((d / "index.json").exists() or (d / "episodes").is_dir()))

    def index(self, dataset: str) -> dict:
        if dataset not in self._indexes:
            ds = self.root / dataset
            if not ds.is_dir():
                raise StoreError(f"dataset {dataset!r} not in store {self.root} (has {self.datasets()})")
            p = ds / "index.json"
            self._indexes[dataset] = read_json(p, f"{dataset} [index.json]") if p.exists() else scan_index(ds)
        return self._indexes[dataset]

    def episodes(self, dataset: str | list[str] | None = None, split: str | None = None) -> list[EpisodeRef]:
        """Episodes of one, several or all datasets, optionally of one split, sorted by (dataset, episode)."""
        names = self.datasets() if dataset is None else [dataset] if isinstance(dataset, str) else list(dataset)
        out = []
        for ds in names:
            for ep, e in self.index(ds)["episodes"].items():
                if split is None or e["split"] == split:
                    out.append(EpisodeRef(ds, ep, e["split"], int(e["num_frames"]), bool(e["has_depth"])))
        return out

    def episode_path(self, dataset: str, episode: str) -> Path:
        return self.root / dataset / "episodes" / episode_dirname(episode)

    def has_episode(self, dataset: str, episode: str) -> bool:
        return (self.episode_path(dataset, episode) / "meta.json").exists()

    def open(self, dataset: str | EpisodeRef, episode: str | None = None) -> Episode:
        """Episode reader (kept in a small LRU cache)."""
        if isinstance(dataset, EpisodeRef):
            dataset, episode = dataset.dataset, dataset.episode
        key = (dataset, episode)
        ep = self._open.get(key)
        if ep is None:
            path = self.episode_path(dataset, episode)
            if not path.is_dir():
                raise StoreError(f"{dataset}/{episode}: episode folder missing ({path})")
            # A training epoch visits far more episodes than the LRU holds open (each holds file handles); their
            # checked metadata is kept apart, keyed by meta.json's stat, so a reopen skips the parse and checks.
            meta = path / "meta.json"
            try:
                st = meta.stat()
                stamp = (st.st_mtime_ns, st.st_size)
            except FileNotFoundError:
                stamp = None
            cached = self._headers.get(key)
            ep = Episode(path, dataset, episode, cached[1] if cached and cached[0] == stamp else None)
            self._headers[key] = (stamp, (ep.meta, ep.store_info))
            self._open[key] = ep
            while len(self._open) > self.cache_episodes:
                self._open.popitem(last=False)
        else:
            self._open.move_to_end(key)
        return ep

    def __iter__(self) -> Iterator[EpisodeRef]:
        return iter(self.episodes())

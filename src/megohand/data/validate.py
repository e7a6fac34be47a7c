"""Check a store and list EVERY problem (never stop at the first), each naming dataset, episode and field.

Checked per dataset: store.json, index.json (readable; entries match the episode folders), stale temporary
folders. Per episode: meta.json (readable, every EpisodeMeta field valid, ids match the folder), frames.parquet
(present, columns, row count = num_frames, frame_index 0..T-1, timestamps finite and non-decreasing, hand
parameters finite, plausible rotations (|axis-angle| <= 10 rad: larger usually means degrees) and translations
(<= 10 m: larger usually means millimetres), T_cam_from_world rigid, the optional per-frame fit error of
retargeted hands (finite, >= 0 mm in valid frames)), frame size (>= 16 px), the frame files
(plain names inside the episode folder), rgb.pack and depth.pack (present, not
truncated, frame count = num_frames, no empty frame, every payload's header, and full decodes of the first,
middle and last frame, or of every frame with ``deep=True``); hands the converter recorded as approximate
(``extra.hand_fidelity``: the hand model could not represent the dataset's poses faithfully).

Severity: every problem is an error (the store is malformed) except ``hand_fidelity``, a **warning**
(``Problem.warning``): the store is sound and says what it holds, but its hands are approximate. The CLI
exits 0 on warnings alone and 1 with ``--strict`` (``docs/data_format.md``).
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from megohand.data.store import (
    FIT_ERROR,
    FORMAT,
    HAND_FIELDS,
    SIDES,
    EpisodeMeta,
    episode_dirname,
    episode_from_dirname,
    is_plain_name,
    rigid_problems,
)
from megohand.data.video import Pack, PackError, decode_depth_mm, decode_jpeg

MAX_ANGLE_RAD = 10.0
MAX_TRANSL_M = 10.0
MIN_SIDE_PX = 16


@dataclass(frozen=True)
class Problem:
    dataset: str
    episode: str | None
    field: str
    message: str
    warning: bool = False
    """True for what is recorded but not wrong (approximate hands); False for a malformed store."""

    def __str__(self) -> str:
        where = self.dataset if self.episode is None else f"{self.dataset}/{self.episode}"
        return f"{'WARNING ' if self.warning else ''}{where} [{self.field}]: {self.message}"


def _frames_str(idx: np.ndarray) -> str:
    idx = np.asarray(idx)
    return f"{idx[:10].tolist()}{' ...' if len(idx) > 10 else ''} ({len(idx)} frames)"


def validate_store(root: str | Path, datasets: list[str] | None = None, deep: bool = False,
                   progress: bool = False) -> list[Problem]:
    """All problems of the store at ``root`` (empty list: the store is sound)."""
    root = Path(root)
    out: list[Problem] = []
    if not root.is_dir():
        return [Problem(str(root), None, "store", "folder missing")]
    marker = root / "store.json"
    try:
        info = json.loads(marker.read_text())
        if info.get("format") != FORMAT:
            out.append(Problem(str(root), None, "store.json", f"format is {info.get('format')!r}, not {FORMAT!r}"))
    except (OSError, ValueError) as e:
        out.append(Problem(str(root), None, "store.json", f"missing or unreadable: {e}"))
    names = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if datasets is not None:
        for d in datasets:
            if d not in names:
                out.append(Problem(d, None, "dataset", f"not in store {root}"))
        names = [d for d in names if d in datasets]
    for ds in names:
        out += validate_dataset(root / ds, deep=deep, progress=progress)
    return out


def validate_dataset(ds_dir: Path, deep: bool = False, progress: bool = False) -> list[Problem]:
    ds = ds_dir.name
    out: list[Problem] = []
    ep_root = ds_dir / "episodes"
    on_disk = {}
    if ep_root.is_dir():
        for d in sorted(ep_root.iterdir()):
            if d.is_dir():
                on_disk[episode_from_dirname(d.name)] = d
    else:
        out.append(Problem(ds, None, "episodes", f"folder missing ({ep_root})"))
    index = None
    try:
        index = json.loads((ds_dir / "index.json").read_text())
        entries = index["episodes"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        out.append(Problem(ds, None, "index.json", f"missing or unreadable ({ds_dir / 'index.json'}): {e!r}; "
                                                   "rebuild it with StoreWriter(root).rebuild_index(dataset)"))
        entries = None
    if entries is not None:
        for ep in sorted(set(entries) - set(on_disk)):
            out.append(Problem(ds, ep, "index.json", "listed in the index but the episode folder is missing "
                                                     f"({ep_root / episode_dirname(ep)})"))
        for ep in sorted(set(on_disk) - set(entries)):
            out.append(Problem(ds, ep, "index.json", "episode folder not listed in the index"))
    tmp = ds_dir / ".tmp"
    if tmp.is_dir():
        stale = sorted(p.name for p in tmp.iterdir())
        if stale:
            out.append(Problem(ds, None, ".tmp", f"{len(stale)} unfinished episode writes left behind (killed writer?)"
                                                 f": {stale[:3]}; safe to delete when no writer runs"))
    it = on_disk.items()
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"validate {ds}", unit="ep")
    for ep, path in it:
        probs = validate_episode(path, ds, ep, deep=deep)
        out += probs
        if entries is not None and ep in entries and not any(p.field == "meta.json" for p in probs):
            try:
                meta = json.loads((path / "meta.json").read_text())
                e = entries[ep]
                if int(e["num_frames"]) != int(meta["store"]["num_frames"]) or e["split"] != meta["split"]:
                    out.append(Problem(ds, ep, "index.json", f"index says {e['num_frames']} frames / split "
                                       f"{e['split']!r}, meta.json says {meta['store']['num_frames']} / {meta['split']!r}"))
            except (OSError, ValueError, KeyError, TypeError):
                pass
    return out


def validate_episode(path: Path, dataset: str, episode: str, deep: bool = False) -> list[Problem]:
    """All problems of one episode folder."""
    P = lambda field, msg: Problem(dataset, episode, field, msg)  # noqa: E731
    out: list[Problem] = []
    # ---- meta.json
    try:
        d = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as e:
        return [P("meta.json", f"missing or unreadable ({path / 'meta.json'}): {e}")]
    store = d.get("store") if isinstance(d, dict) else None
    T = None
    if not isinstance(store, dict):
        out.append(P("meta.json", "no 'store' block (num_frames, files)"))
        store = {}
    else:
        T = store.get("num_frames")
        if not (isinstance(T, int) and T > 0):
            out.append(P("num_frames", f"must be a positive integer, got {T!r}"))
            T = None
    try:
        meta = EpisodeMeta.from_dict(d)
        out += [P(f, m) for f, m in meta.problems(T)]
        if meta.dataset != dataset:
            out.append(P("dataset", f"meta.json says {meta.dataset!r}, folder is {dataset!r}"))
        if meta.episode != episode:
            out.append(P("episode", f"meta.json says {meta.episode!r}, folder name decodes to {episode!r}"))
    except (TypeError, ValueError, KeyError) as e:
        out.append(P("meta.json", f"fields malformed: {e!r}"))
        meta = None
    if meta is not None and isinstance(meta.extra, dict) and meta.extra.get("hand_fidelity"):
        out.append(Problem(dataset, episode, "hand_fidelity",
                           f"hand model {meta.hand_model!r}: {meta.extra['hand_fidelity']}", warning=True))
    # ---- frames.parquet
    out += _check_frames(path / "frames.parquet", T, P)
    # ---- frames
    W = meta.width if meta is not None else None
    H = meta.height if meta is not None else None
    if W is not None and H is not None and 0 < min(W, H) < MIN_SIDE_PX:
        out.append(P("width/height", f"frames are {W}x{H} px, smaller than {MIN_SIDE_PX} px (a bad --max-short-side?)"))
    rgb = store.get("rgb_file", "rgb.pack")
    dfile = store.get("depth_file")
    for name, value in (("rgb_file", rgb), ("depth_file", dfile)):
        if value is not None and not is_plain_name(value):
            out.append(P(name, f"{value!r} is not a file name inside the episode folder (paths are confined to the store)"))
            rgb, dfile = (None, dfile) if name == "rgb_file" else (rgb, None)
    if rgb is not None:
        out += _check_pack(path / rgb, "rgb", T, (H, W), deep, P)
    dsrc = meta.depth_source if meta is not None else None
    if dfile:
        if dsrc == "none":
            out.append(P("depth_source", "is 'none' but the episode stores depth"))
        out += _check_pack(path / dfile, "depth", T, (H, W), deep, P)
    elif dsrc not in (None, "none"):
        out.append(P("depth", f"depth_source is {dsrc!r} but no depth file is recorded"))
    out += _check_copies(path, store.get("copies"), T, (H, W), bool(dfile), deep, P)
    return out


def _check_copies(path: Path, copies, T, hw, has_depth: bool, deep: bool, P) -> list[Problem]:
    """The optional training-size copies (meta.json ``store.copies``; stores without them have none to check)."""
    if copies is None:
        return []
    if not isinstance(copies, list):
        return [P("copies", f"must be a list, got {type(copies).__name__}")]
    out = []
    for i, c in enumerate(copies):
        field = f"copies[{i}]"
        try:
            size, w, h = int(c["size"]), int(c["width"]), int(c["height"])
            K = np.asarray(c["K"], dtype=float)
            rgb, depth = c["rgb_file"], c.get("depth_file")
        except (KeyError, TypeError, ValueError) as e:
            out.append(P(field, f"malformed entry ({e!r}): needs size, width, height, K, rgb_file, depth_file"))
            continue
        field = f"copies[{i}] size {size}"
        if min(w, h) != size or (None not in hw and size >= min(hw)):
            out.append(P(field, f"is {w}x{h}: expected a short side of {size} px, smaller than the stored frames' "
                                f"{hw[1]}x{hw[0]}"))
        if K.shape != (3, 3) or not np.isfinite(K).all() or K[0, 0] <= 0 or K[1, 1] <= 0:
            out.append(P(field, f"K must be finite 3x3 with fx, fy > 0, got {c['K']!r}"))
        if (depth is not None) != has_depth:
            out.append(P(field, "has depth" if depth else "has no depth, the stored frames do"))
        for kind, name in (("rgb", rgb), ("depth", depth)):
            if name is None:
                continue
            if not is_plain_name(name):
                out.append(P(field, f"{name!r} is not a file name inside the episode folder (paths are confined to "
                                    f"the store)"))
                continue
            out += _check_pack(path / name, kind, T, (h, w), deep, P, field=f"{field} {kind}")
    return out


def _check_frames(p: Path, T, P) -> list[Problem]:
    import pyarrow.parquet as pq

    if not p.exists():
        return [P("frames.parquet", f"file missing ({p})")]
    try:
        t = pq.read_table(p)
    except Exception as e:
        return [P("frames.parquet", f"unreadable ({p}): {e}")]
    out = []
    n = t.num_rows
    if T is not None and n != T:
        out.append(P("frames.parquet", f"{n} rows, meta says {T} frames (mismatched lengths)"))

    def col(name, width=None):
        if name not in t.column_names:
            out.append(P(name, f"column missing in {p.name}"))
            return None
        c = t.column(name).combine_chunks()
        if c.null_count:
            out.append(P(name, f"{c.null_count} missing (null) frames"))
            return None
        if width is not None:
            if getattr(c.type, "list_size", None) != width:
                out.append(P(name, f"expected fixed lists of {width}, got {c.type}"))
                return None
            return c.flatten().to_numpy(zero_copy_only=False).reshape(n, width).astype(np.float64)
        return c.to_numpy(zero_copy_only=False)

    fi = col("frame_index")
    if fi is not None and not np.array_equal(fi, np.arange(n)):
        gaps = np.flatnonzero(fi != np.arange(n))
        out.append(P("frame_index", f"not 0..{n - 1}: differs at {_frames_str(gaps)} (missing or repeated frames)"))
    ts = col("timestamp")
    if ts is not None:
        ts = ts.astype(np.float64)
        if not np.all(np.isfinite(ts)):
            out.append(P("timestamp", f"non-finite at {_frames_str(np.flatnonzero(~np.isfinite(ts)))}"))
        elif np.any(np.diff(ts) < 0):
            out.append(P("timestamp", f"decreasing at {_frames_str(np.flatnonzero(np.diff(ts) < 0) + 1)}"))
    for side in SIDES:
        valid = col(f"{side}_valid")
        for name, shp in HAND_FIELDS.items():
            a = col(f"{side}_{name}", int(np.prod(shp)))
            if a is None:
                continue
            bad = ~np.isfinite(a).all(1)
            if bad.any():
                out.append(P(f"{side}_{name}", f"NaN/inf at {_frames_str(np.flatnonzero(bad))}"))
            a = np.where(np.isfinite(a), a, 0.0)
            if name in ("global_orient", "hand_pose"):
                ang = np.linalg.norm(a.reshape(n, -1, 3), axis=-1).max(1)
                big = ang > MAX_ANGLE_RAD
                if big.any():
                    out.append(P(f"{side}_{name}", f"invalid rotation: axis-angle norm up to {ang.max():.1f} rad "
                                                   f"(> {MAX_ANGLE_RAD}; degrees?) at {_frames_str(np.flatnonzero(big))}"))
            if name == "transl":
                far = np.linalg.norm(a, axis=1) > MAX_TRANSL_M
                if far.any():
                    out.append(P(f"{side}_{name}", f"implausible translation > {MAX_TRANSL_M} m (millimetres?) at "
                                                   f"{_frames_str(np.flatnonzero(far))}"))
        if valid is not None and valid.dtype != bool:
            out.append(P(f"{side}_valid", f"must be bool, got {valid.dtype}"))
        if f"{side}_{FIT_ERROR}" in t.column_names:  # optional: retargeted hands' fit error [mm]
            out += _check_fit_error(t.column(f"{side}_{FIT_ERROR}").combine_chunks(), f"{side}_{FIT_ERROR}",
                                    valid if valid is not None and valid.dtype == bool else None, P)
    if "T_cam_from_world" in t.column_names:
        M = col("T_cam_from_world", 16)
        if M is not None:
            msg = rigid_problems(M.reshape(n, 4, 4))
            if msg:
                out.append(P("T_cam_from_world", f"invalid rotation: {msg}"))
    return out


def _check_fit_error(c, name: str, valid, P) -> list[Problem]:
    """The optional per-frame fit error [mm]: floats, finite and >= 0 in valid frames (NaN elsewhere)."""
    import pyarrow as pa

    if not pa.types.is_floating(c.type):
        return [P(name, f"must be float (mm), got {c.type}")]
    e = c.to_numpy(zero_copy_only=False).astype(np.float64)
    if valid is None:
        return []
    bad = valid & ~(np.isfinite(e) & (e >= 0))
    if bad.any():
        return [P(name, f"not a finite error >= 0 mm in valid frames at {_frames_str(np.flatnonzero(bad))}")]
    return []


def _check_pack(p: Path, kind: str, T, hw, deep: bool, P, field: str | None = None) -> list[Problem]:
    """Problems of one pack of ``kind`` "rgb" or "depth" (reported under ``field``, default ``kind``)."""
    if field is not None:
        P0 = P
        P = lambda _f, msg: P0(field, msg)  # noqa: E731
    if not p.exists():
        return [P(kind, f"file missing ({p})")]
    pack = Pack(p)
    try:
        n = len(pack)
        sizes = pack.frame_sizes()
    except PackError as e:
        return [P(kind, str(e))]
    out = []
    if T is not None and n != T:
        what = "truncated video: " if n < T else ""
        out.append(P(kind, f"{what}{p.name} holds {n} frames, meta says {T} (mismatched lengths)"))
    empty = np.flatnonzero(sizes == 0)
    if len(empty):
        out.append(P(kind, f"missing frames (empty payload) {_frames_str(empty)}"))
    H, W = hw
    ok = [k for k in range(n) if sizes[k] > 0]
    heads_bad = []
    fd = os.open(p, os.O_RDONLY)
    try:
        offs = np.concatenate([[0], np.cumsum(sizes)]) + 8
        for k in ok:
            a, b = int(offs[k]), int(offs[k + 1])
            if kind == "rgb":
                good = os.pread(fd, 2, a) == b"\xff\xd8" and os.pread(fd, 2, b - 2) == b"\xff\xd9"
            else:
                head = os.pread(fd, 8, a)
                good = len(head) == 8 and (H is None or struct.unpack("<II", head) == (H, W))
            if not good:
                heads_bad.append(k)
    finally:
        os.close(fd)
    if heads_bad:
        what = "not complete JPEG images" if kind == "rgb" else f"not {H}x{W} depth payloads"
        out.append(P(kind, f"corrupt frames ({what}) {_frames_str(np.array(heads_bad))}"))
    to_decode = ok if deep else sorted({ok[0], ok[len(ok) // 2], ok[-1]}) if ok else []
    failed = []
    for k in to_decode:
        if k in heads_bad:
            continue
        try:
            payload = pack.read(k)
            if kind == "rgb":
                im = decode_jpeg(payload)
                shape = (im.size[1], im.size[0])
            else:
                shape = decode_depth_mm(payload).shape
            if H is not None and shape != (H, W):
                failed.append((k, f"is {shape[0]}x{shape[1]}, meta says {H}x{W}"))
        except Exception as e:
            failed.append((k, f"does not decode: {e}"))
    for k, msg in failed[:10]:
        out.append(P(kind, f"frame {k} {msg}"))
    if len(failed) > 10:
        out.append(P(kind, f"... and {len(failed) - 10} more undecodable frames"))
    pack.close()
    return out

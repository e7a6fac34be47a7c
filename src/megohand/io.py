"""Every file megohand writes goes through here: atomic writes, the checkpoint folder format, safe reads.

Atomic means a reader sees the old file or the complete new one, never half of it, even after ``kill -9``
or a full disk: content goes to a temporary name in the same folder (``.<name>.<pid>.<rand>.tmp<suffix>``),
is fsynced, renamed over the target, and the folder entry is fsynced; on any error the temporary is
removed. Folders (checkpoints) are written the same way as a whole (:func:`atomic_dir`).

Checkpoint folder format (a loadable policy; ``megohand.models.policy.MEgoHandPolicy`` and the trainer
use :func:`write_checkpoint` / :func:`read_checkpoint`):

- ``model.safetensors``: the weights (no pickles anywhere);
- ``config.json``: the model configuration;
- ``normalizer.json``: the state/action normaliser, or ``null``;
- ``aux/``: files a backbone exports (tokenizer, frozen-encoder configs), optional;
- any further JSON / safetensors files a caller adds (training state, slim-checkpoint marker).

Reads of JSON and safetensors raise :class:`megohand.errors.UserError` naming the file and what to do
instead of a bare decoder error. Output checks (:func:`check_output_file`, :func:`check_output_dir`)
refuse to overwrite existing results unless asked to.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import uuid
from pathlib import Path
from typing import Any, Callable, Iterator

from megohand.errors import UserError

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
NORMALIZER = "normalizer.json"
AUX = "aux"


# ---------------------------------------------------------------- primitives
def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a folder entry (best effort: some file systems refuse folders)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def temp_name(path: str | os.PathLike) -> Path:
    """A unique hidden temporary name beside ``path`` that keeps its suffix (writers that choose the
    format by extension, such as PIL or PyAV, still see it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{path.suffix}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path to write ``path`` through; on success fsync + rename, on error remove it.

    >>> with atomic_path("out.png") as tmp:
    ...     image.save(tmp)
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        yield tmp
        fsync_path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_path(path.parent)


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Atomic write of ``data`` to ``path``; returns the path."""
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Atomic write of ``text`` (UTF-8) to ``path``; returns the path."""
    return write_bytes(path, text.encode())


def json_default(o):
    """numpy scalars/arrays and paths become plain JSON."""
    import numpy as np

    if isinstance(o, (np.ndarray, np.generic)):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"{type(o).__name__} is not JSON-serialisable: {o!r}")


def write_json(path: str | os.PathLike, obj: Any, indent: int | None = 1, allow_nan: bool = False) -> Path:
    """Atomic JSON write (numpy values and paths converted; NaN refused unless ``allow_nan``)."""
    text = json.dumps(obj, indent=indent, allow_nan=allow_nan, default=json_default)
    return write_text(path, text + "\n")


def read_json(path: str | os.PathLike, what: str = "JSON file", hint: str | None = None) -> Any:
    """Parse a JSON file; a missing or corrupt file raises UserError naming it (``what``: what the file is)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{what} not found", path=path, hint=hint)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{what} is not valid JSON ({e})", path=path, hint=hint) from None


def append_jsonl(path: str | os.PathLike, record: dict) -> None:
    """Append one JSON line to a log (flushed and fsynced; a crash can tear at most the last line)."""
    with open(path, "a") as f:
        f.write(json.dumps(record, default=json_default) + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Records of a JSON-lines log, skipping blank lines and torn or corrupt ones (a crash mid-write)."""
    out = []
    path = Path(path)
    if not path.is_file():
        return out
    for line in path.read_text(errors="replace").splitlines():
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict):
            out.append(rec)
    return out


# ---------------------------------------------------------------- safetensors
def save_safetensors(tensors: dict, path: str | os.PathLike, metadata: dict[str, str] | None = None) -> Path:
    """Atomic safetensors write of torch tensors (moved to CPU; tensors sharing storage are cloned, which
    safetensors otherwise refuses)."""
    from safetensors.torch import save_file

    seen, out = set(), {}
    for k, v in tensors.items():
        v = v.detach()
        key = (v.untyped_storage().data_ptr(), v.storage_offset(), tuple(v.shape)) if v.numel() else None
        out[k] = v.clone().contiguous() if (key in seen or not v.is_contiguous()) else v
        if key is not None:
            seen.add(key)
    with atomic_path(path) as tmp:
        save_file({k: v.cpu() for k, v in out.items()}, str(tmp), metadata=metadata)
        os.chmod(tmp, 0o644)  # safetensors creates the file private (0600); make it readable like our other files
    return Path(path)


def load_safetensors(path: str | os.PathLike, device: str = "cpu", with_metadata: bool = False):
    """Tensors of a safetensors file (and its metadata if asked); a missing or corrupt file raises UserError."""
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise UserError("weights file not found", path=path)
    try:
        with safe_open(str(path), framework="pt", device=device) as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise UserError(f"not a readable safetensors file ({' '.join(str(e).split())})", path=path,
                        hint="the file is truncated or corrupt: copy or write it again") from None
    return (tensors, meta) if with_metadata else tensors


# ---------------------------------------------------------------- folders
def fsync_tree(root: str | os.PathLike) -> None:
    """fsync every file and folder under ``root`` (so a renamed folder is durable, not just visible)."""
    for folder, _, files in os.walk(root):
        for name in files:
            fsync_path(os.path.join(folder, name))
        fsync_path(folder)


def replace_dir(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Move folder ``src`` to ``dst``, replacing ``dst`` if it exists (the old one is removed after the swap)."""
    src, dst = Path(src), Path(dst)
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}-{uuid.uuid4().hex[:6]}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(src, dst)
    fsync_path(dst.parent)


@contextlib.contextmanager
def atomic_dir(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield a fresh temporary folder beside ``directory``; on success its content is fsynced and it
    replaces ``directory``; on error it is removed and ``directory`` is left as it was."""
    directory = Path(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    try:
        yield tmp
        fsync_tree(tmp)
        replace_dir(tmp, directory)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextlib.contextmanager
def atomic_files(directory: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder inside ``directory`` to write a set of output files into; on success they are
    fsynced and moved into ``directory`` (its other files stay), on error none is: the set lands whole or not at
    all. The temporary folder is removed either way."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=directory))
    try:
        yield tmp
        fsync_tree(tmp)
        for f in sorted(tmp.iterdir()):
            os.replace(f, directory / f.name)
        fsync_path(directory)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def cleanup_on_error(folder: str | os.PathLike, keep: Callable[[Path], bool] = lambda p: False,
                     fresh: bool | None = None) -> Iterator[Path]:
    """Run a block that fills ``folder``; if the block created it and fails (or is interrupted) before
    ``keep(folder)`` holds (e.g. a first episode or checkpoint exists), remove it: no empty store or run
    folder is left behind. An existing folder is never removed. ``fresh``: whether the caller created it just
    before (None: whether it is missing now)."""
    folder = Path(folder)
    fresh = not folder.exists() if fresh is None else fresh
    try:
        yield folder
    except BaseException:
        if fresh and folder.is_dir() and not keep(folder):
            shutil.rmtree(folder, ignore_errors=True)
        raise


LOCK = ".lock"


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, option: str = "--out") -> Iterator[Path]:
    """Hold an exclusive lock on ``folder/.lock`` (created with the folder) for the block: a second process that
    asks for it gets a UserError naming the holder instead of writing its checkpoints and logs between this one's.
    The operating system drops the lock when its process dies (``kill -9`` too), so a stale ``.lock`` file never
    blocks. POSIX ``flock`` (advisory); where ``fcntl`` does not exist (Windows) the block runs unlocked."""
    try:
        import fcntl
    except ImportError:  # Windows: no flock; msvcrt's byte-range locks would need another protocol
        yield Path(folder)
        return
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "a process"
            raise UserError(f"{holder} is already writing into this folder", path=folder, field=option,
                            hint="wait for it to end or stop it (a stopped training run resumes from its last "
                                 "checkpoint), or choose another folder") from None
        f.truncate(0)
        f.write(f"process {os.getpid()}")
        f.flush()
        try:
            yield folder
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# ---------------------------------------------------------------- checkpoint folders
def write_checkpoint_files(folder: str | os.PathLike, weights: dict, config: dict, normalizer: dict | None,
                           export_aux: Callable[[Path], None] | None = None) -> None:
    """Write the checkpoint format (module docstring) into an existing folder ``folder``."""
    folder = Path(folder)
    save_safetensors(weights, folder / WEIGHTS)
    write_json(folder / CONFIG, config, indent=2)
    write_json(folder / NORMALIZER, normalizer, indent=2)
    if export_aux is not None:
        (folder / AUX).mkdir(exist_ok=True)
        export_aux(folder / AUX)


def write_checkpoint(directory: str | os.PathLike, weights: dict, config: dict, normalizer: dict | None,
                     export_aux: Callable[[Path], None] | None = None,
                     extra_json: dict[str, Any] | None = None) -> Path:
    """Write a whole checkpoint folder atomically (replacing ``directory``); ``extra_json``: name -> object."""
    with atomic_dir(directory) as tmp:
        write_checkpoint_files(tmp, weights, config, normalizer, export_aux)
        for name, obj in (extra_json or {}).items():
            write_json(tmp / name, obj, indent=2)
    return Path(directory)


def read_checkpoint(directory: str | os.PathLike) -> tuple[dict, dict | None]:
    """``(config, normalizer)`` of a checkpoint folder, after checking that its files are there
    (load the weights with :func:`load_safetensors` of ``directory / WEIGHTS``)."""
    directory = Path(directory)
    hint = "point --ckpt at a folder written by megohand train (OUT/model or OUT/checkpoints/step-N)"
    if not directory.is_dir():
        raise UserError("checkpoint folder not found", path=directory, hint=hint)
    for name in (WEIGHTS, CONFIG, NORMALIZER):
        if not (directory / name).is_file():
            raise UserError(f"not a megohand checkpoint: {name} is missing", path=directory, hint=hint)
    config = read_json(directory / CONFIG, "checkpoint config")
    if not isinstance(config, dict):
        raise UserError("checkpoint config is not a JSON object", path=directory / CONFIG)
    return config, read_json(directory / NORMALIZER, "checkpoint normaliser")


# ---------------------------------------------------------------- output checks
def check_output_file(path: str | os.PathLike, overwrite: bool, option: str = "--out") -> Path:
    """Refuse an existing ``path`` (unless ``overwrite``) or a folder in its place; create its parent and
    check that it is writable. Returns the path."""
    path = Path(path)
    if path.is_dir():
        raise UserError("is a folder", path=path, field=option, expected="a file name")
    if path.exists() and not overwrite:
        raise UserError("already exists", path=path, field=option, hint="pass --overwrite to replace it")
    _check_parent(path, option)
    return path


def check_output_dir(path: str | os.PathLike, overwrite: bool, option: str = "--out",
                     accept: Callable[[Path], bool] | None = None) -> Path:
    """Refuse a non-empty folder ``path`` unless ``overwrite`` or ``accept(path)`` (e.g. a store this verb
    resumes); refuse a file in its place; check that it can be created and written. Returns the path."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError("exists and is not a folder", path=path, field=option, expected="a folder (or a new name)")
    if path.is_dir() and any(path.iterdir()) and not overwrite and not (accept and accept(path)):
        raise UserError("folder is not empty", path=path, field=option,
                        hint="choose a new folder, or pass --overwrite to write into it")
    _check_parent(path / "x", option)
    return path


def _check_parent(path: Path, option: str) -> None:
    parent = path.parent
    existing = parent
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        raise UserError("is a file, not a folder", path=existing, field=option, expected="a folder path")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError("folder is not writable", path=existing, field=option, hint="choose a writable location")

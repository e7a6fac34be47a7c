"""Frame packs: many independently compressed frames in one file, with O(1) random access.

Why not H.264: training reads one random frame per sample. Even all-intra H.264 (GOP 1) costs a
container seek plus a decode (about 10 ms for 640x480 on one core, see docs/data_format.md), and a
long-GOP stream costs up to a whole GOP per read. A pack of JPEG frames costs one ``pread`` plus one
JPEG decode, and JPEG's DCT scaling (``PIL.Image.draft``) decodes straight at 1/2, 1/4 or 1/8 size
when the target (224 px) is much smaller than the frame.

File layout (all integers little-endian)::

    b"MGHPACK\\x01"                        8-byte magic
    payload 0 | payload 1 | ... | payload n-1
    offsets: (n + 1) x uint64             absolute file offsets; frame i = [offsets[i], offsets[i+1])
    footer: n uint64 | index_offset uint64 | codec 8 bytes | b"MGHPEND\\x01"   (32 bytes)

The footer is written last, so a file cut short (crash, truncated copy) has no valid footer and is
reported as truncated. A payload of 0 bytes is a missing frame.

Codecs: ``jpeg`` (RGB uint8, baseline JPEG) and ``zdepth16`` (depth: uint32 H, uint32 W, then zstd of
the raw uint16 little-endian millimetres; 0 = no measurement).
"""

from __future__ import annotations

import io
import os
import struct
from pathlib import Path

import numpy as np

from megohand.errors import UserError

MAGIC = b"MGHPACK\x01"
END_MAGIC = b"MGHPEND\x01"
FOOTER = struct.Struct("<QQ8s8s")
CODECS = ("jpeg", "zdepth16")
DEPTH_SCALE = 1000.0  # stored units per metre (millimetres)
DEPTH_MAX_M = 65.535


class PackError(UserError):
    """A frame pack is unreadable: truncated, a frame is missing, or a payload does not decode."""


def _codec_bytes(codec: str) -> bytes:
    if codec not in CODECS:
        raise ValueError(f"unknown pack codec {codec!r}; expected one of {CODECS}")
    return codec.encode().ljust(8, b"\0")


class PackWriter:
    """Append-only writer; ``close()`` writes the index and footer (the file is valid only then)."""

    def __init__(self, path: str | Path, codec: str):
        self.path = Path(path)
        self.codec = codec
        self._codec = _codec_bytes(codec)
        self._f = open(self.path, "wb")
        self._f.write(MAGIC)
        self._offsets = [len(MAGIC)]

    def append(self, payload: bytes) -> None:
        self._f.write(payload)
        self._offsets.append(self._offsets[-1] + len(payload))

    def __len__(self) -> int:
        return len(self._offsets) - 1

    def close(self) -> None:
        if self._f.closed:
            return
        n = len(self)
        index_offset = self._offsets[-1]
        self._f.write(np.asarray(self._offsets, dtype="<u8").tobytes())
        self._f.write(FOOTER.pack(n, index_offset, self._codec, END_MAGIC))
        self._f.flush()
        os.fsync(self._f.fileno())
        self._f.close()

    def abort(self) -> None:
        if not self._f.closed:
            self._f.close()


_CHECKED_INDEX: dict[tuple[str, int, int], tuple[np.ndarray, str]] = {}
"""Frame index and codec of packs already opened and checked in this process, by (path, mtime_ns, size): a
training loader reopens evicted episodes all the time, and each reopening would read and check the footer and
index again. A file that changes gets another key and is checked again."""
_CHECKED_INDEX_MAX = 16384


class Pack:
    """Read-only random access to a frame pack. Opens its file lazily, once per process (fork-safe)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None
        self._pid: int | None = None
        self._offsets: np.ndarray | None = None
        self.codec: str = ""

    def __getstate__(self):
        return {"path": self.path}

    def __setstate__(self, state):
        self.__init__(state["path"])

    def _open(self) -> int:
        if self._fd is not None and self._pid == os.getpid():
            return self._fd
        if not self.path.exists():
            raise PackError(f"{self.path}: file missing")
        fd = os.open(self.path, os.O_RDONLY)
        st = os.fstat(fd)
        size = st.st_size
        key = (str(self.path), st.st_mtime_ns, size)
        if key in _CHECKED_INDEX:  # reopened (a loader's episode cache evicted it): the checks passed already
            self._fd, self._pid, (self._offsets, self.codec) = fd, os.getpid(), _CHECKED_INDEX[key]
            return fd
        if size < len(MAGIC) + FOOTER.size or os.pread(fd, len(MAGIC), 0) != MAGIC:
            os.close(fd)
            raise PackError(f"{self.path}: not a frame pack or truncated ({size} bytes)")
        n, index_offset, codec, end = FOOTER.unpack(os.pread(fd, FOOTER.size, size - FOOTER.size))
        if end != END_MAGIC or index_offset + 8 * (n + 1) + FOOTER.size != size:
            os.close(fd)
            raise PackError(f"{self.path}: truncated or corrupt (no valid footer; the write did not finish)")
        offsets = np.frombuffer(os.pread(fd, 8 * (n + 1), index_offset), dtype="<u8").astype(np.int64)
        if offsets[0] != len(MAGIC) or offsets[-1] != index_offset or np.any(np.diff(offsets) < 0):
            os.close(fd)
            raise PackError(f"{self.path}: corrupt frame index")
        self._fd, self._pid, self._offsets = fd, os.getpid(), offsets
        self.codec = codec.rstrip(b"\0").decode()
        offsets.flags.writeable = False
        if len(_CHECKED_INDEX) >= _CHECKED_INDEX_MAX:
            del _CHECKED_INDEX[next(iter(_CHECKED_INDEX))]  # the oldest
        _CHECKED_INDEX[key] = (offsets, self.codec)
        return fd

    def __len__(self) -> int:
        self._open()
        return len(self._offsets) - 1

    def frame_sizes(self) -> np.ndarray:
        """(n,) payload sizes in bytes (0 = missing frame)."""
        self._open()
        return np.diff(self._offsets)

    def read(self, k: int) -> bytes:
        fd = self._open()
        n = len(self._offsets) - 1
        if not 0 <= k < n:
            raise PackError(f"{self.path}: frame {k} out of range (pack holds {n} frames)")
        a, b = int(self._offsets[k]), int(self._offsets[k + 1])
        if b == a:
            raise PackError(f"{self.path}: frame {k} missing (empty payload)")
        return os.pread(fd, b - a, a)

    def close(self) -> None:
        if self._fd is not None and self._pid == os.getpid():
            os.close(self._fd)
        self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass


# ---------------------------------------------------------------- codecs


def encode_jpeg(rgb: np.ndarray, quality: int = 90) -> bytes:
    """(H, W, 3) uint8 -> JPEG bytes (4:2:0)."""
    from PIL import Image

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"RGB frame must be (H, W, 3) uint8, got {rgb.shape} {rgb.dtype}")
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg(payload: bytes, min_size: tuple[int, int] | None = None):
    """JPEG bytes -> PIL image (RGB). ``min_size=(w, h)``: let libjpeg decode at the smallest power-of-two
    reduction whose size is still >= min_size (much faster for small targets)."""
    from PIL import Image

    im = Image.open(io.BytesIO(payload))
    if min_size is not None:
        im.draft("RGB", min_size)
    im = im.convert("RGB") if im.mode != "RGB" else im
    im.load()
    return im


def encode_depth(depth_m: np.ndarray, level: int = 3) -> bytes:
    """(H, W) float metres -> zdepth16 payload (uint16 mm; NaN, inf, <= 0 -> 0; clipped at 65.535 m)."""
    import zstandard

    d = np.asarray(depth_m)
    if d.ndim != 2:
        raise ValueError(f"depth frame must be (H, W), got {d.shape}")
    if d.dtype == np.uint16:
        mm = d
    else:
        d = np.where(np.isfinite(d), d, 0.0)
        mm = np.rint(np.clip(d, 0.0, DEPTH_MAX_M) * DEPTH_SCALE).astype("<u2")
    head = struct.pack("<II", *mm.shape)
    return head + zstandard.ZstdCompressor(level=level).compress(np.ascontiguousarray(mm, dtype="<u2").tobytes())


_DCTX = None


def decode_depth_mm(payload: bytes) -> np.ndarray:
    """zdepth16 payload -> (H, W) uint16 millimetres."""
    global _DCTX
    import zstandard

    if _DCTX is None:
        _DCTX = zstandard.ZstdDecompressor()
    if len(payload) < 8:
        raise PackError("depth payload too short")
    h, w = struct.unpack("<II", payload[:8])
    try:
        raw = _DCTX.decompress(payload[8:], max_output_size=2 * h * w)
    except zstandard.ZstdError as e:
        raise PackError(f"depth payload does not decode: {e}") from None
    if len(raw) != 2 * h * w:
        raise PackError(f"depth payload holds {len(raw)} bytes, expected {2 * h * w} for {h}x{w}")
    return np.frombuffer(raw, dtype="<u2").reshape(h, w)

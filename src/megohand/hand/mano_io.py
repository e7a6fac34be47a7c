"""Reading MANO-format hand assets safely: MANO ``.pkl`` (without chumpy) and ``.npz``.

* :func:`restricted_load` unpickles through an allow-list (numpy arrays and dtypes, scipy.sparse
  matrices, plain builtins). chumpy objects become :class:`ChumpyArray` stand-ins that keep only
  their array payload (``x``, else ``r``); nothing else from the file can run. Use it for every
  user or dataset pickle in the project.
* :func:`find_mano_file` resolves an argument (folder or file) or ``$MANO_MODEL_DIR``.
* :func:`load_asset` returns the MANO keys as plain numpy arrays, with the left-hand shapedirs fix.

Asset keys (MANO's): ``v_template`` (V,3), ``shapedirs`` (V,3,Nb), ``posedirs`` (V,3,135),
``J_regressor`` (16,V) dense or sparse, ``weights`` (V,16), ``kintree_table`` (2,16), ``f`` (F,3),
``hands_components`` (45,45), ``hands_mean`` (45,). Optional: ``tip_vertex_ids`` (5,), ``name``,
``is_mano``, ``license`` (the bundled open hand has them).
"""

from __future__ import annotations

import io
import os
import pickle
import zipfile
from pathlib import Path

import numpy as np

from megohand.hand.joints import MANO_PARENTS

MANO_ENV = "MANO_MODEL_DIR"
REQUIRED_KEYS = (
    "v_template",
    "shapedirs",
    "posedirs",
    "J_regressor",
    "weights",
    "kintree_table",
    "f",
    "hands_components",
    "hands_mean",
)


class ChumpyArray:
    """Safe stand-in for any chumpy class in a pickle: keeps only the array payload.

    chumpy pickles its objects as ``__dict__`` states. A leaf ``Ch`` holds its value in ``x``
    (or a cached ``r``); a ``Select`` (reordering) holds ``a``, ``idxs`` and maybe
    ``preferred_shape``, and is resolved as ``a.ravel()[idxs].reshape(preferred_shape)``.
    Everything else in the state is dropped; ``array`` is None when no payload was found.
    """

    def __setstate__(self, state):
        self.array = None
        if not isinstance(state, dict):
            return
        for key in ("x", "r"):
            val = _payload(state.get(key))
            if val is not None:
                self.array = val
                return
        a, idxs = _payload(state.get("a")), state.get("idxs")
        if a is not None and idxs is not None:
            out = a.reshape(-1)[np.asarray(idxs, dtype=np.int64)]
            shape = state.get("preferred_shape")
            self.array = out.reshape(tuple(shape)) if shape is not None else out


def _payload(val):
    if isinstance(val, ChumpyArray):
        return val.array
    if isinstance(val, np.ndarray) or (np.isscalar(val) and not isinstance(val, (str, bytes))):
        return np.asarray(val)
    return None


_NUMPY_ALLOWED = {
    "_reconstruct",
    "scalar",
    "ndarray",
    "dtype",
    "_frombuffer",
}
_BUILTINS_ALLOWED = {
    "object", "set", "frozenset", "slice", "complex", "bytearray", "list", "dict", "tuple", "int",
    "float", "bool", "str", "bytes", "range",
}
_SPARSE_ALLOWED = {"csc_matrix", "csr_matrix", "coo_matrix", "csc_array", "csr_array", "coo_array"}


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        top = module.split(".")[0]
        if top == "chumpy":
            return ChumpyArray
        if module in ("copy_reg", "copyreg") and name == "_reconstructor":
            import copyreg

            return copyreg._reconstructor
        if module == "_codecs" and name == "encode":  # how protocol-2 pickles from Python 3 store bytes
            return _latin1_encode
        if module in ("__builtin__", "builtins") and name in _BUILTINS_ALLOWED:
            import builtins

            return getattr(builtins, name)
        if module in ("numpy", "numpy.core.multiarray", "numpy._core.multiarray", "numpy.core.numeric",
                      "numpy._core.numeric") and name in _NUMPY_ALLOWED:
            if name == "_reconstruct":
                return _np_reconstruct()
            if name == "scalar":
                return _np_scalar()
            if name == "_frombuffer":
                return _np_frombuffer()
            return getattr(np, name)
        if module == "numpy" and name == "dtype":
            return np.dtype
        if module.startswith("numpy.dtypes") and name.endswith("DType"):
            import numpy.dtypes as npd

            return getattr(npd, name)
        if top == "scipy" and module.startswith("scipy.sparse") and name in _SPARSE_ALLOWED:
            import scipy.sparse as sp

            return getattr(sp, name)
        raise pickle.UnpicklingError(f"refusing to unpickle {module}.{name} (not on the allow-list)")


RestrictedUnpickler = _RestrictedUnpickler  # public name; subclass it to allow more (e.g. torch tensors)


def _latin1_encode(text: str, encoding: str = "latin1") -> bytes:
    if encoding.lower().replace("-", "") not in ("latin1", "utf8", "ascii"):
        raise pickle.UnpicklingError(f"refusing codec {encoding!r}")
    return text.encode(encoding)


def _np_reconstruct():
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # numpy < 2
        from numpy.core.multiarray import _reconstruct
    return _reconstruct


def _np_scalar():
    try:
        from numpy._core.multiarray import scalar
    except ImportError:
        from numpy.core.multiarray import scalar
    return scalar


def _np_frombuffer():
    try:
        from numpy._core.numeric import _frombuffer
    except ImportError:
        from numpy.core.numeric import _frombuffer
    return _frombuffer


def _unwrap(obj):
    """Replace ChumpyArray stand-ins by their arrays, recursively in dicts/lists/tuples."""
    if isinstance(obj, ChumpyArray):
        return obj.array
    if isinstance(obj, dict):
        return {k: _unwrap(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_unwrap(v) for v in obj)
    return obj


def restricted_load(path: str | os.PathLike | io.IOBase, encoding: str = "latin1"):
    """Unpickle ``path`` (file path or binary file object) allowing only numpy / scipy.sparse /
    builtins; chumpy objects become their plain arrays.

    Raises:
        ValueError: naming the file, when it is truncated, corrupt or holds a disallowed object.
    """
    name = str(path) if isinstance(path, (str, os.PathLike)) else getattr(path, "name", "<file object>")
    try:
        if isinstance(path, (str, os.PathLike)):
            with open(path, "rb") as f:
                obj = _RestrictedUnpickler(f, encoding=encoding).load()
        else:
            obj = _RestrictedUnpickler(path, encoding=encoding).load()
    except FileNotFoundError:
        raise
    except (pickle.UnpicklingError, EOFError, AttributeError, ImportError, IndexError, KeyError,
            TypeError, ValueError, UnicodeDecodeError, MemoryError) as e:
        raise ValueError(f"{name}: cannot read this pickle safely ({type(e).__name__}: {e})") from e
    return _unwrap(obj)


def find_mano_file(source: str | os.PathLike | None = None, side: str = "right") -> Path | None:
    """The MANO asset for ``side`` from ``source`` (file or folder), else ``$MANO_MODEL_DIR``.

    In a folder, looks for ``MANO_{RIGHT,LEFT}.pkl`` then ``.npz`` (also inside ``mano/`` or
    ``models/``). A file whose name names the other side (``MANO_LEFT.pkl`` for side="right",
    ``open_hand_right.npz`` for "left") stands for its sibling of the asked side in the same folder.
    Returns None when no source is given and the variable is unset.

    Raises:
        FileNotFoundError: a source was given (or the variable set) but holds no MANO file.
    """
    side = _check_side(side)
    if source is None:
        env = os.environ.get(MANO_ENV)
        if not env:
            return None
        source, origin = env, f"${MANO_ENV}"
    else:
        origin = "the given source"
    p = Path(source).expanduser()
    if p.is_file():
        other = "left" if side == "right" else "right"
        if other in p.name.lower():
            for a, b in ((other.upper(), side.upper()), (other, side), (other.title(), side.title())):
                if a in p.name:
                    sibling = p.with_name(p.name.replace(a, b))
                    if sibling.is_file():
                        return sibling
                    raise FileNotFoundError(f"{p} is a {other} hand asset and {sibling.name} (the {side} one) is missing")
        return p
    if p.is_dir():
        stem = f"MANO_{side.upper()}"
        for folder in (p, p / "mano", p / "models"):
            for ext in (".pkl", ".npz"):
                if (folder / (stem + ext)).is_file():
                    return folder / (stem + ext)
        raise FileNotFoundError(f"{p} ({origin}): no {stem}.pkl or {stem}.npz in it (or in mano/, models/)")
    raise FileNotFoundError(f"{p} ({origin}): no such file or folder")


def _check_side(side: str) -> str:
    if side not in ("right", "left"):
        raise ValueError(f"side must be 'right' or 'left', got {side!r}")
    return side


def load_npz(path: str | os.PathLike) -> dict:
    """A ``.npz`` as key -> array, without trusting pickles: plain arrays are read with
    ``allow_pickle=False``; object arrays (e.g. a scipy.sparse ``J_regressor`` saved by ``np.savez``)
    go through :func:`restricted_load`.

    Raises:
        ValueError: naming the file when it is not a readable npz or holds a disallowed object.
    """
    path = Path(path)
    out = {}
    try:
        with zipfile.ZipFile(path) as zf:
            for member in zf.namelist():
                if not member.endswith(".npy"):
                    continue
                key = member[: -len(".npy")]
                with zf.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (
                        np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                    )
                    shape, _, dtype = read_header(f)
                    if dtype.hasobject:
                        val = _unwrap(_RestrictedUnpickler(f, encoding="latin1").load())
                        out[key] = val.item() if isinstance(val, np.ndarray) and val.shape == () else val
                        continue
                with zf.open(member) as f:
                    out[key] = np.lib.format.read_array(f, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, pickle.UnpicklingError, AttributeError,
            TypeError, KeyError, IndexError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: cannot read this .npz safely ({type(e).__name__}: {e})") from e
    return out


def load_raw(path: str | os.PathLike) -> dict:
    """The raw key -> value dict of a ``.pkl`` (restricted unpickler) or ``.npz`` (:func:`load_npz`) asset."""
    path = Path(path)
    if path.suffix == ".npz":
        data = load_npz(path)
        if "J_regressor_data" in data and "J_regressor" not in data:  # sparse stored as parts
            import scipy.sparse as sp

            data["J_regressor"] = sp.csc_matrix(
                (data.pop("J_regressor_data"), data.pop("J_regressor_indices"), data.pop("J_regressor_indptr")),
                shape=tuple(data.pop("J_regressor_shape")),
            )
        return data
    data = restricted_load(path)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a dict of MANO arrays, got {type(data).__name__}")
    return data


def _dense(x) -> np.ndarray:
    if hasattr(x, "toarray"):
        x = x.toarray()
    return np.asarray(x)


def _scalar_str(x, default: str) -> str:
    if x is None:
        return default
    x = np.asarray(x)
    return str(x.item() if x.ndim == 0 else x)


def left_shapedirs_bug(left_shapedirs: np.ndarray, right_shapedirs: np.ndarray) -> bool:
    """True when MANO_LEFT's shapedirs have the known sign bug (vchoutas/smplx#48).

    The released left model ships the right model's shape space although its template is the
    mirror image in x, so the x components of its shapedirs have the wrong sign. The check is
    HOT3D's (``hot3d/data_loaders/mano_layer.py``): the x components of left and right shapedirs
    coincide, ``sum |left[:, 0, :] - right[:, 0, :]| < 1``. Then flip ``shapedirs[:, 0, :]`` of the
    left model. A correctly mirrored left model has x components of opposite sign and fails the check.
    """
    if left_shapedirs.shape != right_shapedirs.shape:
        return False
    return float(np.abs(left_shapedirs[:, 0, :] - right_shapedirs[:, 0, :]).sum()) < 1.0


def load_asset(path: str | os.PathLike, side: str | None = None, fix_left_shapedirs: bool = True) -> dict:
    """A MANO-format asset as plain arrays.

    Args:
        path: ``.pkl`` or ``.npz`` file.
        side: "right" or "left"; default: "left" when the file name has LEFT/left, else "right".
        fix_left_shapedirs: for a left model, compare its shapedirs with the right model next to it
            (``MANO_RIGHT.*`` in the same folder) and flip ``shapedirs[:, 0, :]`` when they coincide
            (:func:`left_shapedirs_bug`).
    Returns:
        dict with float64 ``v_template`` (V,3), ``shapedirs`` (V,3,Nb), ``posedirs`` (V,3,P),
        ``J_regressor`` (16,V) dense, ``weights`` (V,16), ``hands_components`` (45,45),
        ``hands_mean`` (45,); int64 ``faces`` (F,3), ``parents`` (16,), ``tip_vertex_ids`` (5,) or
        None; str ``name``, ``license``; bool ``is_mano``, ``left_fix_applied``; ``path``.
    Raises:
        ValueError: naming the file when a key is missing or has the wrong shape.
    """
    path = Path(path)
    if side is None:
        side = "left" if "left" in path.name.lower() else "right"
    side = _check_side(side)
    raw = load_raw(path)
    missing = [k for k in REQUIRED_KEYS if k not in raw or raw[k] is None]
    if missing:
        raise ValueError(f"{path}: not a MANO-format asset, missing keys {missing}")
    a = {k: _dense(raw[k]) for k in REQUIRED_KEYS}
    V = a["v_template"].shape[0]
    shapes = {
        "v_template": (V, 3),
        "shapedirs": (V, 3, None),
        "posedirs": (V, 3, None),
        "J_regressor": (None, V),
        "weights": (V, None),
        "kintree_table": (2, None),
        "f": (None, 3),
    }
    for k, want in shapes.items():
        got = a[k].shape
        if len(got) != len(want) or any(w is not None and w != g for w, g in zip(want, got)):
            raise ValueError(f"{path}: key {k!r} has shape {got}, expected {want} (None = any)")
    n_joints = a["J_regressor"].shape[0]
    if a["weights"].shape[1] != n_joints or a["kintree_table"].shape[1] != n_joints:
        raise ValueError(f"{path}: J_regressor, weights and kintree_table disagree on the number of joints")
    if a["posedirs"].shape[2] != 9 * (n_joints - 1):
        raise ValueError(f"{path}: posedirs has {a['posedirs'].shape[2]} pose bases, expected {9 * (n_joints - 1)}")

    out = {k: a[k].astype(np.float64) for k in ("v_template", "shapedirs", "posedirs", "J_regressor", "weights")}
    out["hands_components"] = a["hands_components"].astype(np.float64)
    out["hands_mean"] = a["hands_mean"].astype(np.float64).reshape(-1)
    out["faces"] = a["f"].astype(np.int64)
    parents = a["kintree_table"][0].astype(np.int64)
    parents[0] = -1  # MANO stores 2**32-1 (uint) for the root
    out["parents"] = parents
    tips = raw.get("tip_vertex_ids")
    out["tip_vertex_ids"] = None if tips is None else np.asarray(tips, dtype=np.int64).reshape(-1)
    is_mano = raw.get("is_mano")
    out["is_mano"] = True if is_mano is None else bool(np.asarray(is_mano).item())
    out["name"] = _scalar_str(raw.get("name"), f"MANO {side}" if out["is_mano"] else path.stem)
    out["license"] = _scalar_str(raw.get("license"), "MANO licence (mano.is.tue.mpg.de), not redistributable")
    out["side"] = side
    out["path"] = str(path)
    out["left_fix_applied"] = False
    if side == "left" and fix_left_shapedirs and out["is_mano"]:
        right = _sibling_right(path)
        if right is not None:
            right_sd = _dense(load_raw(right)["shapedirs"]).astype(np.float64)
            if left_shapedirs_bug(out["shapedirs"], right_sd):
                out["shapedirs"] = out["shapedirs"].copy()
                out["shapedirs"][:, 0, :] *= -1
                out["left_fix_applied"] = True
    return out


def _sibling_right(left_path: Path) -> Path | None:
    name = left_path.name
    for a, b in (("LEFT", "RIGHT"), ("left", "right"), ("Left", "Right")):
        if a in name:
            cand = left_path.with_name(name.replace(a, b))
            if cand.is_file():
                return cand
    return None


def save_npz(path: str | os.PathLike, asset: dict) -> None:
    """Write an asset (keys as :func:`load_asset` returns, or MANO's) as a MANO-format ``.npz``, atomically."""
    path = Path(path)
    keys = {
        "v_template": asset["v_template"],
        "shapedirs": asset["shapedirs"],
        "posedirs": asset["posedirs"],
        "J_regressor": _dense(asset["J_regressor"]),
        "weights": asset["weights"],
        "f": asset.get("faces", asset.get("f")),
        "hands_components": asset["hands_components"],
        "hands_mean": asset["hands_mean"],
    }
    if "parents" in asset:
        par = np.asarray(asset["parents"], dtype=np.int64)
        keys["kintree_table"] = np.stack([par, np.arange(len(par))])
    else:
        keys["kintree_table"] = np.asarray(asset["kintree_table"]).astype(np.int64)
    for k in ("tip_vertex_ids", "name", "is_mano", "license"):
        if asset.get(k) is not None:
            keys[k] = np.asarray(asset[k])
    from megohand import io

    with io.atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.savez(f, **keys)



def synthetic_mano(seed: int = 0, num_vertices: int = 778, num_faces: int = 1538) -> dict:
    """A random hand in MANO's exact pickle layout (for tests and benchmarks; not a hand shape).

    Template, blend shapes and PCA are random; ``J_regressor`` is a sparse csc matrix whose rows sum
    to 1, ``weights`` rows sum to 1, ``hands_components`` is orthonormal, ``kintree_table[0, 0]``
    is 2**32 - 1 as in the released files. Write it with ``pickle.dump(d, f, protocol=2)``.
    """
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    V = num_vertices
    Q, _ = np.linalg.qr(rng.normal(size=(45, 45)))
    W = rng.random((V, 16)) ** 4
    W /= W.sum(1, keepdims=True)
    Jr = rng.random((16, V)) * (rng.random((16, V)) < 0.05)
    Jr[:, 0] += 1e-3  # no empty row
    Jr /= Jr.sum(1, keepdims=True)
    kin = np.array([[2**32 - 1] + list(MANO_PARENTS[1:]), np.arange(16)], dtype=np.int64)
    return dict(
        v_template=rng.normal(size=(V, 3)) * 0.05,
        shapedirs=rng.normal(size=(V, 3, 10)) * 0.01,
        posedirs=rng.normal(size=(V, 3, 135)) * 0.01,
        J_regressor=sp.csc_matrix(Jr),
        weights=W,
        kintree_table=kin,
        f=rng.integers(0, V, (num_faces, 3)).astype(np.uint32),
        hands_components=Q.T.copy(),
        hands_mean=rng.normal(size=45) * 0.3,
        hands_coeffs=rng.normal(size=(100, 45)),
        J=Jr @ rng.normal(size=(V, 3)),
        bs_style="lbs",
        bs_type="lrotmin",
    )


def write_synthetic_mano(folder: str | os.PathLike, side: str = "right", seed: int = 0) -> dict:
    """Write :func:`synthetic_mano` as ``folder/MANO_{RIGHT,LEFT}.pkl`` (atomically); returns the dict."""
    data = synthetic_mano(seed)
    path = Path(folder) / f"MANO_{_check_side(side).upper()}.pkl"
    from megohand import io

    io.write_bytes(path, pickle.dumps(data, protocol=2))
    return data

"""Parity of our hand layer with smplx.MANO and body_models' MANO (test-only oracles), the
restricted MANO reader, and the left-hand shapedirs fix.

The MANO file is synthetic, in MANO's exact pickle format (``test_hand_model.synthetic_mano``).
"""

from __future__ import annotations

import os
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from megohand.hand import load_hand_model
from megohand.hand.conventions import mean_relative_to_flat, pca_to_full
from megohand.hand.mano_io import load_asset, restricted_load
from megohand.hand.mano_io import synthetic_mano, write_synthetic_mano
from test_hand_model import random_params

torch.set_num_threads(1)
smplx = pytest.importorskip("smplx")
TOL = 1e-5  # metres
TIPS = [744, 320, 443, 554, 671]


def smplx_mano(folder, side="right", **kw):
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return smplx.MANO(str(folder), is_rhand=side == "right", dtype=torch.float64, **kw)


@pytest.mark.parametrize("use_pca,ncomps", [(False, 45), (True, 6), (True, 15)])
@pytest.mark.parametrize("flat_hand_mean", [True, False])
def test_matches_smplx(tmp_path, use_pca, ncomps, flat_hand_mean):
    write_synthetic_mano(tmp_path)
    ours = load_hand_model(tmp_path, dtype=torch.float64)
    ref = smplx_mano(tmp_path, use_pca=use_pca, num_pca_comps=ncomps, flat_hand_mean=flat_hand_mean)
    go, hp, be, tr = random_params(8, seed=ncomps + flat_hand_mean)
    if use_pca:
        pose_in = torch.randn(8, ncomps, dtype=torch.float64)  # what a dataset stores
        mean = None if flat_hand_mean else ours.hands_mean
        pose45 = pca_to_full(pose_in, ncomps, ours.hands_components, hands_mean=mean)
    else:
        pose_in = hp.flatten(-2)
        pose45 = pose_in if flat_hand_mean else mean_relative_to_flat(pose_in, ours.hands_mean)
    r = ref(global_orient=go, hand_pose=pose_in, betas=be, transl=tr)
    o = ours(go, pose45, be, tr)
    torch.testing.assert_close(o.vertices, r.vertices, atol=TOL, rtol=0)
    torch.testing.assert_close(o.joints[:, :16], r.joints[:, :16], atol=TOL, rtol=0)
    torch.testing.assert_close(o.joints[:, 16:], r.vertices[:, TIPS], atol=TOL, rtol=0)


@pytest.mark.parametrize("flat_hand_mean", [True, False])
def test_matches_body_models(tmp_path, flat_hand_mean):
    bm = pytest.importorskip("body_models.mano.torch")
    write_synthetic_mano(tmp_path)
    ours = load_hand_model(tmp_path, dtype=torch.float64)
    # body_models stores its assets in float32 (mano/_io.py), so it is compared in float32
    ref = bm.MANO(model_path=tmp_path / "MANO_RIGHT.pkl", flat_hand_mean=flat_hand_mean)
    go, hp, be, tr = random_params(8, seed=5)
    pose45 = hp if flat_hand_mean else mean_relative_to_flat(hp, ours.hands_mean)
    kw = dict(wrist_rotation=go.float(), shape=be.float(), global_translation=tr.float())
    v = ref.forward_vertices(hp.float(), **kw).double()
    joints = ref.forward_skeleton(hp.float(), **kw)[..., :3, 3].double()
    o = ours(go, pose45, be, tr)
    torch.testing.assert_close(o.vertices, v, atol=TOL, rtol=0)
    torch.testing.assert_close(o.joints[:, :16], joints, atol=TOL, rtol=0)


def test_left_hand_shapedirs_fix(tmp_path, monkeypatch):
    bm = pytest.importorskip("body_models.mano.torch")
    right = write_synthetic_mano(tmp_path, "right", seed=0)
    left = synthetic_mano(seed=1)
    left["shapedirs"] = right["shapedirs"].copy()  # the released MANO_LEFT bug
    with open(tmp_path / "MANO_LEFT.pkl", "wb") as f:
        pickle.dump(left, f, protocol=2)
    ours = load_hand_model(tmp_path, side="left", dtype=torch.float64)
    assert ours.left_fix_applied and "flipped = True" in ours.describe()
    ref = smplx_mano(tmp_path, "left", use_pca=False, flat_hand_mean=True)
    with torch.no_grad():
        ref.shapedirs[:, 0, :] *= -1  # HOT3D's fix, applied to the oracle by hand
    go, hp, be, tr = random_params(4, seed=2)
    r = ref(global_orient=go, hand_pose=hp.flatten(-2), betas=be, transl=tr)
    torch.testing.assert_close(ours(go, hp, be, tr).vertices, r.vertices, atol=TOL, rtol=0)
    # body_models applies the same fix with flip_shapedirs=True, which it only allows for a model
    # found through its config file (side="left", no path): point a private config at our file.
    import body_models._config as bm_config

    cfg = tmp_path / "body_models_config.toml"
    cfg.write_text(f'[paths]\nmano-left = "{tmp_path / "MANO_LEFT.pkl"}"\n')
    monkeypatch.setattr(bm_config, "CONFIG_FILE", cfg)
    bref = bm.MANO(side="left", flat_hand_mean=True, flip_shapedirs=True)
    kw = dict(wrist_rotation=go.float(), shape=be.float(), global_translation=tr.float())
    v = bref.forward_vertices(hp.float(), **kw).double()
    torch.testing.assert_close(ours(go, hp, be, tr).vertices, v, atol=TOL, rtol=0)
    # a correctly mirrored left model (x components of opposite sign) is left alone
    left["shapedirs"] = right["shapedirs"] * np.array([[-1.0], [1.0], [1.0]])
    with open(tmp_path / "MANO_LEFT.pkl", "wb") as f:
        pickle.dump(left, f, protocol=2)
    ours = load_hand_model(tmp_path, side="left", dtype=torch.float64)
    assert not ours.left_fix_applied
    np.testing.assert_allclose(ours.shapedirs.numpy(), left["shapedirs"])


def _pickle_with_fake_chumpy(path: Path, data: dict) -> None:
    """Write ``data`` with its arrays wrapped in objects whose class is chumpy.ch.Ch /
    chumpy.reordering.Select, as the released MANO pickles have (chumpy is not installed)."""
    mods = {}
    for modname, clsname in (("chumpy", None), ("chumpy.ch", "Ch"), ("chumpy.reordering", "Select")):
        m = types.ModuleType(modname)
        if clsname:
            cls = type(clsname, (), {"__module__": modname})
            setattr(m, clsname, cls)
        mods[modname] = m
    old = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        Ch, Select = mods["chumpy.ch"].Ch, mods["chumpy.reordering"].Select
        out = dict(data)
        leaf = Ch()
        leaf.__dict__.update(x=data["shapedirs"], _dirty_vars=set(), label="sd")
        sel = Select()
        base = Ch()
        base.__dict__.update(x=data["posedirs"].reshape(-1)[::-1].copy())
        sel.__dict__.update(a=base, idxs=np.arange(data["posedirs"].size)[::-1], preferred_shape=data["posedirs"].shape)
        out["shapedirs"], out["posedirs"] = leaf, sel
        with open(path, "wb") as f:
            pickle.dump(out, f, protocol=2)
    finally:
        for k, v in old.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def test_restricted_load_reads_chumpy_without_chumpy(tmp_path):
    data = synthetic_mano(0)
    _pickle_with_fake_chumpy(tmp_path / "MANO_RIGHT.pkl", data)
    assert "chumpy" not in sys.modules
    raw = restricted_load(tmp_path / "MANO_RIGHT.pkl")
    np.testing.assert_array_equal(raw["shapedirs"], data["shapedirs"])
    np.testing.assert_array_equal(raw["posedirs"], data["posedirs"])
    np.testing.assert_array_equal(raw["J_regressor"].toarray(), data["J_regressor"].toarray())
    assert raw["bs_style"] == "lbs"
    asset = load_asset(tmp_path / "MANO_RIGHT.pkl")
    np.testing.assert_array_equal(asset["J_regressor"], data["J_regressor"].toarray())
    np.testing.assert_array_equal(asset["parents"], [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14])


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned_by_pickle",))


def test_restricted_load_refuses_code_and_names_bad_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    evil = tmp_path / "MANO_RIGHT.pkl"
    with open(evil, "wb") as f:
        pickle.dump({"v_template": _Evil()}, f, protocol=2)
    with pytest.raises(ValueError, match="MANO_RIGHT.pkl.*refusing"):
        load_hand_model(tmp_path)
    assert not (tmp_path / "pwned_by_pickle").exists()
    # truncated
    good = tmp_path / "good" / "MANO_RIGHT.pkl"
    good.parent.mkdir()
    write_synthetic_mano(good.parent)
    blob = good.read_bytes()
    trunc = tmp_path / "trunc" / "MANO_RIGHT.pkl"
    trunc.parent.mkdir()
    trunc.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ValueError, match="trunc/MANO_RIGHT.pkl"):
        load_hand_model(trunc.parent)
    # garbage and the wrong content
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle at all")
    with pytest.raises(ValueError, match="junk.pkl"):
        load_hand_model(junk)
    wrong = tmp_path / "wrong.pkl"
    with open(wrong, "wb") as f:
        pickle.dump({"v_template": np.zeros((10, 3))}, f)
    with pytest.raises(ValueError, match="wrong.pkl.*missing keys"):
        load_hand_model(wrong)
    badnpz = tmp_path / "bad.npz"
    badnpz.write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(ValueError, match="bad.npz"):
        load_hand_model(badnpz)


@pytest.mark.skipif(not os.environ.get("MANO_MODEL_DIR"), reason="MANO_MODEL_DIR not set (real MANO files)")
@pytest.mark.parametrize("side", ["right", "left"])
def test_real_mano_matches_smplx(side):
    folder = Path(os.environ["MANO_MODEL_DIR"])
    ours = load_hand_model(folder, side=side, dtype=torch.float64)
    assert ours.is_mano and ours.num_vertices == 778 and ours.faces.shape == (1538, 3)
    ref = smplx_mano(ours.source and Path(ours.source).parent, side, use_pca=True, num_pca_comps=15,
                     flat_hand_mean=False)
    if side == "left" and ours.left_fix_applied:
        with torch.no_grad():
            ref.shapedirs[:, 0, :] *= -1
    go, _, be, tr = random_params(6, seed=7)
    pca = torch.randn(6, 15, dtype=torch.float64)
    r = ref(global_orient=go, hand_pose=pca, betas=be, transl=tr)
    o = ours(go, pca_to_full(pca, 15, ours.hands_components, ours.hands_mean), be, tr)
    torch.testing.assert_close(o.vertices, r.vertices, atol=TOL, rtol=0)
    torch.testing.assert_close(o.joints[:, 16:], r.vertices[:, TIPS], atol=TOL, rtol=0)


def test_converted_npz_with_sparse_regressor(tmp_path):
    """A MANO .npz written by np.savez(**pickle_dict) keeps J_regressor as a pickled sparse object."""
    data = synthetic_mano(0)
    np.savez(tmp_path / "MANO_RIGHT.npz", **data)
    ours = load_hand_model(tmp_path, dtype=torch.float64)
    assert ours.source.endswith("MANO_RIGHT.npz")
    (tmp_path / "pkl").mkdir()
    write_synthetic_mano(tmp_path / "pkl")
    ref = smplx_mano(tmp_path / "pkl", use_pca=False, flat_hand_mean=True)
    go, hp, be, tr = random_params(3, seed=9)
    r = ref(global_orient=go, hand_pose=hp.flatten(-2), betas=be, transl=tr)
    torch.testing.assert_close(ours(go, hp, be, tr).vertices, r.vertices, atol=TOL, rtol=0)
    # an object array holding something outside the allow-list is refused, naming the file
    np.savez(tmp_path / "evil.npz", **{**data, "J_regressor": np.array(_Evil(), dtype=object)})
    with pytest.raises(ValueError, match="evil.npz.*refusing"):
        load_hand_model(tmp_path / "evil.npz")

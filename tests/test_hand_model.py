"""The hand layer against a float64 numpy LBS reference written from MANO's equations.

The asset is synthetic, in MANO's exact pickle format (``megohand.hand.mano_io.synthetic_mano``).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from scipy.spatial.transform import Rotation

from megohand.hand import HandOutput, load_hand_model
from megohand.hand.mano_io import load_asset, save_npz, synthetic_mano, write_synthetic_mano
from megohand.hand.vector import HandParams

torch.set_num_threads(1)
PARENTS = [-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]
MANO_TIPS = [744, 320, 443, 554, 671]


def reference_lbs(d: dict, go, hp, betas, transl, tips=MANO_TIPS):
    """float64 numpy MANO (one hand): Rodrigues by scipy, sequential 4x4 chain."""
    Jr = d["J_regressor"].toarray() if sp.issparse(d["J_regressor"]) else d["J_regressor"]
    v_shaped = d["v_template"] + d["shapedirs"] @ betas
    J = Jr @ v_shaped
    R = Rotation.from_rotvec(np.concatenate([go[None], hp.reshape(15, 3)])).as_matrix()
    feat = (R[1:] - np.eye(3)).reshape(-1)
    v_posed = v_shaped + d["posedirs"] @ feat
    G = np.zeros((16, 4, 4))
    for j in range(16):
        T = np.eye(4)
        T[:3, :3] = R[j]
        T[:3, 3] = J[j] - (J[PARENTS[j]] if j else 0)
        G[j] = T if j == 0 else G[PARENTS[j]] @ T
    joints = G[:, :3, 3].copy()
    A = G.copy()
    A[:, :3, 3] -= np.einsum("jab,jb->ja", G[:, :3, :3], J)
    Tv = np.einsum("vj,jab->vab", d["weights"], A)
    verts = np.einsum("vab,vb->va", Tv[:, :3, :3], v_posed) + Tv[:, :3, 3]
    joints = np.concatenate([joints, verts[tips]]) + transl
    return verts + transl, joints


@pytest.fixture
def mano_dir(tmp_path):
    write_synthetic_mano(tmp_path)
    return tmp_path


def random_params(B, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, 3, generator=g, dtype=dtype),
        torch.randn(B, 15, 3, generator=g, dtype=dtype) * 0.5,
        torch.randn(B, 10, generator=g, dtype=dtype),
        torch.randn(B, 3, generator=g, dtype=dtype) * 0.3,
    )


def test_matches_numpy_reference(mano_dir):
    d = synthetic_mano(0)
    hand = load_hand_model(mano_dir, dtype=torch.float64)
    go, hp, be, tr = random_params(5)
    out = hand(go, hp, be, tr)
    assert isinstance(out, HandOutput)
    assert out.vertices.shape == (5, 778, 3) and out.joints.shape == (5, 21, 3)
    for b in range(5):
        v, j = reference_lbs(d, go[b].numpy(), hp[b].numpy(), be[b].numpy(), tr[b].numpy())
        np.testing.assert_allclose(out.vertices[b].numpy(), v, atol=1e-10)
        np.testing.assert_allclose(out.joints[b].numpy(), j, atol=1e-10)


def test_rest_joints_and_wrist_pivot(mano_dir):
    d = synthetic_mano(0)
    hand = load_hand_model(mano_dir, dtype=torch.float64)
    go, hp, be, tr = random_params(4)
    J = hand.rest_joints(be)
    Jr = d["J_regressor"].toarray()
    ref = np.einsum("jv,bvk->bjk", Jr, d["v_template"] + np.einsum("vkl,bl->bvk", d["shapedirs"], be.numpy()))
    np.testing.assert_allclose(J.numpy(), ref, atol=1e-12)
    # the posed wrist joint sits at J0(betas) + transl whatever the rotations
    out = hand(go, hp, be, tr)
    np.testing.assert_allclose(out.joints[:, 0].numpy(), (J[:, 0] + tr).numpy(), atol=1e-12)


def test_rotation_formats_batch_shapes_and_defaults(mano_dir):
    from megohand.geometry.rotations import axis_angle_to_matrix, matrix_to_rot6d

    hand = load_hand_model(mano_dir, dtype=torch.float64)
    go, hp, be, tr = random_params(6)
    ref = hand(go, hp, be, tr)
    Rg, Rh = axis_angle_to_matrix(go), axis_angle_to_matrix(hp)
    for rot, a, b in [("matrix", Rg, Rh), ("rot6d", matrix_to_rot6d(Rg), matrix_to_rot6d(Rh))]:
        out = hand(a, b, be, tr, rot=rot)
        torch.testing.assert_close(out.vertices, ref.vertices, atol=1e-10, rtol=0)
    torch.testing.assert_close(hand(go, hp.flatten(-2), be, tr).vertices, ref.vertices)
    out = hand(go.view(2, 3, 3), hp.view(2, 3, 15, 3), be.view(2, 3, 10), tr.view(2, 3, 3))
    torch.testing.assert_close(out.vertices.view(6, 778, 3), ref.vertices)
    # broadcasting: one shape for all, no transl
    out = hand(go, hp, be[:1], None)
    ref0 = hand(go, hp, be[:1].expand(6, 10), torch.zeros(6, 3, dtype=torch.float64))
    torch.testing.assert_close(out.joints, ref0.joints)
    # zero betas default
    torch.testing.assert_close(hand(go, hp).joints, hand(go, hp, torch.zeros(6, 10, dtype=torch.float64)).joints)
    # HandParams entry point
    torch.testing.assert_close(hand.forward_params(HandParams(go, hp, be, tr)).joints, ref.joints)
    with pytest.raises(ValueError, match="rotation"):
        hand(go, hp[:, :14], be, tr)


def test_float32_and_gradients(mano_dir):
    hand64 = load_hand_model(mano_dir, dtype=torch.float64)
    hand32 = load_hand_model(mano_dir)
    assert hand32.v_template.dtype == torch.float32
    go, hp, be, tr = random_params(3)
    out32 = hand32(go.float(), hp.float(), be.float(), tr.float())
    assert out32.vertices.dtype == torch.float32
    torch.testing.assert_close(out32.vertices.double(), hand64(go, hp, be, tr).vertices, atol=1e-5, rtol=0)
    params = [x.clone().requires_grad_() for x in random_params(2)]
    assert torch.autograd.gradcheck(lambda *p: hand64(*p).joints, params, eps=1e-6, atol=1e-5)


def test_faces_info_and_tips(mano_dir, tmp_path):
    hand = load_hand_model(mano_dir)
    assert hand.faces.dtype == torch.long and hand.faces.shape == (1538, 3)
    assert hand.num_vertices == 778 and hand.is_mano and "MANO" in hand.name
    assert hand.hands_mean.shape == (45,)
    assert "778" in hand.describe()
    # an npz with its own tip ids and open-hand metadata
    asset = load_asset(mano_dir / "MANO_RIGHT.pkl")
    asset.update(tip_vertex_ids=np.array([1, 2, 3, 4, 5]), name="test hand", is_mano=False, license="CC0")
    save_npz(tmp_path / "hand.npz", asset)
    h2 = load_hand_model(tmp_path / "hand.npz", dtype=torch.float64)
    assert not h2.is_mano and h2.name == "test hand" and "NOT MANO" in h2.describe()
    go, hp, be, tr = random_params(2)
    out = h2(go, hp, be, tr)
    torch.testing.assert_close(out.joints[:, 16:], out.vertices[:, [1, 2, 3, 4, 5]])
    torch.testing.assert_close(out.vertices, load_hand_model(mano_dir, dtype=torch.float64)(go, hp, be, tr).vertices)


def test_missing_assets_give_clear_errors(tmp_path, monkeypatch):
    monkeypatch.delenv("MANO_MODEL_DIR", raising=False)
    with pytest.raises(FileNotFoundError, match="MANO_RIGHT"):
        load_hand_model(tmp_path)
    monkeypatch.setenv("MANO_MODEL_DIR", str(tmp_path / "nope"))
    with pytest.raises(FileNotFoundError, match="MANO_MODEL_DIR"):
        load_hand_model()
    monkeypatch.setattr("megohand.hand.model.ASSET_DIR", tmp_path / "no_assets")
    monkeypatch.delenv("MANO_MODEL_DIR")
    with pytest.raises(FileNotFoundError, match="open_hand_right.npz"):
        load_hand_model()


def test_env_variable_and_left_side(tmp_path, monkeypatch):
    write_synthetic_mano(tmp_path, "left", seed=3)
    monkeypatch.setenv("MANO_MODEL_DIR", str(tmp_path))
    hand = load_hand_model(side="left", dtype=torch.float64)
    assert hand.side == "left" and hand.source.endswith("MANO_LEFT.pkl")
    with pytest.raises(FileNotFoundError, match="MANO_RIGHT.pkl"):
        load_hand_model(tmp_path / "MANO_LEFT.pkl")  # asks for the right hand: its sibling is missing
    write_synthetic_mano(tmp_path, "right", seed=0)
    right = load_hand_model(tmp_path / "MANO_LEFT.pkl", side="right")
    assert right.source.endswith("MANO_RIGHT.pkl")
    d = synthetic_mano(3)
    go, hp, be, tr = random_params(1)
    v, _ = reference_lbs(d, go[0].numpy(), hp[0].numpy(), be[0].numpy(), tr[0].numpy())
    np.testing.assert_allclose(hand(go, hp, be, tr).vertices[0].numpy(), v, atol=1e-10)


def test_large_batch_blocks_match_reference(mano_dir):
    """Batches above the CPU block size are computed in blocks: same result as the reference."""
    d = synthetic_mano(0)
    hand = load_hand_model(mano_dir, dtype=torch.float64)
    go, hp, be, tr = random_params(300, seed=4)
    out = hand(go, hp, be, tr)
    assert out.vertices.is_contiguous() and out.joints.shape == (300, 21, 3)
    for b in (0, 63, 64, 199, 299):
        v, j = reference_lbs(d, go[b].numpy(), hp[b].numpy(), be[b].numpy(), tr[b].numpy())
        np.testing.assert_allclose(out.vertices[b].numpy(), v, atol=1e-10)
        np.testing.assert_allclose(out.joints[b].numpy(), j, atol=1e-10)
    g = hand(go[:150].requires_grad_(), hp[:150], be[:150], tr[:150]).vertices.sum()
    g.backward()


def test_fused_rodrigues_matches_scipy_and_roma():
    import roma

    from megohand.hand.lbs import rodrigues, rodrigues_basis

    rng = np.random.default_rng(5)
    axes = rng.normal(size=(400, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    angles = np.concatenate([rng.uniform(0, np.pi, 300), [0, 1e-12, 1e-8, 1e-6, 1e-4, 1e-2], np.pi - rng.uniform(0, 1e-3, 94)])
    aa = axes * angles[:, None]
    basis = rodrigues_basis(torch.float64)
    R = rodrigues(torch.as_tensor(aa), basis).numpy()
    np.testing.assert_allclose(R, Rotation.from_rotvec(aa).as_matrix(), atol=1e-14)
    R32 = rodrigues(torch.as_tensor(aa, dtype=torch.float32), rodrigues_basis()).double()
    torch.testing.assert_close(R32, roma.rotvec_to_rotmat(torch.as_tensor(aa)), atol=1e-6, rtol=0)
    # gradients at and near zero angle agree with finite differences
    for scale in (0.0, 1e-7, 0.3):
        x = (torch.as_tensor(aa[:4]) * scale).requires_grad_()
        assert torch.autograd.gradcheck(lambda v: rodrigues(v, basis), (x,), eps=1e-6, atol=1e-6)


def test_bundled_open_hand_loads_when_present(monkeypatch):
    from megohand.hand.model import open_hand_path

    if not open_hand_path("right").is_file():
        pytest.skip("bundled open hand asset not built")
    monkeypatch.delenv("MANO_MODEL_DIR", raising=False)
    for side in ("right", "left"):
        hand = load_hand_model(side=side)
        assert not hand.is_mano and "NOT MANO" in hand.describe() and hand.side == side
        go, hp, be, tr = random_params(2, dtype=torch.float32, seed=1)
        out = hand(go, hp * 0.3, be, tr)
        assert out.vertices.shape == (2, hand.num_vertices, 3) and torch.isfinite(out.vertices).all()
        torch.testing.assert_close(out.joints[:, 0], hand.rest_joints(be)[:, 0] + tr)
        torch.testing.assert_close(out.joints[:, 16:], out.vertices[:, hand.tip_vertex_ids])
        assert int(hand.faces.max()) < hand.num_vertices


def test_no_state_dict_entries(mano_dir):
    hand = load_hand_model(mano_dir)
    assert hand.state_dict() == {}
    wrapper = torch.nn.Sequential(torch.nn.Linear(2, 2))
    wrapper.hand = hand
    assert set(wrapper.state_dict()) == {"0.weight", "0.bias"}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu_and_graph_capture(mano_dir):
    cpu = load_hand_model(mano_dir, dtype=torch.float64)
    gpu = load_hand_model(mano_dir, device="cuda", dtype=torch.float64)
    args = random_params(64, seed=6)
    ref = cpu(*args)
    out = gpu(*[a.cuda() for a in args])
    torch.testing.assert_close(out.vertices.cpu(), ref.vertices, atol=1e-10, rtol=0)
    gpu32 = load_hand_model(mano_dir, device="cuda")
    static = [a.float().cuda() for a in args]
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.no_grad():
        gpu32(*static)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.no_grad(), torch.cuda.graph(g):
        graphed = gpu32(*static)
    new = random_params(64, seed=7)
    for dst, src in zip(static, new):
        dst.copy_(src.float())
    g.replay()
    torch.testing.assert_close(graphed.vertices.double().cpu(), cpu(*new).vertices, atol=1e-5, rtol=0)


def test_generic_tree_order_matches_sequential_chain():
    """Forward kinematics of a relabelled tree (not MANO's finger-major numbering) against a
    sequential float64 chain."""
    from megohand.hand.lbs import KinematicChain

    rng = np.random.default_rng(8)
    perm = np.concatenate([[0], 1 + rng.permutation(15)])  # new id of old joint j is perm[j]
    parents = [-1] * 16
    for j in range(1, 16):
        parents[perm[j]] = int(perm[PARENTS[j]])
    chain = KinematicChain(parents)
    assert not chain.finger_major
    R = Rotation.random(3 * 16, random_state=9).as_matrix().reshape(3, 16, 3, 3)
    Jr = rng.normal(size=(3, 16, 3))
    G_R, G_t = chain.forward_kinematics(torch.as_tensor(R), torch.as_tensor(Jr))
    for b in range(3):
        GR_ref, Gt_ref = {}, {}
        order = sorted(range(16), key=lambda j: 0 if parents[j] < 0 else 1 + _depth(parents, j))
        for j in order:
            p = parents[j]
            if p < 0:
                GR_ref[j], Gt_ref[j] = R[b, j], Jr[b, j]
            else:
                GR_ref[j] = GR_ref[p] @ R[b, j]
                Gt_ref[j] = Gt_ref[p] + GR_ref[p] @ (Jr[b, j] - Jr[b, p])
        np.testing.assert_allclose(G_R[b].numpy(), np.stack([GR_ref[j] for j in range(16)]), atol=1e-12)
        np.testing.assert_allclose(G_t[b].numpy(), np.stack([Gt_ref[j] for j in range(16)]), atol=1e-12)
    # and the MANO numbering takes the fused path with the same result
    mano = KinematicChain(PARENTS)
    assert mano.finger_major
    G_R2, G_t2 = mano.forward_kinematics(torch.as_tensor(R[:, perm]), torch.as_tensor(Jr[:, perm]))
    np.testing.assert_allclose(G_R2.numpy(), G_R.numpy()[:, perm], atol=1e-12)
    np.testing.assert_allclose(G_t2.numpy(), G_t.numpy()[:, perm], atol=1e-12)
    with pytest.raises(ValueError):
        KinematicChain([-1, 0, -1])


def _depth(parents, j):
    d = 0
    while parents[j] >= 0:
        j, d = parents[j], d + 1
    return d

"""Metrics against independent oracles: roma, scipy, a float64 numpy Umeyama, hand-computed cases."""

import math

import numpy as np
import pytest
import roma
import torch
from scipy.spatial.transform import Rotation

from megohand import metrics

torch.set_num_threads(1)


def _umeyama_np(A, B):
    """Float64 numpy reference of similarity Procrustes (Umeyama 1991, det fix): A (N,3) onto B."""
    A, B = np.asarray(A, np.float64), np.asarray(B, np.float64)
    mu_a, mu_b = A.mean(0), B.mean(0)
    a, b = A - mu_a, B - mu_b
    cov = b.T @ a / len(A)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    s = np.trace(np.diag(S) @ D) / (a**2).sum(1).mean()
    t = mu_b - s * R @ mu_a
    return s * A @ R.T + t


# ---------------------------------------------------------------- position errors


def test_constant_offset_gives_offset():
    gt = torch.randn(4, 7, 21, 3, dtype=torch.float64)
    off = torch.tensor([0.03, -0.04, 0.0], dtype=torch.float64)  # |off| = 5 cm
    pred = gt + off
    assert metrics.mpjpe(pred, gt).item() == pytest.approx(0.05, abs=1e-12)
    assert metrics.mwte(pred, gt).item() == pytest.approx(0.05, abs=1e-12)
    assert metrics.mpve(pred, gt).item() == pytest.approx(0.05, abs=1e-12)
    assert metrics.ade(pred[..., 0, :], gt[..., 0, :]).item() == pytest.approx(0.05, abs=1e-12)
    assert metrics.fde(pred[..., 0, :], gt[..., 0, :]).item() == pytest.approx(0.05, abs=1e-12)
    # root-relative and PA remove a constant offset entirely
    assert metrics.mpjpe_rr(pred, gt).item() == pytest.approx(0.0, abs=1e-12)
    assert metrics.mpjpe_pa(pred, gt).item() == pytest.approx(0.0, abs=1e-9)


def test_mpjpe_hand_computed_and_mask():
    gt = torch.zeros(3, 2, 3)
    pred = gt.clone()
    pred[0, :, 0] = 1.0  # frame 0: error 1 on both joints
    pred[1, 0, 1] = 2.0  # frame 1: errors 2 and 0 -> mean 1
    pred[2] = float("nan")  # frame 2 invalid (NaN) and masked out
    mask = torch.tensor([True, True, False])
    assert metrics.mpjpe(pred, gt, mask).item() == pytest.approx(1.0)
    per = metrics.mpjpe(pred, gt, mask, reduction="none")
    assert per[:2].tolist() == [1.0, 1.0] and math.isnan(per[2])
    pred[1, 0, 1] = 4.0
    assert metrics.mpjpe(pred, gt, mask).item() == pytest.approx(1.5)  # (1 + 2) / 2
    assert math.isnan(metrics.mpjpe(pred, gt, torch.zeros(3, dtype=torch.bool)).item())
    with pytest.raises(ValueError, match="mask shape"):
        metrics.mpjpe(pred, gt, torch.ones(2, dtype=torch.bool))
    with pytest.raises(ValueError, match="pred shape"):
        metrics.mpjpe(pred, gt[:2])


def test_mpjpe_rr_hand_computed():
    gt = torch.tensor([[0.0, 0, 0], [1, 0, 0]])
    pred = torch.tensor([[1.0, 1, 1], [2, 1, 4]])  # relative: [0,0,0], [1,0,3] vs [1,0,0] -> errors 0, 3
    assert metrics.mpjpe_rr(pred, gt).item() == pytest.approx(1.5)


# ---------------------------------------------------------------- Procrustes


def test_pa_matches_roma_and_numpy_umeyama():
    torch.manual_seed(0)
    pred = torch.randn(5, 21, 3, dtype=torch.float64)
    gt = torch.randn(5, 21, 3, dtype=torch.float64)
    per = metrics.mpjpe_pa(pred, gt, reduction="none")
    R, t, s = roma.rigid_points_registration(pred, gt, compute_scaling=True)
    aligned = s[:, None, None] * pred @ R.transpose(-1, -2) + t[:, None, :]
    ref_roma = (aligned - gt).norm(dim=-1).mean(-1)
    ref_np = np.array([np.linalg.norm(_umeyama_np(p, g) - g.numpy(), axis=-1).mean() for p, g in zip(pred.numpy(), gt)])
    torch.testing.assert_close(per, ref_roma, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(per.numpy(), ref_np, rtol=1e-9, atol=1e-12)
    # float32 inputs are computed in float64 inside: same numbers to float32 precision
    per32 = metrics.mpjpe_pa(pred.float(), gt.float(), reduction="none")
    assert per32.dtype == torch.float32
    np.testing.assert_allclose(per32.numpy(), ref_np, rtol=1e-5)
    # MPVE-PA is the same operation over vertices
    v_pred, v_gt = torch.randn(2, 778, 3, dtype=torch.float64), torch.randn(2, 778, 3, dtype=torch.float64)
    ref_v = [np.linalg.norm(_umeyama_np(p, g) - g.numpy(), axis=-1).mean() for p, g in zip(v_pred.numpy(), v_gt)]
    np.testing.assert_allclose(metrics.mpve_pa(v_pred, v_gt, reduction="none").numpy(), ref_v, rtol=1e-9)


def test_similarity_of_gt_gives_zero_pa():
    torch.manual_seed(1)
    gt = torch.randn(6, 21, 3, dtype=torch.float64) * 0.05
    R = roma.random_rotmat(6, dtype=torch.float64)
    s = torch.rand(6, dtype=torch.float64) + 0.5
    t = torch.randn(6, 3, dtype=torch.float64)
    pred = s[:, None, None] * gt @ R.transpose(-1, -2) + t[:, None, :]
    assert metrics.mpjpe(pred, gt).item() > 0.01
    assert metrics.mpjpe_pa(pred, gt).item() < 1e-12
    assert metrics.mpjpe_pa(pred.float(), gt.float()).item() < 1e-6


def test_reflection_is_not_aligned():
    torch.manual_seed(2)
    gt = torch.randn(21, 3, dtype=torch.float64)
    pred = gt * torch.tensor([-1.0, 1.0, 1.0], dtype=torch.float64)  # mirror image: not a similarity
    pa = metrics.mpjpe_pa(pred, gt).item()
    assert pa > 0.1
    ref = np.linalg.norm(_umeyama_np(pred.numpy(), gt.numpy()) - gt.numpy(), axis=-1).mean()
    assert pa == pytest.approx(ref, rel=1e-9)


def test_pa_masked_frames_with_nan():
    torch.manual_seed(3)
    gt = torch.randn(4, 21, 3)
    pred = gt + 0.01 * torch.randn(4, 21, 3)
    pred[2] = float("nan")
    mask = torch.tensor([True, True, False, True])
    full = metrics.mpjpe_pa(pred, gt, mask)
    ref = metrics.mpjpe_pa(pred[mask], gt[mask])
    assert torch.isfinite(full) and full.item() == pytest.approx(ref.item(), rel=1e-6)


# ---------------------------------------------------------------- rotations


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mre_matches_scipy(dtype):
    torch.manual_seed(4)
    R1 = roma.random_rotmat((3, 16), dtype=torch.float64)
    R2 = roma.random_rotmat((3, 16), dtype=torch.float64)
    ref = (Rotation.from_matrix(R1.reshape(-1, 3, 3).numpy()).inv() * Rotation.from_matrix(R2.reshape(-1, 3, 3).numpy())).magnitude()
    ref = ref.reshape(3, 16).mean(-1)
    got = metrics.mre(R1.to(dtype), R2.to(dtype), reduction="none")
    np.testing.assert_allclose(got.double().numpy(), ref, rtol=1e-5 if dtype == torch.float32 else 1e-10, atol=1e-6)


@pytest.mark.parametrize("angle", [1e-6, 1e-4, 1e-2])
def test_mre_near_identity_fp32(angle):
    """Tiny angles stay accurate in float32 (arccos of the trace would give 0 or noise here)."""
    torch.manual_seed(5)
    R = roma.random_rotmat((8, 16), dtype=torch.float64)
    axis = torch.nn.functional.normalize(torch.randn(8, 16, 3, dtype=torch.float64), dim=-1)
    dR = roma.rotvec_to_rotmat(axis * angle)
    R2 = R @ dR
    ref = (Rotation.from_matrix(R.reshape(-1, 3, 3).numpy()).inv() * Rotation.from_matrix(R2.reshape(-1, 3, 3).numpy())).magnitude()
    np.testing.assert_allclose(ref, angle, rtol=1e-6)
    got = metrics.mre(R.float(), R2.float(), reduction="none")
    # fp32 rounding of the matrices themselves limits accuracy to ~1e-7 rad
    np.testing.assert_allclose(got.numpy(), angle, rtol=0.05, atol=3e-7)
    assert metrics.mre(R.float(), R.float()).item() < 1e-6


def test_mre_axis_angle_format_and_hand_computed():
    pred = torch.zeros(16, 3)
    gt = torch.zeros(16, 3)
    gt[0] = torch.tensor([0.0, 0.0, 0.8])  # one joint off by 0.8 rad
    assert metrics.mre(pred, gt, fmt="axis_angle").item() == pytest.approx(0.8 / 16, rel=1e-6)


# ---------------------------------------------------------------- smoothness


def test_constant_velocity_has_zero_accel_and_jitter():
    T = 10
    t = torch.arange(T, dtype=torch.float64)[:, None, None]
    x0 = torch.randn(1, 21, 3, dtype=torch.float64)
    v = torch.randn(1, 21, 3, dtype=torch.float64)
    x = x0 + v * t
    assert metrics.jitter(x, fps=30).item() == pytest.approx(0.0, abs=1e-9)
    assert metrics.accel_error(x, x0.expand(T, 21, 3), fps=30).item() == pytest.approx(0.0, abs=1e-9)


def test_accel_units_with_fps():
    """x = 0.5 a t^2 with t = k / fps: second difference * fps^2 = a exactly."""
    fps, a = 15.0, 2.0  # m/s^2
    t = torch.arange(12, dtype=torch.float64) / fps
    x = torch.zeros(12, 1, 3, dtype=torch.float64)
    x[:, 0, 0] = 0.5 * a * t**2
    gt = torch.zeros_like(x)
    assert metrics.accel_error(x, gt, fps).item() == pytest.approx(a, rel=1e-9)
    assert metrics.accel_error(x, gt, 2 * fps).item() == pytest.approx(4 * a, rel=1e-9)  # the same samples read at 2x fps
    assert metrics.accel_error(x, gt, fps, reduction="none").shape == (10,)
    # x = j t^3 / 6: third difference * fps^3 = j
    j = 3.0
    x[:, 0, 0] = j * t**3 / 6
    assert metrics.jitter(x, fps).item() == pytest.approx(j, rel=1e-9)


def test_accel_mask_excludes_steps_touching_invalid_frames():
    fps = 10.0
    x = torch.zeros(6, 1, 3)
    x[3, 0, 0] = float("nan")  # a broken frame
    gt = torch.zeros(6, 1, 3)
    mask = torch.tensor([True, True, True, False, True, True])
    per = metrics.accel_error(x, gt, fps, mask, reduction="none")
    # steps centred at t=1..4; those at t=2,3,4 touch frame 3
    assert per[0].item() == 0.0 and torch.isnan(per[1:]).all()
    assert metrics.accel_error(x, gt, fps, mask).item() == 0.0
    assert math.isnan(metrics.jitter(x, fps, mask).item())  # every 4-frame window touches frame 3


def test_ade_fde_hand_computed_with_mask():
    gt = torch.zeros(2, 4, 3)
    pred = torch.zeros(2, 4, 3)
    pred[0, :, 0] = torch.tensor([0.0, 1.0, 2.0, 3.0])
    pred[1, :, 1] = torch.tensor([1.0, 1.0, 5.0, 9.0])
    assert metrics.ade(pred, gt).item() == pytest.approx((6 + 16) / 8)
    assert metrics.fde(pred, gt).item() == pytest.approx((3 + 9) / 2)
    mask = torch.tensor([[True, True, True, True], [True, True, True, False]])
    assert metrics.fde(pred, gt, mask, reduction="none").tolist() == [3.0, 5.0]


# ---------------------------------------------------------------- summary


def _random_hand():
    """A small random MANO-format hand (not the bundled asset): 16 joints on MANO's tree, 5 tips."""
    from megohand.hand import HandModel

    rng = np.random.default_rng(0)
    V = 120
    w = rng.random((V, 16)) ** 4
    Jreg = rng.random((16, V))
    asset = {
        "v_template": rng.normal(size=(V, 3)) * 0.05,
        "shapedirs": rng.normal(size=(V, 3, 10)) * 1e-3,
        "posedirs": rng.normal(size=(V, 3, 135)) * 1e-3,
        "J_regressor": Jreg / Jreg.sum(1, keepdims=True),
        "weights": w / w.sum(1, keepdims=True),
        "hands_mean": np.zeros(45),
        "hands_components": np.eye(45),
        "faces": rng.integers(0, V, (200, 3)),
        "parents": np.array([-1, 0, 1, 2, 0, 4, 5, 0, 7, 8, 0, 10, 11, 0, 13, 14]),
        "tip_vertex_ids": np.array([1, 2, 3, 4, 5]),
        "name": "random test hand",
        "is_mano": False,
    }
    return HandModel(asset, dtype=torch.float64)


def test_hand_metrics_summary_units():
    from megohand.hand.vector import HandParams

    hand = _random_hand()
    torch.manual_seed(6)
    T = 6
    d = dict(dtype=torch.float64)
    gt = HandParams(0.3 * torch.randn(T, 3, **d), 0.3 * torch.randn(T, 15, 3, **d), torch.zeros(T, 10, **d), 0.1 * torch.randn(T, 3, **d))
    off = torch.tensor([0.02, 0.0, 0.0], **d)  # 2 cm constant offset, same pose
    pred = HandParams(gt.global_orient.clone(), gt.hand_pose.clone(), gt.betas.clone(), gt.transl + off)
    m = metrics.hand_metrics(pred, gt, hand, fps=30)
    assert m["mpjpe_cm"] == pytest.approx(2.0, rel=1e-4)
    assert m["mwte_cm"] == pytest.approx(2.0, rel=1e-4)
    assert m["mpve_cm"] == pytest.approx(2.0, rel=1e-4)
    assert m["ade_cm"] == pytest.approx(2.0, rel=1e-4) and m["fde_cm"] == pytest.approx(2.0, rel=1e-4)
    assert m["mpjpe_rr_cm"] < 1e-4 and m["mpjpe_pa_cm"] < 1e-4 and m["mpve_pa_cm"] < 1e-4
    assert m["mre_rad"] < 1e-5 and m["accel_error_m_s2"] < 1e-3
    assert m["jitter_m_s3"] == pytest.approx(m["jitter_gt_m_s3"], rel=1e-4)
    # rotate one finger joint by 0.32 rad everywhere: MRE = 0.32 / 16 rad, reported in degrees too
    R = roma.rotvec_to_rotmat(pred.hand_pose[:, 3]) @ roma.rotvec_to_rotmat(torch.tensor([0.0, 0.32, 0.0], **d))
    pred.hand_pose[:, 3] = roma.rotmat_to_rotvec(R)
    m = metrics.hand_metrics(pred, gt, hand, fps=30, mask=torch.tensor([True] * 5 + [False]))
    assert m["mre_rad"] == pytest.approx(0.02, rel=1e-4)
    assert m["mre_deg"] == pytest.approx(math.degrees(0.02), rel=1e-4)

    # batched (B, T): a zero-error sequence beside it halves the means; masked out, it changes nothing
    ref = metrics.hand_metrics(pred, gt, hand, fps=30)
    both = HandParams(*(torch.stack([x, y]) for x, y in zip(pred.as_tuple(), gt.as_tuple())))
    gts = HandParams(*(torch.stack([y, y]) for y in gt.as_tuple()))
    mb = metrics.hand_metrics(both, gts, hand, fps=30, mask=torch.tensor([[True] * 6, [False] * 6]))
    assert mb == pytest.approx(ref, rel=1e-9)
    mb = metrics.hand_metrics(both, gts, hand, fps=30)
    for k in ("mpjpe_cm", "mpjpe_pa_cm", "mpve_cm", "mre_rad", "mwte_cm", "accel_error_m_s2", "ade_cm", "fde_cm"):
        assert mb[k] == pytest.approx(ref[k] / 2, rel=1e-9, abs=1e-12), k

"""Geometry against independent oracles: scipy Rotation (float64) and hand-computed cases."""

import numpy as np
import pytest
import roma
import torch
from scipy.spatial.transform import Rotation

from megohand.geometry import camera, procrustes
from megohand.geometry import rotations as rot


@pytest.fixture
def rng():
    return np.random.default_rng(0)


def random_rotvecs(rng, n):
    return Rotation.random(n, random_state=rng).as_rotvec()


def test_axis_angle_matrix_vs_scipy(rng):
    aa = random_rotvecs(rng, 200)
    R = rot.axis_angle_to_matrix(torch.from_numpy(aa))
    np.testing.assert_allclose(R.numpy(), Rotation.from_rotvec(aa).as_matrix(), atol=1e-12)
    back = rot.matrix_to_axis_angle(R).numpy()
    np.testing.assert_allclose(Rotation.from_rotvec(back).as_matrix(), R.numpy(), atol=1e-12)


def test_quaternion_orders_vs_scipy(rng):
    r = Rotation.random(100, random_state=rng)
    xyzw = r.as_quat()  # scipy is x, y, z, w
    wxyz = np.concatenate([xyzw[:, 3:], xyzw[:, :3]], axis=1)
    np.testing.assert_allclose(rot.quat_xyzw_to_matrix(torch.from_numpy(xyzw)).numpy(), r.as_matrix(), atol=1e-12)
    np.testing.assert_allclose(rot.quat_wxyz_to_matrix(torch.from_numpy(wxyz)).numpy(), r.as_matrix(), atol=1e-12)
    R = torch.from_numpy(r.as_matrix())
    q = rot.matrix_to_quat_wxyz(R).numpy()
    # q and -q are the same rotation
    sign = np.sign((q * wxyz).sum(1, keepdims=True))
    np.testing.assert_allclose(q * sign, wxyz, atol=1e-12)
    np.testing.assert_allclose(rot.matrix_to_quat_xyzw(R).numpy() * sign, xyzw, atol=1e-12)


def test_rot6d_is_first_two_columns_and_round_trips(rng):
    R = torch.from_numpy(Rotation.random(50, random_state=rng).as_matrix())
    r6 = rot.matrix_to_rot6d(R)
    np.testing.assert_allclose(r6[:, :3].numpy(), R[:, :, 0].numpy())
    np.testing.assert_allclose(r6[:, 3:].numpy(), R[:, :, 1].numpy())
    np.testing.assert_allclose(rot.rot6d_to_matrix(r6).numpy(), R.numpy(), atol=1e-12)


def test_rot6d_gram_schmidt_hand_computed():
    # a1 = 2*e_x, a2 = e_x + e_y -> b1 = e_x, b2 = e_y, b3 = e_z
    R = rot.rot6d_to_matrix(torch.tensor([2.0, 0, 0, 1, 1, 0], dtype=torch.float64))
    np.testing.assert_allclose(R.numpy(), np.eye(3), atol=1e-12)


def test_project_to_so3_nearest_rotation_and_det_fix(rng):
    M = torch.from_numpy(rng.normal(size=(100, 3, 3)))
    R = rot.project_to_so3(M)
    np.testing.assert_allclose((R.transpose(-1, -2) @ R).numpy(), np.broadcast_to(np.eye(3), (100, 3, 3)), atol=1e-10)
    np.testing.assert_allclose(torch.det(R).numpy(), 1.0, atol=1e-10)
    # independent oracle: numpy SVD with the determinant fix
    U, _, Vt = np.linalg.svd(M.numpy())
    d = np.sign(np.linalg.det(U @ Vt))
    D = np.stack([np.diag([1.0, 1.0, s]) for s in d])
    np.testing.assert_allclose(R.numpy(), U @ D @ Vt, atol=1e-9)
    # a reflection is mapped to a rotation, never returned as is
    refl = torch.diag(torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64))
    assert torch.det(rot.project_to_so3(refl)) > 0


def test_geodesic_angle_vs_scipy_and_stable_near_zero(rng):
    r1, r2 = Rotation.random(100, random_state=rng), Rotation.random(100, random_state=rng)
    ang = rot.geodesic_angle(torch.from_numpy(r1.as_matrix()), torch.from_numpy(r2.as_matrix()))
    np.testing.assert_allclose(ang.numpy(), (r1.inv() * r2).magnitude(), atol=1e-10)
    # tiny angles in float32: arccos would return 0 or noise at 1e-4 rad
    small = np.full(10, 1e-4)
    axis = rng.normal(size=(10, 3))
    axis /= np.linalg.norm(axis, axis=1, keepdims=True)
    R2 = Rotation.from_rotvec(axis * small[:, None]).as_matrix()
    ang32 = rot.geodesic_angle(torch.eye(3).expand(10, 3, 3), torch.from_numpy(R2).float())
    np.testing.assert_allclose(ang32.numpy(), small, rtol=1e-2)
    # near pi
    Rpi = Rotation.from_rotvec(axis * (np.pi - 1e-6)).as_matrix()
    np.testing.assert_allclose(
        rot.geodesic_angle(torch.eye(3, dtype=torch.float64).expand(10, 3, 3), torch.from_numpy(Rpi)).numpy(),
        np.pi - 1e-6,
        atol=1e-7,
    )


def test_similarity_procrustes_vs_roma_and_recovers_transform(rng):
    A = torch.from_numpy(rng.normal(size=(8, 21, 3)))
    R_true = torch.from_numpy(Rotation.random(8, random_state=rng).as_matrix())
    s_true = torch.from_numpy(rng.uniform(0.5, 2.0, size=8))
    t_true = torch.from_numpy(rng.normal(size=(8, 3)))
    B = s_true[:, None, None] * A @ R_true.transpose(-1, -2) + t_true[:, None]
    s, R, t, aligned = procrustes.similarity_procrustes(A, B)
    np.testing.assert_allclose(aligned.numpy(), B.numpy(), atol=1e-10)
    np.testing.assert_allclose(s.numpy(), s_true.numpy(), atol=1e-10)
    # roma oracle on noisy data
    Bn = B + 0.05 * torch.from_numpy(rng.normal(size=B.shape))
    s, R, t, _ = procrustes.similarity_procrustes(A, Bn)
    R_r, t_r, s_r = roma.rigid_points_registration(A, Bn, compute_scaling=True)
    np.testing.assert_allclose(R.numpy(), R_r.numpy(), atol=1e-8)
    np.testing.assert_allclose(s.numpy(), s_r.numpy(), atol=1e-8)
    np.testing.assert_allclose(t.numpy(), t_r.numpy(), atol=1e-8)


def test_procrustes_forbids_reflection(rng):
    A = torch.from_numpy(rng.normal(size=(21, 3)))
    B = A * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)  # mirror image
    _, R, _, aligned = procrustes.similarity_procrustes(A, B)
    assert torch.det(R) > 0
    assert (aligned - B).norm(dim=-1).mean() > 1e-2


def test_project_points_hand_computed():
    K = torch.tensor([[100.0, 0, 50], [0, 200.0, 60], [0, 0, 1]])
    X = torch.tensor([[0.1, -0.2, 2.0], [0.0, 0.0, 1.0]])
    uv = camera.project_points(X, K)
    np.testing.assert_allclose(uv.numpy(), [[55.0, 40.0], [50.0, 60.0]], atol=1e-5)
    np.testing.assert_allclose(camera.project_points(X.numpy(), K.numpy()), [[55.0, 40.0], [50.0, 60.0]], atol=1e-5)
    Kb = torch.stack([K, 2 * K])  # a batch of cameras: the transpose is of the last two axes
    np.testing.assert_allclose(camera.project_points(X.numpy()[None].repeat(2, 0), Kb.numpy()),
                               camera.project_points(X.expand(2, 2, 3), Kb).numpy(), atol=1e-5)


def test_rigid_inverse_and_transform(rng):
    T = torch.eye(4, dtype=torch.float64).repeat(5, 1, 1)
    T[:, :3, :3] = torch.from_numpy(Rotation.random(5, random_state=rng).as_matrix())
    T[:, :3, 3] = torch.from_numpy(rng.normal(size=(5, 3)))
    np.testing.assert_allclose((camera.invert_rigid(T) @ T).numpy(), np.broadcast_to(np.eye(4), (5, 4, 4)), atol=1e-12)
    X = torch.from_numpy(rng.normal(size=(5, 7, 3)))
    Xh = torch.cat([X, torch.ones(5, 7, 1, dtype=torch.float64)], -1)
    np.testing.assert_allclose(camera.transform_points(T, X).numpy(), (Xh @ T.transpose(-1, -2))[..., :3].numpy(), atol=1e-12)


def test_hand_to_camera_moves_wrist_like_a_point(rng):
    """The posed wrist J0 + transl must map like any world point; rotations compose."""
    R_w = torch.from_numpy(Rotation.random(4, random_state=rng).as_matrix())
    transl = torch.from_numpy(rng.normal(size=(4, 3)))
    J0 = torch.from_numpy(rng.normal(size=(4, 3)) * 0.1)
    T = torch.eye(4, dtype=torch.float64).repeat(4, 1, 1)
    T[:, :3, :3] = torch.from_numpy(Rotation.random(4, random_state=rng).as_matrix())
    T[:, :3, 3] = torch.from_numpy(rng.normal(size=(4, 3)))
    R_c, transl_c = camera.hand_to_camera(R_w, transl, J0, T)
    wrist_world = (J0 + transl)[:, None]
    np.testing.assert_allclose((J0 + transl_c).numpy(), camera.transform_points(T, wrist_world)[:, 0].numpy(), atol=1e-12)
    np.testing.assert_allclose(R_c.numpy(), (T[:, :3, :3] @ R_w).numpy(), atol=1e-12)
    # a point rigidly attached to the hand (offset in the hand frame, pivot J0) maps the same way
    off = torch.from_numpy(rng.normal(size=(4, 3)) * 0.05)
    p_world = (R_w @ off[..., None])[..., 0] + J0 + transl
    p_cam = (R_c @ off[..., None])[..., 0] + J0 + transl_c
    np.testing.assert_allclose(p_cam.numpy(), camera.transform_points(T, p_world[:, None])[:, 0].numpy(), atol=1e-12)

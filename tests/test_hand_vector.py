"""The 109-D state and 99-D relative action layout, checked by hand-built cases and scipy."""

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from megohand.hand import vector as hv


def random_params(rng, shape):
    n = int(np.prod(shape))
    return hv.HandParams(
        torch.from_numpy(Rotation.random(n, random_state=rng).as_rotvec()).reshape(*shape, 3),
        torch.from_numpy(Rotation.random(n * 15, random_state=rng).as_rotvec()).reshape(*shape, 15, 3),
        torch.from_numpy(rng.normal(size=(*shape, 10))),
        torch.from_numpy(rng.normal(size=(*shape, 3)) * 0.3),
    )


def test_state_layout_slices():
    rng = np.random.default_rng(0)
    p = random_params(rng, (2,))
    s = hv.params_to_state(p)
    assert s.shape == (2, hv.STATE_DIM)
    R_wrist = Rotation.from_rotvec(p.global_orient.numpy()).as_matrix()
    np.testing.assert_allclose(s[:, 100:103].numpy(), R_wrist[:, :, 0], atol=1e-12)
    np.testing.assert_allclose(s[:, 103:106].numpy(), R_wrist[:, :, 1], atol=1e-12)
    R_f = Rotation.from_rotvec(p.hand_pose[0, 3].numpy()).as_matrix()
    np.testing.assert_allclose(s[0, 18:21].numpy(), R_f[:, 0], atol=1e-12)
    np.testing.assert_allclose(s[:, 90:100].numpy(), p.betas.numpy())
    np.testing.assert_allclose(s[:, 106:109].numpy(), p.transl.numpy())
    back = hv.state_to_params(s)
    for a, b in [(back.global_orient, p.global_orient), (back.hand_pose, p.hand_pose)]:
        Ra = Rotation.from_rotvec(a.reshape(-1, 3).numpy()).as_matrix()
        Rb = Rotation.from_rotvec(b.reshape(-1, 3).numpy()).as_matrix()
        np.testing.assert_allclose(Ra, Rb, atol=1e-10)
    np.testing.assert_allclose(back.betas.numpy(), p.betas.numpy())
    np.testing.assert_allclose(back.transl.numpy(), p.transl.numpy())


def test_encode_decode_chunk_round_trip_and_meaning():
    rng = np.random.default_rng(1)
    cur = hv.params_to_state(random_params(rng, (3,)))
    fut = hv.params_to_state(random_params(rng, (3, 16)))
    fut[..., 90:100] = cur[:, None, 90:100]  # betas are repeated, not predicted
    act = hv.encode_chunk(cur, fut)
    assert act.shape == (3, 16, hv.ACTION_DIM)
    torch.testing.assert_close(hv.encode_chunk(cur, fut, hv.wrist_rotations(cur), hv.wrist_rotations(fut)), act,
                               rtol=0, atol=0)  # the loaders' precomputed rotations change nothing
    np.testing.assert_allclose(hv.decode_chunk(cur, act).numpy(), fut.numpy(), atol=1e-10)
    # relative wrist rotation is R_k^T R_{k+i}; translation is a camera-frame difference
    Rk = Rotation.from_matrix(hv.state_to_rotations(cur).wrist_R[0].numpy())
    Ri = Rotation.from_matrix(hv.state_to_rotations(fut).wrist_R[0, 5].numpy())
    rel = (Rk.inv() * Ri).as_matrix()
    np.testing.assert_allclose(act[0, 5, 90:93].numpy(), rel[:, 0], atol=1e-10)
    np.testing.assert_allclose(act[0, 5, 96:99].numpy(), (fut[0, 5, 106:] - cur[0, 106:]).numpy(), atol=1e-12)


def test_static_chunk_is_identity_action():
    rng = np.random.default_rng(2)
    cur = hv.params_to_state(random_params(rng, (1,)))
    act = hv.encode_chunk(cur, cur[:, None].repeat(1, 4, 1))
    np.testing.assert_allclose(act[..., 90:96].numpy(), np.tile([1, 0, 0, 0, 1, 0], (1, 4, 1)), atol=1e-12)
    np.testing.assert_allclose(act[..., 96:].numpy(), 0, atol=1e-12)


def test_perturbed_start_returns_to_the_recorded_path():
    """perturb_start against the chunk encode_chunk gives for the displaced path built with scipy: frame i at the
    recorded frame displaced by (1 - i/L) of the start's displacement (wrist-frame rotation, added translation)."""
    rng = np.random.default_rng(3)
    B, L = 3, 16
    state = hv.params_to_state(random_params(rng, (B,)))
    future = hv.params_to_state(random_params(rng, (B, L)))
    future[..., hv.SLICE_BETAS] = state[:, None, hv.SLICE_BETAS]
    transl = torch.from_numpy(rng.normal(size=(B, 3)) * 0.02)
    rot = torch.from_numpy(rng.normal(size=(B, 3)) * 0.1)
    state_p, action_p = hv.perturb_start(state, hv.encode_chunk(state, future), transl, rot)

    rest = 1 - np.arange(1, L + 1) / L
    want_state, want_future = state.clone(), future.clone()
    R = Rotation.from_matrix(hv.wrist_rotations(state).numpy())
    want_state[:, 100:106] = hv.matrix_to_rot6d(torch.from_numpy((R * Rotation.from_rotvec(rot.numpy())).as_matrix()))
    want_state[:, 106:] += transl
    for b in range(B):
        Ri = Rotation.from_matrix(hv.wrist_rotations(future[b]).numpy())
        back = Rotation.from_rotvec(rest[:, None] * rot[b].numpy()[None])
        want_future[b, :, 100:106] = hv.matrix_to_rot6d(torch.from_numpy((Ri * back).as_matrix()))
        want_future[b, :, 106:] += torch.from_numpy(rest[:, None]) * transl[b]
    torch.testing.assert_close(state_p, want_state, atol=1e-10, rtol=0)
    torch.testing.assert_close(action_p, hv.encode_chunk(want_state, want_future), atol=1e-10, rtol=0)
    # the chunk ends on the recorded path; no displacement changes nothing
    torch.testing.assert_close(hv.decode_chunk(state_p, action_p)[:, -1], future[:, -1], atol=1e-10, rtol=0)
    zero = torch.zeros(B, 3, dtype=state.dtype)
    same = hv.perturb_start(state, hv.encode_chunk(state, future), zero, zero)
    torch.testing.assert_close(same[0], state, atol=1e-12, rtol=0)
    torch.testing.assert_close(same[1], hv.encode_chunk(state, future), atol=1e-12, rtol=0)

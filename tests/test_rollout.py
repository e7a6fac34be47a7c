"""Closed-loop rollout and baselines against hand-computed / numpy / scipy references."""

import numpy as np
import pytest
import roma
import torch
from scipy.spatial.transform import Rotation

from megohand.hand.vector import ACTION_DIM, HandRotations, encode_chunk, rotations_to_state
from megohand.inference.baselines import ConstantVelocityPolicy, StaticPolicy
from megohand.inference.rollout import Policy, rollout

torch.set_num_threads(1)


def _random_states(B, T, seed=0):
    g = torch.Generator().manual_seed(seed)
    h = HandRotations(
        roma.random_rotmat((B, T), dtype=torch.float64),
        roma.random_rotmat((B, T, 15), dtype=torch.float64),
        torch.randn(B, 1, 10, generator=g, dtype=torch.float64).expand(B, T, 10),
        torch.randn(B, T, 3, generator=g, dtype=torch.float64),
    )
    return rotations_to_state(h)


def _frame_image(B, k):
    """An 'image' whose pixels encode the frame index, so a test policy can check what it sees."""
    return torch.full((B, 3, 2, 2), k, dtype=torch.uint8), None


class ReplayPolicy:
    """Oracle: reads the frame index k from the image and returns the exact future of a known trajectory."""

    def __init__(self, traj, L):
        self.traj, self.L = traj, L

    def predict_chunk(self, image, instructions, state, depth=None, steps=None, generator=None):
        k = int(image[0, 0, 0, 0])
        fut = self.traj[:, k + 1 : k + 1 + self.L]
        if fut.shape[1] < self.L:  # past the end: repeat the last frame
            fut = torch.cat([fut, fut[:, -1:].expand(-1, self.L - fut.shape[1], -1)], 1)
        return encode_chunk(state, fut)


class JumpPolicy:
    """Every chunk frame = current state translated by c, no rotation change (a biased predictor)."""

    def __init__(self, c, L):
        self.c, self.L = c, L

    def predict_chunk(self, image, instructions, state, depth=None, steps=None, generator=None):
        B = state.shape[0]
        a = torch.zeros(B, self.L, ACTION_DIM, dtype=state.dtype)
        a[..., :90] = state[:, None, :90]
        a[..., 90:96] = torch.tensor([1.0, 0, 0, 0, 1, 0], dtype=state.dtype)  # identity 6D
        a[..., 96:99] = self.c.to(state.dtype)
        return a


def test_policies_satisfy_protocol():
    assert isinstance(StaticPolicy(), Policy)
    assert isinstance(ConstantVelocityPolicy(), Policy)


@pytest.mark.parametrize("stride,tof", [(1, True), (3, True), (5, True), (1, False), (4, False)])
def test_exact_policy_reproduces_trajectory(stride, tof):
    B, T, L = 2, 13, 5
    traj = _random_states(B, T + 1)
    res = rollout(ReplayPolicy(traj, L), lambda k: _frame_image(B, k), ["x"] * B, traj[:, 0], T, stride=stride, tof=tof)
    assert res.states.shape == (B, T + 1, 109)
    assert res.queries == -(-T // stride)
    torch.testing.assert_close(res.states, traj, atol=1e-9, rtol=0)


@pytest.mark.parametrize("stride,tof", [(1, True), (2, True), (3, True), (1, False), (3, False)])
def test_feedback_and_fusion_match_numpy_recursion(stride, tof):
    B, T, L = 1, 11, 4
    c = torch.tensor([0.01, -0.02, 0.03])
    init = _random_states(B, 1)[:, 0]
    res = rollout(JumpPolicy(c, L), lambda k: _frame_image(B, k), ["x"], init, T, stride=stride, tof=tof)
    # independent reference: x_f estimates from query j are x_j + c for f in j+1..j+L
    x = np.zeros((T + 1, 3))
    x[0] = init[0, 106:109].numpy()
    est = {}
    for j in range(0, T, stride):
        for f in range(j + 1, j + L + 1):
            est.setdefault(f, []).append(x[j] + c.numpy())
        for f in range(j + 1, min(j + stride, T) + 1):
            x[f] = np.mean(est[f], 0) if tof else est[f][-1]
    np.testing.assert_allclose(res.states[0, :, 106:109].numpy(), x, atol=1e-12)
    # rotations and betas untouched
    torch.testing.assert_close(res.states[0, :, :106], init[0, :106].expand(T + 1, 106))


def test_static_baseline_holds_the_pose():
    B, T = 3, 9
    init = _random_states(B, 1, seed=3)[:, 0]
    for tof in (True, False):
        res = rollout(StaticPolicy(6), lambda k: _frame_image(B, k), ["x"] * B, init, T, stride=2, tof=tof)
        torch.testing.assert_close(res.states, init[:, None].expand(B, T + 1, 109), atol=1e-9, rtol=0)


def _constant_velocity_trajectory(B, T, seed=7):
    """Frames -1..T-1 of a hand moving at constant velocity, built with scipy (independent of roma)."""
    rng = np.random.default_rng(seed)
    R0 = Rotation.random(B * 16, random_state=seed).as_matrix().reshape(B, 16, 3, 3)
    w = rng.normal(0, 0.08, (B, 16, 3))
    t0, v = rng.normal(0, 0.3, (B, 3)), rng.normal(0, 0.01, (B, 3))
    frames = []
    for i in range(-1, T):
        Ri = R0 @ Rotation.from_rotvec((i * w).reshape(-1, 3)).as_matrix().reshape(B, 16, 3, 3)
        frames.append((Ri, t0 + i * v))
    R = torch.from_numpy(np.stack([f[0] for f in frames], 1))
    t = torch.from_numpy(np.stack([f[1] for f in frames], 1))
    betas = torch.from_numpy(rng.normal(0, 1, (B, 1, 10))).expand(B, T + 1, 10)
    return rotations_to_state(HandRotations(R[:, :, 0], R[:, :, 1:], betas, t))  # (B, T+1, 109), index 0 = frame -1


@pytest.mark.parametrize("stride,tof", [(1, True), (3, True), (2, False)])
def test_constant_velocity_baseline_is_exact_on_constant_velocity_motion(stride, tof):
    B, T, L = 2, 10, 6
    traj = _constant_velocity_trajectory(B, T + 1)  # frames -1..T
    pol = ConstantVelocityPolicy(L, prev_state=traj[:, 0], stride=stride)
    res = rollout(pol, lambda k: _frame_image(B, k), ["x"] * B, traj[:, 1], T, stride=stride, tof=tof)
    torch.testing.assert_close(res.states, traj[:, 1:], atol=1e-8, rtol=0)


def test_constant_velocity_without_history_is_static():
    B, L = 2, 4
    traj = _constant_velocity_trajectory(B, 2)
    prev = traj[:, 0].clone()
    prev[1] = float("nan")  # second sequence has no history
    a = ConstantVelocityPolicy(L, prev_state=prev).predict_chunk(None, None, traj[:, 1])
    torch.testing.assert_close(a[1], StaticPolicy(L).predict_chunk(None, None, traj[1:2, 1])[0])
    assert not torch.allclose(a[0], StaticPolicy(L).predict_chunk(None, None, traj[0:1, 1])[0])


def test_stride_longer_than_horizon_is_refused():
    init = _random_states(1, 1)[:, 0]
    with pytest.raises(ValueError, match="horizon"):
        rollout(StaticPolicy(4), lambda k: _frame_image(1, k), ["x"], init, 10, stride=5)

"""Temporal Orthogonal Filtering against independent oracles (lerobot's ACT ensembler, scipy, roma)."""

import numpy as np
import roma
import torch
from scipy.spatial.transform import Rotation

from megohand.inference.tof import TemporalOrthogonalFilter, tof_offline
from megohand.hand.vector import HandRotations

torch.set_num_threads(1)


def _chunk(wrist_R, fingers_R, transl):
    B, L = transl.shape[:2]
    return HandRotations(wrist_R, fingers_R, torch.zeros(B, L, 10, dtype=transl.dtype), transl)


class ACTTemporalEnsemblerReference:
    """Independent re-implementation of lerobot's ACTTemporalEnsembler (online, Algorithm 2 of ACT):
    weights w_i = exp(-m i), i = 0 for the oldest estimate, running weighted mean per future step."""

    def __init__(self, m: float, chunk_size: int):
        self.chunk_size = chunk_size
        self.w = torch.exp(-m * torch.arange(chunk_size, dtype=torch.float64))
        self.w_cumsum = torch.cumsum(self.w, 0)
        self.actions = None
        self.count = None

    def update(self, actions: torch.Tensor) -> torch.Tensor:
        """actions (B, S, A) predicted at this step for steps t..t+S-1 -> executed action (B, A)."""
        if self.actions is None:
            self.actions = actions.clone()
            self.count = torch.ones((self.chunk_size, 1), dtype=torch.long)
        else:
            self.actions = self.actions * self.w_cumsum[self.count - 1]
            self.actions = self.actions + actions[:, :-1] * self.w[self.count]
            self.actions = self.actions / self.w_cumsum[self.count]
            self.count = torch.clamp(self.count + 1, max=self.chunk_size)
            self.actions = torch.cat([self.actions, actions[:, -1:]], dim=1)
            self.count = torch.cat([self.count, torch.ones_like(self.count[-1:])])
        out, self.actions, self.count = self.actions[:, 0], self.actions[:, 1:], self.count[1:]
        return out


def test_identical_chunks_give_input_back():
    torch.manual_seed(0)
    B, L, T = 3, 6, 20
    wrist = roma.random_rotmat((B, T + L + 1), dtype=torch.float64)
    fingers = roma.random_rotmat((B, T + L + 1, 15), dtype=torch.float64)
    transl = torch.randn(B, T + L + 1, 3, dtype=torch.float64)
    betas = torch.randn(B, 10, dtype=torch.float64)
    tof = TemporalOrthogonalFilter(betas)
    outs = []
    for k in range(T):  # every query gives the same (true) trajectory for its frames
        sl = slice(k + 1, k + 1 + L)
        tof.add(k, _chunk(wrist[:, sl], fingers[:, sl], transl[:, sl]))
        outs.append(tof.pop(1))
    out = HandRotations(*(torch.cat([getattr(o, f) for o in outs], 1) for f in ("wrist_R", "fingers_R", "betas", "transl")))
    torch.testing.assert_close(out.wrist_R, wrist[:, 1 : T + 1])
    torch.testing.assert_close(out.fingers_R, fingers[:, 1 : T + 1])
    torch.testing.assert_close(out.transl, transl[:, 1 : T + 1])
    torch.testing.assert_close(out.betas, betas[:, None].expand(B, T, 10))


def test_translations_equal_act_temporal_ensembling_m0():
    torch.manual_seed(1)
    B, L, T = 2, 5, 17
    ref = ACTTemporalEnsemblerReference(0.0, L)
    tof = TemporalOrthogonalFilter(torch.zeros(B, 10, dtype=torch.float64))
    eye = torch.eye(3, dtype=torch.float64)
    for k in range(T):
        t = torch.randn(B, L, 3, dtype=torch.float64)  # arbitrary, disagreeing estimates
        expected = ref.update(t)
        tof.add(k, _chunk(eye.expand(B, L, 3, 3), eye.expand(B, L, 15, 3, 3), t))
        got = tof.pop(1)
        torch.testing.assert_close(got.transl[:, 0], expected)
        torch.testing.assert_close(got.wrist_R[:, 0], eye.expand(B, 3, 3))


def test_decay_equals_act_temporal_ensembling_newest_first():
    """decay d weights the estimate i frames into its chunk exp(-d i): newest first, which is ACT's ensembler with
    m = -d (ACT's i counts from the oldest estimate; the two weightings differ by a constant factor per frame)."""
    torch.manual_seed(7)
    B, L, T, d = 2, 5, 17, 0.4
    ref = ACTTemporalEnsemblerReference(-d, L)
    tof = TemporalOrthogonalFilter(torch.zeros(B, 10, dtype=torch.float64), decay=d)
    eye = torch.eye(3, dtype=torch.float64)
    for k in range(T):
        t = torch.randn(B, L, 3, dtype=torch.float64)
        expected = ref.update(t)
        tof.add(k, _chunk(eye.expand(B, L, 3, 3), eye.expand(B, L, 15, 3, 3), t))
        torch.testing.assert_close(tof.pop(1).transl[:, 0], expected)
    # the newest estimate pulls hardest: two disagreeing chunks, the later one wins more than half
    tof = TemporalOrthogonalFilter(torch.zeros(1, 10, dtype=torch.float64), decay=1.0)
    tof.add(0, _chunk(eye.expand(1, 2, 3, 3), eye.expand(1, 2, 15, 3, 3), torch.zeros(1, 2, 3, dtype=torch.float64)))
    tof.pop(1)
    tof.add(1, _chunk(eye.expand(1, 2, 3, 3), eye.expand(1, 2, 15, 3, 3), torch.ones(1, 2, 3, dtype=torch.float64)))
    # frame 2: position 1 of the first chunk (0, weight e^-1), position 0 of the second (1, weight 1)
    torch.testing.assert_close(tof.pop(1).transl[0, 0, 0], torch.tensor(1 / (1 + np.exp(-1.0)), dtype=torch.float64))
    for bad in (-0.1, float("nan")):
        try:
            TemporalOrthogonalFilter(torch.zeros(1, 10), decay=bad)
        except ValueError as e:
            assert "decay" in str(e)
        else:
            raise AssertionError("a negative or NaN decay must be refused")


def test_act_reference_with_decay_differs_from_uniform():
    """Guards the oracle: with m > 0 the reference is not the uniform mean, so the m = 0 test can fail."""
    torch.manual_seed(2)
    ref0, ref1 = ACTTemporalEnsemblerReference(0.0, 4), ACTTemporalEnsemblerReference(0.5, 4)
    for _ in range(5):
        a = torch.randn(1, 4, 3, dtype=torch.float64)
        o0, o1 = ref0.update(a), ref1.update(a)
    assert (o0 - o1).abs().max() > 1e-3


def test_small_perturbations_match_geodesic_mean():
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    B, L, T = 2, 8, 12
    base = roma.random_rotmat((B, T + L + 1, 16), dtype=torch.float64)
    tof = TemporalOrthogonalFilter(torch.zeros(B, 10, dtype=torch.float64))
    est = {}  # frame -> list of (B, 16, 3, 3)
    for k in range(T):
        noise = torch.from_numpy(Rotation.from_rotvec(rng.normal(0, 0.05, (B * L * 16, 3))).as_matrix())
        R = base[:, k + 1 : k + 1 + L] @ noise.reshape(B, L, 16, 3, 3)
        for i in range(L):
            est.setdefault(k + 1 + i, []).append(R[:, i])
        tof.add(k, _chunk(R[:, :, 0], R[:, :, 1:], torch.zeros(B, L, 3, dtype=torch.float64)))
    out = tof.pop(T)
    for f in (1, 4, T):
        stack = torch.stack(est[f], 0).numpy()  # (n, B, 16, 3, 3)
        for b in range(B):
            for j in (0, 5, 15):
                mean = Rotation.from_matrix(stack[:, b, j]).mean().as_matrix()
                got = (out.wrist_R if j == 0 else out.fingers_R[:, :, j - 1])[b, f - 1].numpy()
                ang = Rotation.from_matrix(got.T @ mean).magnitude()
                assert ang < 2e-3, (f, b, j, ang)  # chordal vs quaternion mean: O(noise^3)


def test_output_is_rotation_even_when_estimates_disagree():
    torch.manual_seed(4)
    B, L, T = 4, 6, 10
    tof = TemporalOrthogonalFilter(torch.zeros(B, 10))
    for k in range(T):  # wildly different random rotations: the mean can have det < 0
        tof.add(k, _chunk(roma.random_rotmat((B, L)), roma.random_rotmat((B, L, 15)), torch.randn(B, L, 3)))
    out = tof.pop(T)
    R = torch.cat([out.wrist_R.unsqueeze(-3), out.fingers_R], -3).double()
    torch.testing.assert_close(torch.linalg.det(R), torch.ones(R.shape[:-2], dtype=torch.float64), atol=1e-5, rtol=0)
    eye = torch.eye(3, dtype=torch.float64).expand_as(R)
    torch.testing.assert_close(R.transpose(-1, -2) @ R, eye, atol=1e-5, rtol=0)


def test_projection_equals_roma_special_procrustes():
    torch.manual_seed(5)
    B, L = 3, 4
    R1, R2 = roma.random_rotmat((B, L, 16), dtype=torch.float64), roma.random_rotmat((B, L, 16), dtype=torch.float64)
    t1, t2 = torch.randn(B, L, 3, dtype=torch.float64), torch.randn(B, L, 3, dtype=torch.float64)
    tof = TemporalOrthogonalFilter(torch.zeros(B, 10, dtype=torch.float64), first_frame=1)
    tof.add(0, _chunk(R1[:, :, 0], R1[:, :, 1:], t1))
    tof.add(0, _chunk(R2[:, :, 0], R2[:, :, 1:], t2))  # two estimates of each of frames 1..L
    out = tof.pop(L)
    expected = roma.special_procrustes((R1 + R2) / 2)
    torch.testing.assert_close(out.wrist_R, expected[:, :, 0])
    torch.testing.assert_close(out.fingers_R, expected[:, :, 1:])
    torch.testing.assert_close(out.transl, (t1 + t2) / 2)


def test_online_equals_offline_with_stride():
    torch.manual_seed(6)
    B, L, T = 2, 6, 23
    for stride, decay in ((1, 0.0), (2, 0.0), (3, 0.0), (6, 0.0), (1, 0.3), (3, 0.7)):
        starts = list(range(0, T, stride))
        Q = len(starts)
        chunks = _chunk(
            roma.random_rotmat((B, Q, L)).reshape(B, Q * L, 3, 3),
            roma.random_rotmat((B, Q, L, 15)).reshape(B, Q * L, 15, 3, 3),
            torch.randn(B, Q * L, 3),
        )
        chunks = HandRotations(*(x.unflatten(1, (Q, L)) for x in (chunks.wrist_R, chunks.fingers_R, chunks.betas, chunks.transl)))
        betas = torch.randn(B, 10)
        tof = TemporalOrthogonalFilter(betas, decay=decay)
        online = []
        for q, k in enumerate(starts):
            tof.add(k, HandRotations(*(x[:, q] for x in (chunks.wrist_R, chunks.fingers_R, chunks.betas, chunks.transl))))
            online.append(tof.pop(min(stride, T - k)))
        off = tof_offline(chunks, starts, T, betas, decay=decay)
        for f in ("wrist_R", "fingers_R", "betas", "transl"):
            torch.testing.assert_close(torch.cat([getattr(o, f) for o in online], 1), getattr(off, f))


def test_pop_without_estimate_raises():
    tof = TemporalOrthogonalFilter(torch.zeros(1, 10))
    eye = torch.eye(3)
    tof.add(0, _chunk(eye.expand(1, 2, 3, 3), eye.expand(1, 2, 15, 3, 3), torch.zeros(1, 2, 3)))
    tof.pop(2)
    try:
        tof.pop(1)
    except RuntimeError as e:
        assert "no estimate" in str(e)
    else:
        raise AssertionError("expected RuntimeError")

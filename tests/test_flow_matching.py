"""Flow matching: GR00T-N1 time convention (tau = 1 is data), Beta(1.5, 1) times, Euler exactness."""

import numpy as np
import pytest
import torch
from scipy import stats

from megohand.models import flow_matching as fm

torch.set_num_threads(1)


def test_interpolation_endpoints_and_velocity():
    g = torch.Generator().manual_seed(0)
    eps, a = torch.randn(5, 4, 3, generator=g, dtype=torch.float64), torch.randn(5, 4, 3, generator=g, dtype=torch.float64)
    zeros, ones = torch.zeros(5, dtype=torch.float64), torch.ones(5, dtype=torch.float64)
    assert torch.equal(fm.interpolate(eps, a, zeros), eps)  # tau = 0 is noise
    assert torch.equal(fm.interpolate(eps, a, ones), a)  # tau = 1 is data
    tau = torch.rand(5, generator=g, dtype=torch.float64)
    h = 1e-6
    fd = (fm.interpolate(eps, a, tau + h) - fm.interpolate(eps, a, tau - h)) / (2 * h)
    torch.testing.assert_close(fd, fm.target_velocity(eps, a), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(fm.target_velocity(eps, a), a - eps)


@pytest.mark.parametrize("steps", [1, 2, 4, 16])
def test_euler_constant_velocity_is_exact(steps):
    g = torch.Generator().manual_seed(1)
    eps, a = torch.randn(3, 16, 99, generator=g, dtype=torch.float64), torch.randn(3, 16, 99, generator=g, dtype=torch.float64)
    out = fm.euler_integrate(lambda x, tau: a - eps, eps, steps)
    torch.testing.assert_close(out, a, rtol=0, atol=1e-12)


@pytest.mark.parametrize("steps", [1, 3, 4, 10])
def test_euler_time_convention_with_conditional_field(steps):
    """The optimal field for one data point a is v(x, tau) = (a - x) / (1 - tau); it is only exact if the
    integrator hands tau = k / K, starting at 0 (noise) and never reaching 1."""
    g = torch.Generator().manual_seed(2)
    eps, a = torch.randn(2, 7, generator=g, dtype=torch.float64), torch.randn(2, 7, generator=g, dtype=torch.float64)
    seen = []

    def v(x, tau):
        seen.append(tau)
        return (a - x) / (1 - tau)

    out = fm.euler_integrate(v, eps, steps)
    torch.testing.assert_close(out, a, rtol=0, atol=1e-12)
    assert seen == [k / steps for k in range(steps)]


def test_tau_distribution_moments_and_range():
    n = 200_000
    g = torch.Generator().manual_seed(3)
    s = 0.999
    tau = fm.sample_tau(n, 1.5, 1.0, s, generator=g).double().numpy()
    u = s - s * tau  # back to the Beta variable
    a, b = 1.5, 1.0
    mean = a / (a + b)
    var = a * b / ((a + b) ** 2 * (a + b + 1))
    assert abs(u.mean() - mean) < 4 * np.sqrt(var / n)
    assert abs(u.var() - var) < 0.01 * var
    assert tau.min() >= 1 - 1 / s - 1e-7 and tau.max() <= 1 + 1e-7
    assert stats.kstest(u, stats.beta(a, b).cdf).pvalue > 1e-3
    # denser toward noise (tau near 0) than toward data
    assert (tau < 0.5).mean() > 0.6


def test_tau_general_beta_moments():
    torch.manual_seed(0)
    tau = fm.sample_tau(100_000, 2.0, 3.0, 1.0).double().numpy()
    u = 1 - tau
    assert abs(u.mean() - 0.4) < 0.005


def test_discretise_truncates_like_int():
    tau = torch.tensor([0.0, 0.0015, 0.4999, 0.5, 0.9999, 1.0, -0.0005])
    assert fm.discretise(tau, 1000).tolist() == [int(t * 1000) for t in tau.tolist()]
    assert fm.discretise(tau, 1000).tolist() == [0, 1, 499, 500, 999, 1000, 0]


def test_masked_mse_hand_computed():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    tgt = torch.zeros(1, 2, 2)
    mask = torch.tensor([[1.0, 0.0]])[..., None]
    assert fm.masked_mse(pred, tgt, mask).item() == pytest.approx((1 + 4) / 2)

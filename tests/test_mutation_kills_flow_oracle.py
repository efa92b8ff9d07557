"""Oracles for ``models/flow_oracle.py`` (issue 27, mutation testing): the exact flow of a 2-D mixture
against a plain per-component computation with ``GaussianMixture.on_path`` (log q(x_t), E[x_0 | x_t],
E[eps | x_t], the velocity on the linear and on the VP path), the data shape and the refusals."""
import pytest
import torch

from conftest import gen, mixture_2d
from ddpmlab.core.continuous import ContinuousSchedule
from ddpmlab.core.paths import LinearPath, VPPath
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.flow_oracle import FlowMixtureOracle


def _plain_posterior(dist, x, a, s):
    """E[x_0 | x_t = x], E[eps | x_t = x] and log q(x_t) by hand: responsibilities of the diffused mixture,
    each component's Gaussian conditioning x_0 | x_t (covariance C_k = a^2 S_k + s^2 I)."""
    x = x.double()
    marg = dist.on_path(a, s)
    r = marg.responsibilities(x)  # (B, K)
    x0 = torch.zeros_like(x)
    eps = torch.zeros_like(x)
    for k in range(dist.num_components):
        d = x - a * dist.means[k]
        sol = torch.linalg.solve(marg.covariances[k], d.T).T  # C_k^{-1} d, row by row
        x0 += r[:, k:k + 1] * (dist.means[k] + a * sol @ dist.covariances[k].T)
        eps += r[:, k:k + 1] * (s * sol)
    return x0, eps, marg.log_prob(x)


@pytest.mark.parametrize("t", [0.0, 0.2, 0.55, 0.9, 1.0])
def test_linear_path_posterior_and_velocity_by_hand(t):
    dist = mixture_2d()
    oracle = FlowMixtureOracle(dist)
    x = 1.5 * torch.randn(20, 2, generator=gen(0), dtype=torch.float64)
    x0, eps, log_q = _plain_posterior(dist, x, 1 - t, t)
    got_x0, got_eps = oracle.posterior_means(x, t)
    torch.testing.assert_close(got_x0, x0, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(got_eps, eps, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(oracle.q_log_prob(x, t), log_q, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(oracle.velocity(x, t), eps - x0, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("t", [0.1, 0.5, 0.87])
def test_vp_path_velocity_by_hand(t):
    dist = mixture_2d()
    path = VPPath(ContinuousSchedule(make_schedule("linear", 50, beta_start=1e-3, beta_end=0.1)))
    oracle = FlowMixtureOracle(dist, path)
    assert oracle.path is path
    x = torch.randn(10, 2, generator=gen(1), dtype=torch.float64)
    a, s = path.alpha(t), path.sigma(t)
    x0, eps, log_q = _plain_posterior(dist, x, a, s)
    torch.testing.assert_close(oracle.q_log_prob(x, t), log_q, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(oracle.velocity(x, t), path.d_alpha(t) * x0 + path.d_sigma(t) * eps,
                               rtol=1e-9, atol=1e-10)


def test_data_shape_and_dtype():
    dist = mixture_2d()
    oracle = FlowMixtureOracle(dist, data_shape=(1, 2))
    assert oracle.data_shape == (1, 2) and FlowMixtureOracle(dist).data_shape == (2,)
    x = torch.randn(5, 1, 2, generator=gen(2))
    v = oracle.velocity(x, 0.4)
    assert v.shape == (5, 1, 2) and v.dtype == torch.float32
    x0, eps = oracle.posterior_means(x, 0.4)
    assert x0.shape == eps.shape == (5, 1, 2) and x0.dtype == torch.float64
    torch.testing.assert_close(v, FlowMixtureOracle(dist).velocity(x.reshape(5, 2), 0.4).reshape(5, 1, 2))
    assert isinstance(oracle.path, LinearPath)


def test_refusals():
    with pytest.raises(DDPMLabError, match=r"data shape \(3,\) does not hold the mixture's 2 dimensions"):
        FlowMixtureOracle(mixture_2d(), data_shape=(3,))
    with pytest.raises(DDPMLabError, match="^FlowMixtureOracle is the unconditional oracle; it takes no condition$"):
        FlowMixtureOracle(mixture_2d()).velocity(torch.zeros(2, 2), 0.5, torch.tensor([0, 1]))

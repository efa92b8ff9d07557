"""Oracles for what the exact-oracle tests left open (issue 27, mutation testing of ``models/oracle.py``):
the reverse step in d = 6 (the einsum path) against Gaussian conditioning by the Schur complement, with
one step and with mixed steps per batch; log q far out in the tails next to points near the modes;
a scalar step for a whole batch; the marginal; exact symmetry of the posterior covariances; dtypes;
and the one-line refusals (a condition, a step outside 1..T, a data shape of the wrong size)."""
import math

import pytest
import torch

from conftest import gen
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.oracle import MixtureOracle

D, T = 6, 15


def spd(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=gen(seed), dtype=torch.float64)
    return a @ a.T / d + 0.2 * torch.eye(d, dtype=torch.float64)


@pytest.fixture(scope="module")
def mix6():
    means = torch.randn(2, D, generator=gen(1), dtype=torch.float64) * 2
    return GaussianMixture([1.0, 3.0], means.tolist(), torch.stack([spd(D, 2), spd(D, 3)]).tolist())


@pytest.fixture(scope="module")
def sched():
    return make_schedule("linear", T, beta_start=1e-2, beta_end=0.3)


def reverse_by_schur(dist: GaussianMixture, sched, x: torch.Tensor, t: int):
    """Mean (B, d) and covariance (B, d, d) of q(x_{t-1} | x_t): per component the joint Gaussian of
    (x_{t-1}, x_t) (Cov(x_t, x_{t-1}) = sqrt(alpha_t) C_{t-1}) conditioned by the Schur complement,
    weighted by the responsibilities of x_t under q(x_t); then the law of total covariance."""
    ab_t, ab_s, alpha = (float(sched.alphas_cumprod[t]), float(sched.alphas_cumprod[t - 1]),
                         float(sched.alphas[t]))
    eye = torch.eye(dist.dim, dtype=torch.float64)
    logw, means, covs = [], [], []
    for k in range(dist.num_components):
        mu, S = dist.means[k].double(), dist.covariances[k].double()
        C_s, C_t = ab_s * S + (1 - ab_s) * eye, ab_t * S + (1 - ab_t) * eye
        cross = math.sqrt(alpha) * C_s  # Cov(x_{t-1}, x_t)
        gain = torch.linalg.solve(C_t, cross.T).T
        means.append(math.sqrt(ab_s) * mu + (x - math.sqrt(ab_t) * mu) @ gain.T)
        covs.append(C_s - gain @ cross.T)
        mvn = torch.distributions.MultivariateNormal(math.sqrt(ab_t) * mu, covariance_matrix=C_t)
        logw.append(math.log(float(dist.weights[k])) + mvn.log_prob(x))
    r = torch.softmax(torch.stack(logw), 0)  # (K, B)
    mean = sum(r[k][:, None] * means[k] for k in range(len(means)))
    cov = sum(r[k][:, None, None] * (covs[k] + (means[k] - mean)[:, :, None] * (means[k] - mean)[:, None, :])
              for k in range(len(means)))
    return mean, cov


def test_the_reverse_step_in_six_dimensions_is_gaussian_conditioning(mix6, sched):
    oracle = MixtureOracle(mix6, sched)
    x = torch.randn(7, D, generator=gen(4), dtype=torch.float64) * 2
    for t in (1, 8, T):
        mean, cov = oracle.q_prev_mean_covariance(x, torch.full((7,), t))  # one step: the einsum path
        m_ref, c_ref = reverse_by_schur(mix6, sched, x, t)
        torch.testing.assert_close(mean, m_ref, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(cov, c_ref, rtol=1e-9, atol=1e-9)
        p = oracle.p_mean_variance(x, t)  # a scalar step for the whole batch
        torch.testing.assert_close(p.mean, m_ref, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(p.variance, torch.diagonal(c_ref, dim1=-2, dim2=-1), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("B", [2, 5])
def test_mixed_steps_in_six_dimensions_are_each_their_own_step(mix6, sched, B):
    oracle = MixtureOracle(mix6, sched)
    x = torch.randn(B, D, generator=gen(5), dtype=torch.float64)
    t = torch.tensor([3, 12, 7, 15, 1][:B])
    mean, cov = oracle.q_prev_mean_covariance(x, t)
    eps = oracle.eps(x, t)
    for i in range(B):
        m_ref, c_ref = reverse_by_schur(mix6, sched, x[i:i + 1], int(t[i]))
        torch.testing.assert_close(mean[i:i + 1], m_ref, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(cov[i:i + 1], c_ref, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(eps[i:i + 1], oracle.eps(x[i:i + 1], int(t[i])), rtol=1e-12, atol=1e-12)


def test_a_scalar_step_stands_for_the_whole_batch(sched):
    dist = GaussianMixture([1.0, 2.0], [[-1.0, 0.5], [2.0, 1.0]], [[[0.3, 0.1], [0.1, 0.2]], [[0.5, 0.0], [0.0, 0.4]]])
    oracle = MixtureOracle(dist, sched)
    x = torch.randn(5, 2, generator=gen(6), dtype=torch.float64)
    full = torch.full((5,), 4)
    torch.testing.assert_close(oracle.eps(x, 4), oracle.eps(x, full), rtol=0, atol=0)
    torch.testing.assert_close(oracle.eps(x, torch.tensor(4)), oracle.eps(x, full), rtol=0, atol=0)
    a, b = oracle.p_mean_variance(x, 4), oracle.p_mean_variance(x, full)
    for name in ("mean", "variance", "pred_x0", "pred_eps"):
        assert getattr(a, name).shape == (5, 2)
        torch.testing.assert_close(getattr(a, name), getattr(b, name), rtol=0, atol=0)


def test_log_q_far_in_the_tail_beside_points_near_the_modes():
    """Each point's log-sum-exp is shifted by its own largest term: x = 40, where every component's term
    is below exp(-4000) (0 in float64), keeps its finite log-density beside neighbours near the modes."""
    dist = GaussianMixture([1.0, 1.0], [[-1.0], [1.0]], [0.04, 0.09])
    oracle = MixtureOracle(dist, make_schedule("linear", 10, beta_start=1e-3, beta_end=0.02))
    x = torch.tensor([[0.9], [-1.1], [40.0]], dtype=torch.float64)
    for ab in (1.0, 0.9):
        comps = [(math.sqrt(ab) * m, ab * v + 1 - ab) for m, v in ((-1.0, 0.04), (1.0, 0.09))]
        ref = torch.logsumexp(torch.stack([math.log(0.5) - 0.5 * math.log(2 * math.pi * var)
                                           - (x[:, 0] - mean) ** 2 / (2 * var) for mean, var in comps]), 0)
        got = oracle.q_log_prob(x, ab)
        assert torch.isfinite(got).all()
        torch.testing.assert_close(got, ref, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(oracle.marginal(ab).log_prob(x), ref, rtol=1e-10, atol=1e-10)


def test_posterior_covariances_are_exactly_symmetric(mix6, sched):
    P = MixtureOracle(mix6, sched).posterior_covariances_t
    assert torch.equal(P, P.transpose(-1, -2))


def test_dtypes_the_contract_promises(sched):
    dist = GaussianMixture([1.0], [[0.5, -0.5]], [[[0.3, 0.1], [0.1, 0.2]]])
    oracle = MixtureOracle(dist, sched)
    x32 = torch.randn(4, 2, generator=gen(7))
    assert oracle.score(x32, 0.5, 0.7).dtype == torch.float32
    torch.testing.assert_close(oracle.score(x32, 0.5, 0.7), oracle.q_score(x32.double(), 0.7).float())
    assert oracle.q_log_prob(x32, 0.7).dtype == torch.float64
    assert torch.equal(oracle.q_log_prob(x32, 0.7), oracle.q_log_prob(x32.double(), 0.7))


def test_refusals_are_one_clear_line(sched):
    dist = GaussianMixture([1.0], [[0.5, -0.5]], [[[0.3, 0.1], [0.1, 0.2]]])
    oracle = MixtureOracle(dist, sched)
    x = torch.zeros(3, 2, dtype=torch.float64)
    no_cond = "MixtureOracle is the unconditional oracle; it takes no condition"
    with pytest.raises(DDPMLabError, match=f"^{no_cond}$"):
        oracle.p_mean_variance(x, 3, cond=torch.zeros(3, dtype=torch.long))
    with pytest.raises(DDPMLabError, match=f"^{no_cond}$"):
        oracle.score(x, 0.5, 0.7, cond=torch.zeros(3, dtype=torch.long))
    for t in (0, T + 1):
        with pytest.raises(DDPMLabError, match=rf"^reverse steps run over t = 1\.\.{T}$"):
            oracle.p_mean_variance(x, t)
    with pytest.raises(DDPMLabError, match=r"data shape \(3,\) does not hold the mixture's 2 dimensions"):
        MixtureOracle(dist, sched, (3,))

"""Probability-flow ODE likelihood: with the exact score and the exact prior it returns log q(x_0)."""
import math

import numpy as np
import pytest

from ddpmlab.core.process import ReverseProcess
from ddpmlab.models.diffusion_model import DiffusionModel
import torch
from scipy.integrate import quad

from ddpmlab.core.continuous import ContinuousSchedule, score_function
from ddpmlab.core.distributions import GaussianMixture, seed_mixture
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.evaluation.ode import ode_log_likelihood
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.models.seed import SeedReverse
from conftest import gen


def test_continuous_schedule_matches_the_discrete_one():
    sched = make_schedule("cosine", 40)
    cont = ContinuousSchedule(sched)
    for t in (0, 1, 13, 40):
        assert cont.alpha_bar(t / 40) == pytest.approx(float(sched.alphas_cumprod[t]), rel=1e-12)
    # -log abar(s) = int_0^s beta(u) du, beta >= 0
    for t in (1, 13, 40):
        integral = quad(cont.beta, 0, t / 40, points=[k / 40 for k in range(1, t)], limit=200, epsrel=1e-12)[0]
        assert integral == pytest.approx(-math.log(float(sched.alphas_cumprod[t])), rel=1e-9)
    assert min(cont.beta(s) for s in np.linspace(0, 1, 1001)) >= 0
    const = ContinuousSchedule(make_schedule("constant", 40, beta=0.05))
    for s in (0.0, 0.013, 0.5, 1.0):
        assert const.beta(s) == pytest.approx(-40 * math.log(0.95), rel=1e-10)


@pytest.mark.parametrize("dist", [
    GaussianMixture([1.0], [[1.5]], [0.25]),                                      # N(m, s^2)
    seed_mixture(),
])
def test_exact_score_and_exact_prior_give_log_q_x0(dist):
    """Issue 3: with the exact score and q(x_T) as the prior, the ODE log-likelihood is log q(x_0) to 1e-3."""
    oracle = MixtureOracle(dist, make_schedule("constant", 250, beta=0.02))
    x0 = dist.sample(64, gen(1), dtype=torch.float64)
    res = ode_log_likelihood(oracle, x0, prior="exact")
    err = (res["log_likelihood"] - dist.log_prob(x0)).abs().max().item()
    assert err < 1e-3, err


def test_two_dimensions_exact_and_hutchinson_divergence():
    dist = GaussianMixture([0.3, 0.7], [[-2.0, 1.0], [1.5, -0.5]],
                           [[[1.0, 0.6], [0.6, 0.8]], [[0.4, -0.1], [-0.1, 1.5]]])
    oracle = MixtureOracle(dist, make_schedule("linear", 100, beta_start=1e-3, beta_end=0.1))
    x0 = dist.sample(64, gen(2), dtype=torch.float64)
    exact = ode_log_likelihood(oracle, x0, prior="exact")
    assert (exact["log_likelihood"] - dist.log_prob(x0)).abs().max().item() < 1e-3
    hutch = ode_log_likelihood(oracle, x0, prior="exact", divergence="hutchinson", generator=gen(3))
    diff = hutch["log_likelihood"] - exact["log_likelihood"]  # unbiased noise, paired by data point
    assert abs(diff.mean().item()) < 4 * diff.std().item() / math.sqrt(len(diff))
    assert hutch["nll_bpd"] == pytest.approx(hutch["nll_nats"] / (2 * math.log(2)))


class _MeanOnly(ReverseProcess):
    """The oracle seen only through its predicted mean at integer steps, as a generic trained model is."""

    def __init__(self, oracle):
        self.schedule, self.data_shape, self.oracle = oracle.schedule, oracle.data_shape, oracle

    def p_mean_variance(self, x, t, cond=None):
        assert t.dtype == torch.long
        return self.oracle.p_mean_variance(x, t)


class _OracleEpsNet(torch.nn.Module):
    """A network whose noise prediction at network time tau is the oracle's exact E[eps | x]."""

    def __init__(self, oracle):
        super().__init__()
        self.oracle, self.cont = oracle, ContinuousSchedule(oracle.schedule)
        self.dummy = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, tau):
        abar = self.cont.alpha_bar(float(tau[0]))
        return -math.sqrt(1 - abar) * self.oracle.q_score(x, abar) + self.dummy


def _EpsOnly(oracle):
    """The oracle seen only through a noise prediction at continuous time: a ``DiffusionModel``."""
    return DiffusionModel(_OracleEpsNet(oracle), oracle.schedule, "epsilon", data_shape=oracle.data_shape).double()


@pytest.mark.parametrize("kind", ["constant", "linear"])
@pytest.mark.parametrize("view", [_MeanOnly, _EpsOnly])
def test_score_from_a_predicted_mean_or_eps_is_the_exact_score(kind, view):
    """score = (sqrt(alpha_t) mu - x_t) / beta_t for the exact mean mu (or -eps / sqrt(1 - abar_t)) recovers
    grad log q(x_t) at every step."""
    sched = make_schedule(kind, 50, beta=0.05, beta_start=1e-3, beta_end=0.2)
    oracle = MixtureOracle(seed_mixture(), sched)
    score = score_function(view(oracle), ContinuousSchedule(sched))
    x = torch.linspace(-7, 7, 15, dtype=torch.float64)[:, None]
    tol = 1e-8 if view is _MeanOnly else 1e-6  # a network sees its time as float32
    for t in (1, 20, 50):
        torch.testing.assert_close(score(x, t / 50), oracle.q_score(x, float(sched.alphas_cumprod[t])),
                                   rtol=tol, atol=tol)
    # between steps the mean view interpolates the neighbours' scores linearly
    if view is _MeanOnly:
        mid = 0.3 * oracle.q_score(x, float(sched.alphas_cumprod[20])) + 0.7 * oracle.q_score(
            x, float(sched.alphas_cumprod[21]))
        torch.testing.assert_close(score(x, 20.7 / 50), mid, rtol=1e-8, atol=1e-8)


def test_seed_networks_are_queried_at_continuous_time():
    sched = make_schedule("constant", 50, beta=0.05)
    model = SeedReverse(sched, (1,))
    model.net.reset_parameters(gen(4))
    score = score_function(model, ContinuousSchedule(sched))
    x = torch.linspace(-5, 5, 11, dtype=torch.float64)[:, None]
    with torch.no_grad():
        for t in (1, 17, 50):
            mean, _ = model.p_mean_variance(x.float(), torch.full((11,), t))[:2]
            expected = (math.sqrt(0.95) * mean.double() - x) / 0.05
            torch.testing.assert_close(score(x, t / 50), expected, rtol=1e-5, atol=1e-4)


def test_trained_model_path_and_normal_prior():
    sched = make_schedule("constant", 50, beta=0.05)
    model = SeedReverse(sched, (1,))
    model.net.reset_parameters(gen(4))
    x0 = seed_mixture().sample(8, gen(5), dtype=torch.float64)
    res = ode_log_likelihood(model, x0)
    assert res["log_likelihood"].shape == (8,) and res["nfe"] > 0
    assert model.net.w_in.dtype == torch.float32  # evaluated in a float64 copy; the model is untouched
    normal = -0.5 * (res["x_T"].square().sum(1) + math.log(2 * math.pi))
    torch.testing.assert_close(res["prior_log_prob"], normal)
    with pytest.raises(DDPMLabError):
        ode_log_likelihood(model, x0, prior="exact")  # q(x_T) is the oracle's
    with pytest.raises(DDPMLabError):
        ode_log_likelihood(model, x0, divergence="approximate")


def test_normal_prior_costs_the_prior_mismatch():
    """With N(0, 1) instead of q(x_T) the ODE density differs; on average by about KL(q(x_T) || N(0, 1)),
    which is >= 0, so the mean NLL can only go up (up to noise)."""
    dist = GaussianMixture([1.0], [[2.0]], [0.5])
    sched = make_schedule("constant", 30, beta=0.02)
    oracle = MixtureOracle(dist, sched)
    x0 = dist.sample(200, gen(6), dtype=torch.float64)
    exact = ode_log_likelihood(oracle, x0, prior="exact")
    normal = ode_log_likelihood(oracle, x0, prior="normal")
    a = float(sched.alphas_cumprod[-1])
    m_T, v_T = math.sqrt(a) * 2.0, a * 0.5 + 1 - a
    kl = 0.5 * (v_T + m_T ** 2 - 1 - math.log(v_T))  # KL(q(x_T) || N(0, 1)) = E_q[log q(x_T) - log N(x_T)]
    gap = (exact["log_likelihood"] - normal["log_likelihood"]).numpy()
    assert abs(gap.mean() - kl) < 4 * gap.std(ddof=1) / np.sqrt(len(gap)), (gap.mean(), kl)

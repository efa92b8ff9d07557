"""The variational bound as an evaluator (Ho et al. eq. 5): closed forms against Monte Carlo."""
import math

import pytest
import torch

from ddpmlab.core.diffusion import q_posterior_mean_variance, q_sample
from ddpmlab.core.distributions import GaussianMixture, seed_mixture
from ddpmlab.core.gaussian import gaussian_log_likelihood, nats_to_bpd, normal_kl
from ddpmlab.core.schedule import make_schedule
from ddpmlab.evaluation.likelihood import evaluate_bound, vlb_terms
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.models.seed import SeedReverse
from ddpmlab.objectives.seed_bound import SeedTrajectoryBound
from conftest import gen


def test_pure_gaussian_formulas():
    m1, lv1, m2, lv2 = (torch.randn(5, 3, generator=gen(i), dtype=torch.float64) for i in range(4))
    ref = torch.distributions.kl_divergence(torch.distributions.Normal(m1, (0.5 * lv1).exp()),
                                            torch.distributions.Normal(m2, (0.5 * lv2).exp()))
    torch.testing.assert_close(normal_kl(m1, lv1, m2, lv2), ref)
    torch.testing.assert_close(normal_kl(m1, lv1, m1, lv1), torch.zeros_like(m1))
    x = torch.randn(5, 3, generator=gen(9), dtype=torch.float64)
    torch.testing.assert_close(gaussian_log_likelihood(x, m1, lv1),
                               torch.distributions.Normal(m1, (0.5 * lv1).exp()).log_prob(x))
    assert nats_to_bpd(math.log(2) * 6, 3) == pytest.approx(2.0)


def _gaussian_bound_exact(mean, var, schedule):
    """Entropy of N(mean, diag var) + KL(q(x_T) || N(0, I)); q(x_T) = N(sqrt(abar) mean, abar var + 1 - abar)."""
    mean, var = torch.as_tensor(mean, dtype=torch.float64), torch.as_tensor(var, dtype=torch.float64)
    a = schedule.alphas_cumprod[-1]
    m_T, v_T = a.sqrt() * mean, a * var + 1 - a
    entropy = 0.5 * torch.log(2 * math.pi * math.e * var).sum()
    kl = 0.5 * (v_T + m_T ** 2 - 1 - v_T.log()).sum()
    return float(entropy + kl)


@pytest.mark.parametrize("mean, var", [([1.5], [0.25]), ([0.7, -2.0], [2.0, 0.3])])
def test_gaussian_oracle_bound_is_entropy_plus_prior_kl(mean, var):
    """For Gaussian data q(x_{t-1} | x_t) is Gaussian, so the oracle's reverse steps are exact and its
    bound is E[-log q(x_0)] + KL(q(x_T) || N(0, I)), both in closed form."""
    dist = GaussianMixture([1.0], [mean], [var])
    schedule = make_schedule("constant", 50, beta=0.02)  # KL(q(x_T) || N(0, I)) is far from 0 here
    oracle = MixtureOracle(dist, schedule)
    res = evaluate_bound(oracle, lambda n, g: dist.sample(n, g, dtype=torch.float64), 40_000, gen(1))
    exact = _gaussian_bound_exact(mean, var, schedule)
    assert abs(res["total_nats"] - exact) < 3 * res["total_nats_se"], (res, exact)
    assert res["total_bpd"] == pytest.approx(res["total_nats"] / (len(mean) * math.log(2)))


def test_oracle_bound_at_the_seed_setting_matches_issue_figure():
    """Issue 3: the oracle's bound at beta = 0.02, T = 250 is about 2.069 nats (SE 0.006)."""
    dist = seed_mixture()
    oracle = MixtureOracle(dist, make_schedule("constant", 250, beta=0.02))
    res = evaluate_bound(oracle, dist.sample, 20_000, gen(2))
    assert abs(res["total_nats"] - 2.069) < 3 * math.hypot(res["total_nats_se"], 0.006), res
    assert res["total_nats"] > 2.0554 - 3 * res["total_nats_se"]  # never below the entropy


@torch.no_grad()
def _kl_terms_and_monte_carlo(model, x0, t, g):
    """Per-example analytic KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) and the one-sample Monte-Carlo
    log q(x_{t-1} | x_t, x_0) - log p(x_{t-1} | x_t) at x_{t-1} ~ q(x_{t-1} | x_t, x_0), same x_t."""
    sched = model.schedule
    tt = torch.full((x0.shape[0],), t)
    x_t = q_sample(sched, x0, tt, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    q_mean, q_var, _ = q_posterior_mean_variance(sched, x0, x_t, tt)
    p_mean, p_var = model.p_mean_variance(x_t.float(), tt)[:2]
    p_mean, p_var = p_mean.double(), p_var.double()
    kl = normal_kl(q_mean, q_var.log(), p_mean, p_var.log()).sum(1)
    x_prev = q_mean + q_var.sqrt() * torch.randn(x0.shape, generator=g, dtype=torch.float64)
    mc = (gaussian_log_likelihood(x_prev, q_mean, q_var.log())
          - gaussian_log_likelihood(x_prev, p_mean, p_var.log())).sum(1)
    return kl, mc


def test_analytic_step_terms_equal_their_monte_carlo_estimate():
    dist = seed_mixture()
    schedule = make_schedule("constant", 250, beta=0.02)
    model = SeedReverse(schedule, (1,))
    model.net.reset_parameters(gen(5))  # an untrained model: terms far from zero
    g = gen(6)
    for t in (2, 30, 125, 250):
        x0 = dist.sample(20_000, g, dtype=torch.float64)
        kl, mc = _kl_terms_and_monte_carlo(model, x0, t, g)
        diff = mc - kl  # paired: same x_0 and x_t
        assert abs(float(diff.mean())) < 4 * float(diff.std()) / math.sqrt(len(diff)), t


def _shrinking_seed_model(schedule):
    """The seed's networks set by hand: mean 0.97 x_t, std softplus(c + t / 2T) with std 0.2 at t = 0."""
    model = SeedReverse(schedule, (1,))
    net = model.net
    with torch.no_grad():
        for p in net.parameters():
            p.zero_()
        net.w_in[0, 0, 0], net.w_in[0, 1, 0] = 1.0, -1.0  # relu(x) - relu(-x) = x
        net.w_out[0, 0, 0], net.w_out[0, 0, 1] = 0.97, -0.97
        net.w_in[1, 0, 1], net.w_out[1, 0, 0] = 1.0, 0.5  # + relu(t / T) / 2
        net.b_out[1, 0] = math.log(math.expm1(0.2))
    return model


def test_bound_terms_equal_the_whole_trajectory_monte_carlo_bound():
    """Eq. 5 (analytic KL per step) and eq. 3 (one sampled trajectory: the seed's objective) have the same
    expectation, the model's bound."""
    dist = seed_mixture()
    model = _shrinking_seed_model(make_schedule("constant", 100, beta=0.05))
    g = gen(8)
    res = evaluate_bound(model, dist.sample, 20_000, g)
    bound = SeedTrajectoryBound(model)
    with torch.no_grad():
        x0 = dist.sample(20_000, g)
        traj = bound(x0, torch.randn((model.schedule.T,) + tuple(x0.shape), generator=g)).double()
    mc, mc_se = float(traj.mean()), float(traj.std()) / math.sqrt(len(traj))
    assert abs(res["total_nats"] - mc) < 3 * math.hypot(res["total_nats_se"], mc_se), (res, mc, mc_se)


def test_vlb_terms_shapes_and_prior_term():
    dist = GaussianMixture([1.0], [[0.5, -1.0]], [[0.3, 2.0]])
    schedule = make_schedule("linear", 40, beta_start=1e-3, beta_end=0.1)
    oracle = MixtureOracle(dist, schedule)
    x0 = dist.sample(64, gen(3), dtype=torch.float64)
    terms = vlb_terms(oracle, x0, gen(4), max_rows=100)  # several chunks of whole steps
    for k in ("prior_nats", "steps_nats", "decoder_nats", "total_nats"):
        assert terms[k].shape == (64,) and terms[k].dtype == torch.float64 and torch.isfinite(terms[k]).all()
    a = schedule.alphas_cumprod[-1]
    prior = 0.5 * ((1 - a) + a * x0 ** 2 - 1 - torch.log(1 - a)).sum(1)  # KL(q(x_T | x_0) || N(0, I))
    torch.testing.assert_close(terms["prior_nats"], prior)
    assert (terms["steps_nats"] >= 0).all()  # a sum of KLs

"""Forward process: step-by-step chain vs the closed-form marginal, posterior vs numerical Bayes."""
import math

import pytest
import torch

from ddpmlab.core.diffusion import (forward_trajectory, forward_trajectory_fast, q_mean_variance,
                               q_posterior_mean_variance, q_sample)
from ddpmlab.core.schedule import make_schedule
from conftest import gen


@pytest.mark.parametrize("kind", ["constant", "cosine"])
def test_step_by_step_chain_matches_closed_form_marginal(kind):
    s = make_schedule(kind, 60, beta=0.05)
    n = 40_000
    x0 = torch.full((n, 2), 1.5, dtype=torch.float64)  # a point mass at (1.5, 1.5), 2-D data
    traj = forward_trajectory(s, x0, generator=gen(1))  # (T + 1, n, 2)
    for t in (1, 5, 30, 60):
        mean, var = q_mean_variance(s, x0[:1], torch.tensor([t]))
        m_hat, v_hat = traj[t].mean(0), traj[t].var(0)
        se_m = (var[0] / n).sqrt()
        se_v = var[0] * math.sqrt(2 / (n - 1))
        assert torch.all((m_hat - mean[0]).abs() < 4 * se_m), (t, m_hat, mean)
        assert torch.all((v_hat - var[0]).abs() < 4 * se_v), (t, v_hat, var)


def test_q_sample_matches_closed_form_moments():
    s = make_schedule("linear", 100)
    x0 = torch.randn(5, 3, 4, 4, generator=gen(0), dtype=torch.float64)  # image-shaped data
    t = torch.tensor([1, 10, 50, 99, 100])
    draws = torch.stack([q_sample(s, x0, t, noise=torch.randn(x0.shape, generator=g, dtype=torch.float64))
                         for g in [gen(i) for i in range(2000)]])
    mean, var = q_mean_variance(s, x0, t)
    assert torch.allclose(draws.mean(0), mean, atol=5 * float(var.max().sqrt()) / math.sqrt(2000))


def test_fast_trajectory_equals_the_loop():
    s = make_schedule("cosine", 200)
    x0 = torch.randn(300, 2, generator=gen(2), dtype=torch.float64)
    noise = torch.randn(200, 300, 2, generator=gen(3), dtype=torch.float64)
    assert torch.allclose(forward_trajectory_fast(s, x0, noise), forward_trajectory(s, x0, noise=noise),
                          atol=1e-9)
    s = make_schedule("constant", 250, beta=0.02)  # the seed's setting, in float32
    x0 = torch.randn(1000, 1, generator=gen(4))
    noise = torch.randn(250, 1000, 1, generator=gen(5))
    assert torch.allclose(forward_trajectory_fast(s, x0, noise), forward_trajectory(s, x0, noise=noise),
                          atol=5e-5)


@pytest.mark.parametrize("t", [2, 5, 40])
def test_posterior_matches_numerical_bayes(t):
    """q(x_{t-1} | x_t, x_0) proportional to q(x_t | x_{t-1}) q(x_{t-1} | x_0), integrated on a grid."""
    s = make_schedule("linear", 50, beta_start=0.01, beta_end=0.2)
    x0, xt = 0.7, -0.4
    grid = torch.linspace(-8, 8, 200_001, dtype=torch.float64)
    ab_prev, beta = float(s.alphas_cumprod[t - 1]), float(s.betas[t])
    log_prior = -0.5 * (grid - math.sqrt(ab_prev) * x0) ** 2 / (1 - ab_prev)
    log_lik = -0.5 * (xt - math.sqrt(1 - beta) * grid) ** 2 / beta
    w = torch.softmax(log_prior + log_lik, 0)
    mean_num = float((w * grid).sum())
    var_num = float((w * (grid - mean_num) ** 2).sum())
    mean, var, _ = q_posterior_mean_variance(s, torch.tensor([[x0]], dtype=torch.float64),
                                             torch.tensor([[xt]], dtype=torch.float64), torch.tensor([t]))
    assert math.isclose(float(mean), mean_num, abs_tol=1e-7)
    assert math.isclose(float(var), var_num, rel_tol=1e-6)

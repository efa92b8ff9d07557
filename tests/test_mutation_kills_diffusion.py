"""Oracles for what the forward-process tests left open (issue 27, mutation testing of ``core/diffusion.py``):
q(x_t | x_{t-1}) and q(x_t | x_0) drawing their own noise (Monte-Carlo moments against eq. 2 and 4), the
forward chain and the per-step evaluation chunks drawing from the given generator in the data's dtype,
the fast chain's scales in the requested dtype, and chunks of whole steps that cover first..T once."""
import math

import pytest
import torch

from conftest import gen
from ddpmlab.core.diffusion import (forward_trajectory, q_sample, q_sample_steps, q_step_sample,
                                    trajectory_scales)
from ddpmlab.core.schedule import make_schedule

N = 40_000


@pytest.fixture(scope="module")
def sched():
    return make_schedule("linear", 20, beta_start=1e-2, beta_end=0.3)


def assert_moments(x: torch.Tensor, mean: float, var: float) -> None:
    """Sample mean and variance of x within 4.5 standard errors of the closed form."""
    n = x.numel()
    assert abs(float(x.mean()) - mean) < 4.5 * math.sqrt(var / n), (float(x.mean()), mean)
    assert abs(float(x.var()) - var) < 4.5 * var * math.sqrt(2 / (n - 1)), (float(x.var()), var)


def test_one_forward_step_draws_its_own_noise(sched):
    """x_t ~ N(sqrt(1 - beta_t) x_{t-1}, beta_t) (eq. 2) when no noise is given."""
    t = 7
    x = q_step_sample(sched, torch.full((N, 1), 2.0, dtype=torch.float64), torch.tensor(t))
    beta = float(sched.betas[t])
    assert_moments(x, math.sqrt(1 - beta) * 2.0, beta)


def test_q_sample_draws_its_own_noise(sched):
    """x_t ~ N(sqrt(abar_t) x_0, 1 - abar_t) (eq. 4) when no noise is given."""
    t = 12
    x = q_sample(sched, torch.full((N, 1), -1.5, dtype=torch.float64), torch.full((N,), t))
    abar = float(sched.alphas_cumprod[t])
    assert_moments(x, math.sqrt(abar) * -1.5, 1 - abar)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_forward_chain_draws_from_the_generator_in_the_datas_dtype(sched, dtype):
    x0 = torch.randn(5, 2, generator=gen(0), dtype=dtype)
    noise = torch.randn((sched.T, 5, 2), generator=gen(1), dtype=dtype)
    drawn = forward_trajectory(sched, x0, gen(1))
    assert drawn.dtype == dtype
    torch.testing.assert_close(drawn, forward_trajectory(sched, x0, noise=noise), rtol=0, atol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_fast_chains_scales_come_in_the_requested_dtype(sched, dtype):
    scale_in, scale_out = trajectory_scales(sched, dtype)
    assert scale_in.dtype == dtype and scale_out.dtype == dtype
    torch.testing.assert_close(scale_in, (sched.betas[1:] / sched.alphas_cumprod[1:]).sqrt().to(dtype))
    torch.testing.assert_close(scale_out, sched.alphas_cumprod[1:].sqrt().to(dtype))


@pytest.mark.parametrize("first, max_rows", [(1, 5), (1, 8), (4, 9), (3, 1000)])
def test_evaluation_chunks_hold_whole_steps_cover_each_once_and_draw_from_the_generator(sched, first, max_rows):
    """At most max(1, max_rows // B) steps a chunk (one step when a step alone overflows), steps first..T
    once each in order, example fastest, and x_t = q_sample with float64 noise drawn chunk by chunk."""
    B = 3
    x0 = torch.randn(B, 2, generator=gen(0), dtype=torch.float64)
    g, again = gen(5), gen(5)
    steps = []
    for ts, t, x0_rep, x_t in q_sample_steps(sched, x0, first, max_rows, g):
        assert 1 <= len(ts) <= max(1, max_rows // B)
        assert torch.equal(t, ts.repeat_interleave(B)) and torch.equal(x0_rep, x0.repeat(len(ts), 1))
        noise = torch.randn(x0_rep.shape, generator=again, dtype=torch.float64)
        torch.testing.assert_close(x_t, q_sample(sched, x0_rep, t, noise), rtol=0, atol=0)
        steps += ts.tolist()
    assert steps == list(range(first, sched.T + 1))

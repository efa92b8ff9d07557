"""Mean types x variance types: each head, fed its exact target, gives the true posterior."""
import math

import pytest
import torch

from ddpmlab.core.diffusion import q_posterior_mean_variance, q_sample
from ddpmlab.core.mean_types import v_target
from ddpmlab.core.parameterisation import GaussianDiffusion
from ddpmlab.core.schedule import make_schedule
from conftest import gen


@pytest.mark.parametrize("mean_type", ["previous_x", "x0", "epsilon", "v"])
def test_exact_head_gives_posterior_mean(mean_type):
    s = make_schedule("cosine", 100)
    d = GaussianDiffusion(s, mean_type, "fixed_small")
    x0 = torch.randn(64, 3, generator=gen(0), dtype=torch.float64)
    t = torch.randint(1, 101, (64,), generator=gen(1))
    eps = torch.randn(64, 3, generator=gen(2), dtype=torch.float64)
    x_t = q_sample(s, x0, t, eps)
    post_mean, post_var, _ = q_posterior_mean_variance(s, x0, x_t, t)
    head = d.mean_target(x0, x_t, t, eps)
    out = d.p_mean_variance(head, x_t, t)
    assert torch.allclose(out.mean, post_mean, atol=1e-8)
    # x0 and eps are only recoverable from a previous-x head where coef1 is not tiny
    ok = s.posterior_mean_coef1[t] > 1e-3 if mean_type == "previous_x" else torch.ones(64, dtype=torch.bool)
    assert torch.allclose(out.pred_x0[ok], x0[ok], atol=1e-6)
    assert torch.allclose(out.pred_eps[ok], eps[ok], atol=1e-5)


def test_v_target_definition():
    s = make_schedule("linear", 50)
    x0, eps, t = torch.randn(10, 2, dtype=torch.float64), torch.randn(10, 2, dtype=torch.float64), torch.arange(1, 11)
    ab = s.alphas_cumprod[t][:, None]
    assert torch.allclose(v_target(s, x0, t, eps), ab.sqrt() * eps - (1 - ab).sqrt() * x0)


def test_variance_types():
    s = make_schedule("linear", 100)
    x = torch.zeros(4, 2, dtype=torch.float64)
    t = torch.tensor([1, 2, 50, 100])
    small = GaussianDiffusion(s, "epsilon", "fixed_small")
    large = GaussianDiffusion(s, "epsilon", "fixed_large")
    assert torch.allclose(small.p_mean_variance(x, x, t).variance[:, 0], s.posterior_variance[[2, 2, 50, 100]])
    # fixed_large is beta_t, except at t = 1, where beta_1 would leave the decoder a near-zero variance: there
    # it takes beta-tilde_2 (improved-diffusion's choice), and beta_1 itself only when T = 1
    expect_large = torch.stack([s.posterior_variance[2], s.betas[2], s.betas[50], s.betas[100]])
    assert torch.allclose(large.p_mean_variance(x, x, t).variance[:, 0], expect_large, rtol=1e-12, atol=0)
    one = make_schedule("linear", 1)
    out = GaussianDiffusion(one, "epsilon", "fixed_large").p_mean_variance(x[:1], x[:1], torch.tensor([1]))
    assert torch.allclose(out.variance[0, 0], one.betas[1], rtol=1e-12, atol=0) and one.betas[1] > 0
    lr = GaussianDiffusion(s, "epsilon", "learned_range")
    for v, expect in ((1.0, s.betas[t].log()), (-1.0, s.posterior_log_variance_clipped[t])):
        out = torch.cat([x, torch.full_like(x, v)], dim=1)  # mean head, variance head
        assert torch.allclose(lr.p_mean_variance(out, x, t).log_variance[:, 0], expect)
    learned = GaussianDiffusion(s, "epsilon", "learned")
    out = torch.cat([x, torch.full_like(x, -3.0)], dim=1)
    assert torch.allclose(learned.p_mean_variance(out, x, t).variance, torch.full_like(x, math.exp(-3.0)))

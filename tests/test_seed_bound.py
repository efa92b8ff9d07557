"""The vectorised seed bound against a plain per-step loop of the seed's eq. 3."""
import math

import pytest
import torch

from ddpmlab.core.diffusion import forward_trajectory
from ddpmlab.core.distributions import seed_mixture
from ddpmlab.models.seed import SeedReverse
from ddpmlab.objectives.seed_bound import SeedTrajectoryBound
from ddpmlab.core.schedule import make_schedule
from conftest import gen


def seed_loss_loop(model, traj, beta):
    """The seed's compute_loss, step by step with torch.distributions (times t / T, as fixed)."""
    T = traj.shape[0] - 1
    N = traj.shape[1]
    p = torch.distributions.Normal(torch.zeros_like(traj[0]), torch.ones_like(traj[0]))
    loss = -p.log_prob(traj[-1]).sum(-1).mean()
    for t in range(1, T + 1):
        xt, xprev = traj[t], traj[t - 1]
        q = torch.distributions.Normal(math.sqrt(1 - beta) * xprev, math.sqrt(beta))
        mu, sigma = model.net(xt, torch.full((N,), t / T, dtype=xt.dtype))
        loss = loss - torch.distributions.Normal(mu, sigma).log_prob(xprev).sum(-1).mean()
        loss = loss + q.log_prob(xt).sum(-1).mean()
    return loss / (T + 1)


@pytest.mark.parametrize("fused", [True, False])
def test_vectorised_bound_equals_the_plain_loop(fused):
    T, beta = 250, 0.02
    s = make_schedule("constant", T, beta=beta)
    model = SeedReverse(s, (1,), hidden=4).double()
    model.net.reset_parameters(gen(0))
    model.double()
    x0 = seed_mixture().sample(1000, gen(1), dtype=torch.float64)
    noise = torch.randn(T, 1000, 1, generator=gen(2), dtype=torch.float64)
    traj = forward_trajectory(s, x0, noise=noise)

    ref = seed_loss_loop(model, traj, beta)
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    fast = SeedTrajectoryBound(model, fused=fused)(x0, noise).mean() / (T + 1)
    grads = torch.autograd.grad(fast, list(model.parameters()))
    assert abs(float(fast.detach()) - float(ref.detach())) < 1e-5
    for g, r in zip(grads, ref_grads):
        assert torch.allclose(g, r, rtol=1e-6, atol=1e-8)


def test_fused_float32_agrees_with_autograd_path():
    s = make_schedule("constant", 250, beta=0.02)
    model = SeedReverse(s, (1,), hidden=6)
    model.net.reset_parameters(gen(3))
    x0 = seed_mixture().sample(500, gen(4))
    noise = torch.randn(250, 500, 1, generator=gen(5))
    w = torch.rand(500, generator=gen(6))  # a non-uniform upstream gradient per example
    out = {}
    for fused in (True, False):
        L = SeedTrajectoryBound(model, fused=fused)(x0, noise)
        out[fused] = (L.detach(), torch.autograd.grad((L * w).sum(), list(model.parameters())))
    assert torch.allclose(out[True][0], out[False][0], rtol=1e-5, atol=1e-3)
    for a, b in zip(out[True][1], out[False][1]):
        assert torch.allclose(a, b, rtol=1e-3, atol=1e-3 * float(b.abs().max()))


def test_bound_on_2d_data_uses_any_dimension():
    s = make_schedule("constant", 20, beta=0.05)
    model = SeedReverse(s, (2,), hidden=8)
    x0 = torch.randn(64, 2, generator=gen(7))
    L = SeedTrajectoryBound(model)(x0, torch.randn(20, 64, 2, generator=gen(8)))
    assert L.shape == (64,) and torch.isfinite(L).all()
    L.mean().backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError):
        SeedTrajectoryBound(model, fused=True)(x0, torch.randn(20, 64, 2))


def test_backward_refuses_a_reused_workspace():
    s = make_schedule("constant", 10, beta=0.05)
    model = SeedReverse(s, (1,))
    bound = SeedTrajectoryBound(model)
    x0 = torch.randn(8, 1)
    first = bound(x0, torch.randn(10, 8, 1)).sum()
    bound(x0, torch.randn(10, 8, 1))  # overwrites the shared buffers
    with pytest.raises(RuntimeError, match="workspace"):
        first.backward()

"""The vectorised seed bound against a plain per-step loop of the seed's eq. 3."""
import math

import pytest
import torch

from ddpmlab.core.diffusion import forward_trajectory
from ddpmlab.core.distributions import GaussianMixture, seed_mixture
from ddpmlab.core.schedule import make_schedule
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.models.seed import SeedReverse
from ddpmlab.objectives.seed_bound import SeedTrajectoryBound
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


def test_bound_on_2d_data_equals_the_plain_loop():
    """The seed's networks on 2-D data (the autograd path): value and gradient of the plain loop."""
    T, beta = 20, 0.05
    s = make_schedule("constant", T, beta=beta)
    model = SeedReverse(s, (2,), hidden=8).double()
    x0 = torch.randn(64, 2, generator=gen(7), dtype=torch.float64) * torch.tensor([1.0, 3.0], dtype=torch.float64)
    noise = torch.randn(T, 64, 2, generator=gen(8), dtype=torch.float64)
    ref = seed_loss_loop(model, forward_trajectory(s, x0, noise=noise), beta)
    fast = SeedTrajectoryBound(model)(x0, noise).mean() / (T + 1)
    assert float(fast.detach()) == pytest.approx(float(ref.detach()), rel=1e-9)
    params = list(model.parameters())
    for g, r in zip(torch.autograd.grad(fast, params), torch.autograd.grad(ref, params)):
        torch.testing.assert_close(g, r, rtol=1e-6, atol=1e-8)
    with pytest.raises(ValueError):
        SeedTrajectoryBound(model, fused=True)(x0, noise)


def test_bound_of_the_exact_reverse_process_in_closed_form():
    """For Gaussian data with a diagonal covariance the exact oracle's reverse steps are q(x_{t-1} | x_t)
    itself, so by Bayes' rule along the chain the whole-trajectory bound of one trajectory is, exactly,
    L = -log q(x_0) + log q(x_T) - log N(x_T; 0, I)   (its mean: the entropy plus KL(q(x_T) || N(0, I)))."""
    T, beta = 20, 0.05
    s = make_schedule("constant", T, beta=beta)
    data = GaussianMixture([1.0], [[1.0, -0.5]], [[[0.3, 0.0], [0.0, 2.0]]])
    oracle = MixtureOracle(data, s, (2,))
    x0 = data.sample(500, gen(9), dtype=torch.float64)
    noise = torch.randn(T, 500, 2, generator=gen(10), dtype=torch.float64)
    x_T = x0
    for t in range(T):  # q's chain, eq. 2
        x_T = math.sqrt(1 - beta) * x_T + math.sqrt(beta) * noise[t]
    q_T = data.diffused(float(s.alphas_cumprod[T]))
    expected = -data.log_prob(x0) + q_T.log_prob(x_T) + 0.5 * x_T.square().sum(1) + math.log(2 * math.pi)
    torch.testing.assert_close(SeedTrajectoryBound(oracle)(x0, noise), expected, rtol=1e-9, atol=1e-9)


def test_backward_refuses_a_reused_workspace():
    s = make_schedule("constant", 10, beta=0.05)
    model = SeedReverse(s, (1,))
    bound = SeedTrajectoryBound(model)
    x0 = torch.randn(8, 1)
    first = bound(x0, torch.randn(10, 8, 1)).sum()
    bound(x0, torch.randn(10, 8, 1))  # overwrites the shared buffers
    with pytest.raises(RuntimeError, match="workspace"):
        first.backward()

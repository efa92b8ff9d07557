"""Preconditioning by the data's Gaussian fit: a zero network is the exact reverse process of Gaussian
data (closed form from the oracle), for every mean type and in 2-D; the moments travel with the run."""
import math

import pytest
import torch

from ddpmlab.config.build import build_model
from ddpmlab.config.schema import load_config
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.oracle import MixtureOracle
from conftest import gen

M, S = 1.5, 2.5  # scalar mean and standard deviation of the Gaussian data


def _x0_eps(model, x_t, t):
    """x_0 and eps the model's reverse step implies (the contract's pred_x0, pred_eps)."""
    p = model.p_mean_variance(x_t, t)
    return p.pred_x0, p.pred_eps


def _zero_net_model(mean_type: str, dim: int, var_type: str = "fixed_small"):
    objective = "hybrid" if var_type.startswith("learned") else "simple"
    cfg = load_config(None, ["schedule.steps=100", "schedule.kind='linear'", "model.width=16", "model.depth=1",
                             f"model.mean_type='{mean_type}'", f"model.var_type='{var_type}'",
                             "model.precondition=true", f"train.objective='{objective}'"])
    model = build_model(cfg, (dim,)).double()
    last = model.net.out[-1]
    with torch.no_grad():
        n_mean = dim  # the mean head is the first block of outputs; a variance head keeps its weights
        last.weight[:n_mean].zero_()
        last.bias[:n_mean].zero_()
    model.precond.set_moments(M, S)
    return model


@pytest.mark.parametrize("mean_type", ["epsilon", "x0", "v"])
@pytest.mark.parametrize("dim", [1, 2])
def test_zero_network_is_the_gaussian_oracle(mean_type, dim):
    model = _zero_net_model(mean_type, dim)
    dist = GaussianMixture([1.0], torch.full((1, dim), M), [S * S])
    oracle = MixtureOracle(dist, model.schedule)
    x = dist.sample(64, gen(0), dtype=torch.float64)
    for t in (1, 7, 50, 100):
        tt = torch.full((64,), t)
        ab = model.schedule.alphas_cumprod[t]
        x_t = ab.sqrt() * x + (1 - ab).sqrt() * torch.randn(x.shape, generator=gen(t), dtype=torch.float64)
        x0_m, eps_m = _x0_eps(model, x_t, tt)
        x0_o, eps_o = _x0_eps(oracle, x_t, tt)
        assert torch.allclose(x0_m, x0_o, atol=1e-8), (t, (x0_m - x0_o).abs().max())
        assert torch.allclose(eps_m, eps_o, atol=1e-8), (t, (eps_m - eps_o).abs().max())
        mean_m, _ = model.p_mean_variance(x_t, tt)[:2]
        mean_o, _ = oracle.p_mean_variance(x_t, tt)[:2]
        assert torch.allclose(mean_m, mean_o, atol=1e-8)


@pytest.mark.parametrize("mean_type", ["epsilon", "x0", "v"])
def test_residual_scale_is_the_gaussian_residual_spread(mean_type):
    """Under the Gaussian fit, the target's residual around its conditional mean has the spread the
    output scale assumes: an F of unit variance moves the head by exactly that (Monte-Carlo)."""
    model = _zero_net_model(mean_type, 1)
    p = model.precond
    n = 200_000
    x0 = M + S * torch.randn(n, 1, generator=gen(1), dtype=torch.float64)
    eps = torch.randn(n, 1, generator=gen(2), dtype=torch.float64)
    for t in (3, 40, 90):
        ab = model.schedule.alphas_cumprod[t]
        x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * eps
        target = model.diffusion.mean_target(x0, x_t, torch.full((n,), t), eps)
        residual = target - p.mean_head(torch.zeros_like(x_t), x_t, ab)
        scale = p.mean_head(torch.ones_like(x_t), x_t, ab) - p.mean_head(torch.zeros_like(x_t), x_t, ab)
        assert abs(residual.mean().item()) < 4 * residual.std().item() / math.sqrt(n)
        assert residual.std().item() == pytest.approx(scale.abs().mean().item(), rel=0.01)
        assert p.scale_input(x_t, ab).std().item() == pytest.approx(1.0, rel=0.01)


def test_continuous_eps_matches_the_grid():
    model = _zero_net_model("v", 2)
    torch.nn.init.normal_(model.net.out[-1].weight, std=0.3)  # a non-trivial network
    x = torch.randn(16, 2, generator=gen(3), dtype=torch.float64)
    for t in (1, 33, 100):
        _, eps = _x0_eps(model, x, torch.full((16,), t))
        eps_c = model.eps_continuous(x, float(t), model.schedule.alphas_cumprod[t].item())
        assert torch.allclose(eps, eps_c, atol=1e-10)


def test_learned_variance_head_is_left_alone():
    model = _zero_net_model("epsilon", 1, var_type="learned_range")
    x = torch.randn(8, 1, generator=gen(4), dtype=torch.float64)
    tt = torch.full((8,), 20)
    out = model(x, tt)
    ab = model.schedule.alphas_cumprod[20]
    raw = model.net(model.precond.scale_input(x, ab), model.schedule.model_time(tt))
    assert torch.allclose(out[:, 1:], raw[:, 1:], rtol=0, atol=1e-13)  # the model's fast path rounds apart


def test_previous_x_cannot_be_preconditioned():
    with pytest.raises(DDPMLabError, match="precondition"):
        load_config(None, ["model.mean_type='previous_x'", "model.var_type='learned'", "model.precondition=true",
                           "train.objective='vlb'"])


def test_constant_data_is_refused():
    model = _zero_net_model("epsilon", 1)
    with pytest.raises(DDPMLabError, match="spread"):
        model.precond.set_moments(0.0, 0.0)


def test_moments_are_set_from_the_data_and_saved_with_the_run(tmp_path):
    from ddpmlab.workflows.pipeline import train_run
    from ddpmlab.runs.format import load_run

    cfg = load_config("default", ["train.iters=3", "schedule.steps=20", "model.width=8", "model.depth=1",
                                  "data.n_train=500", "train.batch_size=64",
                                  "model.precondition=true"])
    train_run(cfg, tmp_path / "run", progress=False)
    run = load_run(tmp_path / "run")
    p = run.model.precond
    assert p is not None  # the seed mixture: mean 4/3, standard deviation sqrt(17 - 16/9)
    assert abs(p.data_mean.item() - 4 / 3) < 4 * 3.9 / math.sqrt(500)
    assert p.data_std.item() == pytest.approx(math.sqrt(17 - 16 / 9), rel=0.1)


@pytest.mark.parametrize("mean_type", ["epsilon", "x0", "v"])
def test_simple_loss_is_the_networks_own_squared_error(mean_type):
    from ddpmlab.objectives.losses import Simple

    model = _zero_net_model(mean_type, 2)
    torch.nn.init.normal_(model.net.out[-1].weight, std=0.3)
    x0 = M + S * torch.randn(32, 2, generator=gen(5), dtype=torch.float64)
    loss = Simple()
    value = loss(model, x0, gen(6))
    t, _, noise, x_t = loss.draw(model, x0, gen(6))  # the same draws
    ab = model.schedule.alphas_cumprod[t].reshape(-1, 1)
    p = model.precond
    F = model.net(p.scale_input(x_t, ab), model.schedule.model_time(t))
    target = model.diffusion.mean_target(x0, x_t, t, noise)
    c_out = p.mean_head(torch.ones_like(x_t), x_t, ab) - p.mean_head(torch.zeros_like(x_t), x_t, ab)
    F_target = (target - p.mean_head(torch.zeros_like(x_t), x_t, ab)) / c_out
    assert torch.allclose(value, ((F_target - F) ** 2).mean(1), rtol=1e-9, atol=1e-12)
    assert torch.allclose(p.residual_target(target, x_t, ab), F_target, rtol=1e-12, atol=1e-12)
    head = p.mean_head(F, x_t, ab)  # the same loss written on the head: ((target - head) / c_out)^2
    assert torch.allclose(value, (((target - head) / c_out) ** 2).mean(1), rtol=1e-9, atol=1e-12)

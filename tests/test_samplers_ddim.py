"""DDIM against the ancestral step, and respaced ancestral sampling."""
import torch

from ddpmlab.config.build import build_model
from ddpmlab.config.schema import load_config
from ddpmlab.core.diffusion import q_posterior_mean_variance
from ddpmlab.sampling.samplers import ddim_step
from conftest import gen


def _x0_eps(model, x_t, t):
    """x_0 and eps the model's reverse step implies (the contract's pred_x0, pred_eps)."""
    p = model.p_mean_variance(x_t, t)
    return p.pred_x0, p.pred_eps


def _model(*extra):
    cfg = load_config(None, ["schedule.steps=50", "model.width=16", "model.depth=1", *extra])
    torch.manual_seed(0)
    return build_model(cfg, (2,)).double()


def test_ddim_eta_one_is_the_ancestral_step():
    model = _model()
    x = torch.randn(16, 2, generator=gen(0), dtype=torch.float64)
    for t in (2, 10, 50):
        mean, var = ddim_step(model, x, t, t - 1, eta=1.0)
        tt = torch.full((16,), t)
        a_mean, a_var = model.p_mean_variance(x, tt)[:2]  # fixed small variance: beta-tilde_t
        assert torch.allclose(var, a_var, rtol=1e-10)
        assert torch.allclose(mean, a_mean, atol=1e-10)


def test_ddim_eta_zero_is_deterministic_and_uses_x0():
    model = _model("model.mean_type='x0'")
    x = torch.randn(8, 2, generator=gen(1), dtype=torch.float64)
    mean, var = ddim_step(model, x, 50, 0, eta=0.0)
    x0, _ = _x0_eps(model, x, torch.full((8,), 50))
    assert torch.all(var == 0) and torch.allclose(mean, x0, atol=1e-10)  # straight to x_0 (abar_0 = 1)


def test_respaced_model_keeps_its_marginals():
    model = _model()
    r = model.respaced(10)
    assert r.schedule.T == 10 and r.net is model.net
    kept = r.schedule.timesteps
    assert torch.allclose(r.schedule.alphas_cumprod, model.schedule.alphas_cumprod[kept])
    # one respaced step, given the true x0 in its posterior, is the posterior between kept steps
    x0 = torch.randn(4, 2, dtype=torch.float64)
    xt = torch.randn(4, 2, dtype=torch.float64)
    m, v, _ = q_posterior_mean_variance(r.schedule, x0, xt, torch.full((4,), 5))
    ab_t, ab_s = model.schedule.alphas_cumprod[kept[5]], model.schedule.alphas_cumprod[kept[4]]
    beta = 1 - ab_t / ab_s
    assert torch.allclose(v[:, 0], (1 - ab_s) / (1 - ab_t) * beta)

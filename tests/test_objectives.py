"""Objectives: the Rao-Blackwellised bound against the whole-trajectory bound (Monte Carlo), importance
sampling's weights, and the hybrid loss's stop-gradient."""
import math

import torch

from ddpmlab.config.build import build_model
from ddpmlab.config.schema import load_config
from ddpmlab.core.distributions import seed_mixture
from ddpmlab.objectives.losses import Hybrid, VLB
from ddpmlab.objectives.seed_bound import SeedTrajectoryBound
from ddpmlab.objectives.timesteps import ImportanceTimesteps
from conftest import gen


def _model(var_type="learned_range", arch="mlp", steps=20):
    mean = "previous_x" if arch == "seed" else "epsilon"
    var = "learned" if arch == "seed" else var_type
    cfg = load_config(None, [f"model.arch={arch!r}", f"model.mean_type={mean!r}", f"model.var_type={var!r}",
                             f"schedule.steps={steps}", "schedule.kind='linear'", "schedule.beta_start=0.01",
                             "schedule.beta_end=0.3", "model.width=16", "model.depth=1", "train.objective='vlb'"])
    torch.manual_seed(0)
    model = build_model(cfg, (1,)).double()
    return model


def _mean_se(v):
    v = v.double()
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


def test_rao_blackwellised_bound_has_the_whole_trajectory_expectation():
    for arch in ("mlp", "seed"):
        model = _model(arch=arch)
        x0 = seed_mixture().sample(40_000, gen(1), dtype=torch.float64)
        T = model.schedule.T
        with torch.no_grad():
            whole = SeedTrajectoryBound(model)(x0, torch.randn((T,) + x0.shape, generator=gen(2), dtype=torch.float64))
            rb = VLB()(model, x0, gen(3))
        (m1, s1), (m2, s2) = _mean_se(whole), _mean_se(rb)
        assert abs(m1 - m2) < 4 * math.hypot(s1, s2), (arch, m1, s1, m2, s2)


def test_importance_weights_keep_the_estimate_unbiased():
    T = 8
    sampler = ImportanceTimesteps(T, history=2)
    f = torch.arange(1, T + 1, dtype=torch.float64) ** 2  # a per-step "loss"
    for t in range(1, T + 1):
        sampler.update(torch.tensor([t, t]), f[[t - 1, t - 1]])
    p = sampler.probs()
    assert not torch.allclose(p, torch.full_like(p, 1 / T))  # no longer uniform
    t, w = sampler.sample(400_000, gen(4))
    est = (w.double() * f[t - 1]).mean()
    assert abs(float(est) - float(f.mean())) < 0.01 * float(f.mean())


def test_hybrid_bound_trains_only_the_variance_head():
    model = _model("learned_range")
    x0 = torch.randn(256, 1, generator=gen(5), dtype=torch.float64)
    loss = Hybrid(weight=1.0)
    # gradient of the bound part alone = hybrid minus simple; compare against a pure-simple objective
    g_h = torch.autograd.grad(loss(model, x0, gen(6)).mean(), model.net.out[-1].weight)[0]
    loss.weight = 0.0
    g_s = torch.autograd.grad(loss(model, x0, gen(6)).mean(), model.net.out[-1].weight)[0]
    mean_rows = slice(0, 1)  # output row 0 is the mean head, row 1 the variance head
    assert torch.allclose(g_h[mean_rows], g_s[mean_rows], atol=1e-12)
    assert not torch.allclose(g_h[1:], g_s[1:])

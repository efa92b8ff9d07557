"""The stable target field of flow matching (Xu et al. 2023; ``flow_target = "stable"``): the batched
computation against a plain per-row loop, its limits (the conditional target near the data, the batch
mean at the prior), class labels, the exact velocity as the reference batch grows, and the config."""

import pytest
import torch

import ddpmlab as dl
from conftest import gen, mixture_2d
from ddpmlab.config.schema import load_config
from ddpmlab.core.distributions import seed_mixture
from ddpmlab.core.paths import LinearPath
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.flow_model import FlowModel
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.objectives.flow_matching import FlowMatching
from ddpmlab.objectives.flow_matching import stable_target
from ddpmlab.training.trainer import Trainer

PATH = LinearPath()


def plain_stable_target(x0, eps, t, r, cond=None, null_class=None):
    """Row by row, in float64: the posterior mean of eps - x_0 given x_t under the empirical distribution
    of {own x_0} and the first r rows (the own row counted once), weights N(x_t; (1 - t) x_0^j, t^2 I)."""
    x0, eps = x0.double().reshape(x0.shape[0], -1), eps.double().reshape(x0.shape[0], -1)
    out = torch.empty_like(x0)
    for i in range(x0.shape[0]):
        ti = float(t[i])
        x_t = (1 - ti) * x0[i] + ti * eps[i]
        refs = [i] + [j for j in range(r) if j != i and (cond is None or cond[j] == cond[i] or cond[i] == null_class)]
        cand = x0[refs]
        logw = -((x_t - (1 - ti) * cand) ** 2).sum(1) / (2 * ti * ti)
        w = torch.softmax(logw, 0)
        u = (x_t - (1 - ti) * cand) / ti - cand  # eps_j - x_0^j with eps_j = (x_t - (1 - t) x_0^j) / t
        out[i] = (w[:, None] * u).sum(0)
    return out


@pytest.mark.parametrize("dim, r", [(1, 0), (2, 17), (3, 40)])
def test_batched_stable_target_equals_the_plain_loop(dim, r):
    n = 40
    x0 = 2 * torch.randn(n, dim, generator=gen(dim))
    eps = torch.randn(n, dim, generator=gen(10 + dim))
    t = torch.rand(n, generator=gen(20 + dim), dtype=torch.float64) * 0.98 + 0.02
    t[:4] = torch.tensor([0.03, 0.3, 0.97, 1.0], dtype=torch.float64)
    fast = stable_target(PATH, x0, eps, t, r)
    plain = plain_stable_target(x0, eps, t, r or n)
    torch.testing.assert_close(fast.double(), plain, rtol=1e-5, atol=1e-5)
    assert fast.dtype == x0.dtype and fast.shape == x0.shape
    # the test can fail: dropping the own row's duplicate exclusion changes the answer
    assert float((stable_target(PATH, x0, eps, t, 1) - fast).abs().max()) > 1e-2


def test_stable_target_with_classes_averages_within_the_class_and_all_for_the_null_class():
    n, null = 30, 3
    x0 = 3 * torch.randn(n, 2, generator=gen(0))
    eps = torch.randn(n, 2, generator=gen(1))
    t = torch.rand(n, generator=gen(2), dtype=torch.float64) * 0.9 + 0.1
    cond = torch.randint(0, null + 1, (n,), generator=gen(3))
    fast = stable_target(PATH, x0, eps, t, 0, cond, null)
    torch.testing.assert_close(fast.double(), plain_stable_target(x0, eps, t, n, cond, null), rtol=1e-5, atol=1e-5)
    # at the prior (t = 1) every weight is equal: x_t minus the mean x_0 of the row's class (all for null)
    t1 = torch.ones(n, dtype=torch.float64)
    at_prior = stable_target(PATH, x0, eps, t1, 0, cond, null)
    for i in range(n):
        same = x0 if int(cond[i]) == null else x0[cond == cond[i]]
        torch.testing.assert_close(at_prior[i], eps[i] - same.mean(0), rtol=1e-5, atol=1e-5)


def test_stable_target_limits_near_the_data_and_at_the_prior():
    """t -> 0: the own row has all the weight (the conditional target eps - x_0); t = 0 exactly is
    finite; t = 1: x_t - the mean of the reference batch and the own x_0."""
    n, r = 64, 16
    x0 = seed_mixture().sample(n, gen(4))
    eps = torch.randn(n, 1, generator=gen(5))
    for tiny in (1e-6, 0.0):
        u = stable_target(PATH, x0, eps, torch.full((n,), tiny, dtype=torch.float64), r)
        torch.testing.assert_close(u, eps - x0, rtol=1e-5, atol=1e-5)
    u = stable_target(PATH, x0, eps, torch.ones(n, dtype=torch.float64), r)
    mean_ref = x0[:r].sum(0)
    expect = torch.stack([eps[i] - ((mean_ref + (x0[i] if i >= r else 0)) / (r + (i >= r))) for i in range(n)])
    torch.testing.assert_close(u, expect, rtol=1e-5, atol=1e-5)


def test_stable_target_approaches_the_exact_velocity_as_the_reference_grows():
    """2-D mixture at t = 0.6: the mean squared distance of the stable target to the oracle's
    E[eps - x_0 | x_t] falls with the reference size and is a small fraction of the conditional target's
    (whose distance is the target's own noise); so does its bias, the mean over the rows (not a z-test:
    the rows share their reference batch, so their errors are correlated)."""
    dist = mixture_2d()
    oracle = FlowMixtureOracle(dist)
    n, t = 3000, 0.6
    x0 = dist.sample(n, gen(6))
    eps = torch.randn(n, 2, generator=gen(7))
    tt = torch.full((n,), t, dtype=torch.float64)
    v = oracle.velocity(((1 - t) * x0 + t * eps).double(), t)
    resid = {r: stable_target(PATH, x0, eps, tt, r).double() - v for r in (30, 300, 3000)}
    mse = {r: float(e.square().sum(1).mean()) for r, e in resid.items()}
    bias = {r: float(e.mean(0).norm()) for r, e in resid.items()}
    cond_mse = float(((eps - x0).double() - v).square().sum(1).mean())
    assert mse[3000] < mse[300] < mse[30] < cond_mse
    assert mse[3000] < 0.002 * cond_mse, (mse, cond_mse)
    assert bias[3000] < bias[300] < bias[30] and bias[3000] < 0.01, bias


def test_workspace_is_reused_and_resized():
    ws = {}
    x0, eps = torch.randn(50, 2, generator=gen(8)), torch.randn(50, 2, generator=gen(9))
    t = torch.rand(50, generator=gen(10), dtype=torch.float64)
    a = stable_target(PATH, x0, eps, t, 20, workspace=ws)
    kept = ws["logits"]
    b = stable_target(PATH, x0, eps, t, 20, workspace=ws)
    assert ws["logits"] is kept
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    torch.testing.assert_close(stable_target(PATH, x0[:30], eps[:30], t[:30], 20, workspace=ws),
                               stable_target(PATH, x0[:30], eps[:30], t[:30], 20), rtol=0, atol=0)
    assert ws["logits"].shape == (30, 21)


def test_config_records_and_refuses():
    cfg = load_config("flow")
    assert cfg.train.flow_target == "stable" and cfg.train.reference_batch == 0
    for overrides, needle in [(["train.flow_target=stable"], "flow option"),
                              (["train.reference_batch=8"], "flow option")]:
        with pytest.raises(DDPMLabError, match=needle) as exc:
            load_config("default", overrides)
        assert "\n" not in str(exc.value)
    with pytest.raises(DDPMLabError, match="conditional, stable"):
        load_config("flow", ["train.flow_target=exact"])
    with pytest.raises(DDPMLabError, match="reference_batch"):
        load_config("flow", ["train.reference_batch=-1"])
    with pytest.raises(DDPMLabError, match="conditional, stable"):
        FlowMatching(target="exact")


def test_library_trainer_records_the_stable_target(tmp_path):
    x = seed_mixture().sample(1000, gen(11))
    model = FlowModel(MLPDenoiser(1, width=16, depth=1, time_dim=8), data_shape=(1,))
    trainer = Trainer(model, FlowMatching(target="stable", reference_batch=64), x, out=tmp_path / "run",
                      batch_size=128)
    trainer.run(20, progress=False)
    trainer.save()
    run = dl.load_run(tmp_path / "run", net=MLPDenoiser(1, width=16, depth=1, time_dim=8))
    assert (run.cfg.train.flow_target, run.cfg.train.reference_batch) == ("stable", 64)

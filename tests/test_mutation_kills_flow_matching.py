"""Oracles for ``objectives/flow_matching.py`` (issue 27, mutation testing): the time densities against
their definitions and moments, the per-example loss against a plain computation from the same draws
(conditional and stable targets), the block split of the stable target against a
plain per-row loop on a batch larger than one block, labels with the null class, and the refusals."""
import math

import pytest
import torch

from conftest import gen
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.schedule import make_schedule
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.core.paths import LinearPath
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.conditional_oracle import LabelledFlowMixtureOracle
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.objectives import flow_matching as fm
from ddpmlab.objectives.flow_matching import FlowMatching, draw_times, stable_target

DIST = GaussianMixture([0.4, 0.6], [[-1.0, 0.5], [1.5, -0.5]], [0.3, 0.6])


def test_time_densities_are_their_definitions():
    assert torch.equal(draw_times(50, "uniform", gen(0)), torch.rand(50, generator=gen(0), dtype=torch.float64))
    z = torch.randn(50, generator=gen(1), dtype=torch.float64)
    torch.testing.assert_close(draw_times(50, "logit_normal", gen(1), loc=0.3, scale=1.7),
                               torch.sigmoid(0.3 + 1.7 * z), rtol=0, atol=0)
    t = draw_times(20000, "logit_normal", gen(2), loc=-0.5, scale=0.8)
    logit = (t / (1 - t)).log()
    assert float(logit.mean()) == pytest.approx(-0.5, abs=0.03) and float(logit.std()) == pytest.approx(0.8, abs=0.02)
    d = draw_times(20000, "logit_normal", gen(3))  # defaults: loc 0, scale 1
    assert float((d / (1 - d)).log().std()) == pytest.approx(1.0, abs=0.02)
    assert abs(float((d / (1 - d)).log().mean())) < 0.03
    with pytest.raises(DDPMLabError, match="^time sampling must be one of uniform, logit_normal, got 'beta'$"):
        draw_times(3, "beta")


def _by_hand(model, x0, seed, target, time_sampling="uniform", loc=0.0, scale=1.0, reference_batch=0, cond=None):
    """The same draws as the objective (t, then eps, from one generator), the loss computed plainly."""
    g = gen(seed)
    n = x0.shape[0]
    t = draw_times(n, time_sampling, g, loc, scale)
    eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    path = model.path
    tb = t.reshape(n, 1)
    x_t = torch.stack([path.alpha(float(t[i])) * x0[i] + path.sigma(float(t[i])) * eps[i] for i in range(n)])
    if target == "stable":
        u = stable_target(path, x0, eps, t, reference_batch, cond, model.num_classes or None)
    else:
        u = torch.stack([path.d_alpha(float(t[i])) * x0[i] + path.d_sigma(float(t[i])) * eps[i] for i in range(n)])
    v = model.velocity(x_t, t, cond) if cond is not None else model.velocity(x_t, tb[:, 0])
    return ((v - u) ** 2).mean(1), t, tb


@pytest.mark.parametrize("target", ["conditional", "stable"])
@pytest.mark.parametrize("time_sampling, loc, scale", [("uniform", 0.0, 1.0), ("logit_normal", 0.4, 0.7)])
def test_the_loss_is_the_squared_error_by_hand(target, time_sampling, loc, scale):
    model = _Oracle(DIST)
    x0 = DIST.sample(64, gen(4), dtype=torch.float64)
    obj = FlowMatching(time_sampling, loc, scale, target, reference_batch=16)
    got = obj(model, x0, gen(5))
    ref, _, _ = _by_hand(model, x0, 5, target, time_sampling, loc, scale, 16)
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-8)
    assert got.shape == (64,)


class _Oracle(FlowMixtureOracle):
    """The exact flow with a per-row time (the objective passes t (B,))."""

    num_classes = None

    def velocity(self, x, t, cond=None):
        t = torch.as_tensor(t).reshape(-1)
        return torch.cat([super(_Oracle, self).velocity(x[i:i + 1], float(t[i])) for i in range(x.shape[0])])


@pytest.mark.filterwarnings("error")  # a block written into a buffer of the wrong shape warns (a resize)
def test_stable_target_in_several_blocks_is_the_plain_loop(monkeypatch):
    """Blocks of 16 rows (BLOCK_ENTRIES made small): the own-row exclusion and the weights in every block."""
    from test_stable_target import plain_stable_target

    monkeypatch.setattr(fm, "BLOCK_ENTRIES", 16 * 21)
    n, r = 50, 20
    x0 = 2 * torch.randn(n, 2, generator=gen(8))
    eps = torch.randn(n, 2, generator=gen(9))
    t = torch.rand(n, generator=gen(10), dtype=torch.float64) * 0.9 + 0.1
    fast = stable_target(LinearPath(), x0, eps, t, r)
    torch.testing.assert_close(fast.double(), plain_stable_target(x0, eps, t, r), rtol=1e-5, atol=1e-5)
    cond = torch.randint(0, 4, (n,), generator=gen(11))
    fast = stable_target(LinearPath(), x0, eps, t, 0, cond, 3)
    torch.testing.assert_close(fast.double(), plain_stable_target(x0, eps, t, n, cond, 3), rtol=1e-5, atol=1e-5)


class _LabelledOracle(LabelledFlowMixtureOracle):
    def velocity(self, x, t, cond=None):
        t, cond = torch.as_tensor(t).reshape(-1), torch.as_tensor(cond).reshape(-1)
        return torch.cat([super(_LabelledOracle, self).velocity(x[i:i + 1], float(t[i]), cond[i:i + 1])
                          for i in range(x.shape[0])])


def test_a_labelled_model_passes_its_labels_and_null_class():
    """With labels, the stable target averages within the row's class (all of the batch for the null class)."""
    model = _LabelledOracle(DIST)
    x0, labels = DIST.sample_labelled(40, gen(12), dtype=torch.float64)
    labels[:5] = 2  # the null class
    obj = FlowMatching(target="stable")
    got = obj(model, x0, gen(13), cond=labels)
    g = gen(13)
    t = draw_times(40, "uniform", g)
    eps = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    x_t = (1 - t)[:, None] * x0 + t[:, None] * eps
    u = stable_target(model.path, x0, eps, t, 0, labels, 2)
    torch.testing.assert_close(got, ((model.velocity(x_t, t, labels) - u) ** 2).mean(1), rtol=1e-6, atol=1e-8)
    plain = ((model.velocity(x_t, t, labels) - stable_target(model.path, x0, eps, t, 0)) ** 2).mean(1)
    assert float((got - plain).abs().max()) > 1e-3


@pytest.mark.parametrize("kwargs, needle", [
    ({"time_sampling": "beta"}, "^time sampling must be one of uniform, logit_normal, got 'beta'$"),
    ({"target": "exact"}, "^the flow-matching target must be one of conditional, stable, got 'exact'$"),
    ({"reference_batch": -1}, r"^the reference batch must be >= 0 \(0: the whole batch\), got -1$"),
])
def test_refusals(kwargs, needle):
    with pytest.raises(DDPMLabError, match=needle):
        FlowMatching(**kwargs)


def test_options_are_kept():
    obj = FlowMatching("logit_normal", 0.2, 1.3, "stable", 8)
    assert (obj.time_sampling, obj.loc, obj.scale, obj.target, obj.reference_batch) == (
        "logit_normal", 0.2, 1.3, "stable", 8)
    assert FlowMatching(reference_batch=0).reference_batch == 0
    assert math.isfinite(float(FlowMatching()(_Oracle(DIST), DIST.sample(4, gen(14), dtype=torch.float64)).sum()))


def test_stable_target_is_float64_throughout():
    """float64 data: a float32 t gives exactly what its float64 copy gives (t is read in float64), and at the
    prior (t = 1, every weight exactly 1) x_t less the mean of the own x_0 and the references, exactly."""
    x0 = torch.randint(-4, 5, (9, 2), generator=gen(15)).double()
    eps = torch.randn(9, 2, generator=gen(16), dtype=torch.float64)
    t32 = torch.rand(9, generator=gen(17)) * 0.8 + 0.1
    path = LinearPath()
    assert torch.equal(stable_target(path, x0, eps, t32, 4), stable_target(path, x0, eps, t32.double(), 4))
    u = stable_target(LinearPath(), x0, eps, torch.ones(9, dtype=torch.float64), 2)
    for i in range(9):
        refs = [i] + [j for j in range(2) if j != i]
        torch.testing.assert_close(u[i], eps[i] - x0[refs].mean(0), rtol=1e-14, atol=1e-14)
    assert torch.equal(stable_target(LinearPath(), x0, eps, t32.double()),
                       stable_target(LinearPath(), x0, eps, t32.double(), 0))  # default: the whole batch


def test_logit_normal_defaults_are_the_standard_normal():
    obj = FlowMatching("logit_normal")
    assert (obj.loc, obj.scale) == (0.0, 1.0)
    model = _Oracle(DIST)
    x0 = DIST.sample(16, gen(18), dtype=torch.float64)
    ref, _, _ = _by_hand(model, x0, 19, "conditional", "logit_normal", 0.0, 1.0)
    torch.testing.assert_close(obj(model, x0, gen(19)), ref, rtol=1e-6, atol=1e-8)


def test_a_ddpm_is_refused_by_name():
    oracle = MixtureOracle(DIST, make_schedule("linear", 10))
    with pytest.raises(DDPMLabError, match="^objective = 'flow_matching' does not serve a ddpm model"):
        FlowMatching()(oracle, DIST.sample(4, gen(20), dtype=torch.float64))

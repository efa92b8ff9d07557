"""Oracles for ``evaluation/logprob.py`` (issue 27, mutation testing), fast: the exact flow of a Gaussian,
whose linear path ends in N(0, 1) exactly, has log p = log N(x; m, v) in closed form, per example and
per class; a finished run's units (x = z * scale + shift: log p_x = log p_z - log scale); the bound
against ``vlb_terms`` from the same draws; the divergence rule at its size; a NaN velocity; the exact
log q of a run's data where it is known; the refusals."""
import math
from types import SimpleNamespace

import pytest
import torch

from conftest import gen
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError, NonFiniteError
from ddpmlab.data.named import NAMED
from ddpmlab.evaluation.likelihood import vlb_terms
from ddpmlab.evaluation import logprob as lp_module
from ddpmlab.evaluation.logprob import EXACT_TRACE_MAX_DIMS, exact_log_prob, log_prob, resolve_divergence
from ddpmlab.models.conditional_oracle import LabelledFlowMixtureOracle
from ddpmlab.models.flow_model import FlowModel
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.models.oracle import MixtureOracle

M, V = 0.7, 0.5
GAUSS = GaussianMixture([1.0], [[M]], [V])
X = torch.tensor([[-1.5], [0.0], [0.6], [2.2], [3.0]], dtype=torch.float64)


def _log_normal(x, m, v):
    return -0.5 * ((x - m) ** 2 / v + math.log(2 * math.pi * v))


def test_the_exact_flow_of_a_gaussian_gives_its_density():
    lp = log_prob(FlowMixtureOracle(GAUSS), X)
    assert lp.shape == (5,) and lp.dtype == torch.float64
    torch.testing.assert_close(lp, _log_normal(X[:, 0], M, V), rtol=2e-4, atol=2e-4)
    chunked = log_prob(FlowMixtureOracle(GAUSS), X, chunk=2)
    torch.testing.assert_close(chunked, lp, rtol=2e-4, atol=2e-4)
    tight = log_prob(FlowMixtureOracle(GAUSS), X, rtol=1e-8, atol=1e-8, divergence="hutchinson",
                     generator=gen(0))  # one dimension: the probe is exact
    torch.testing.assert_close(tight, _log_normal(X[:, 0], M, V), rtol=1e-6, atol=1e-6)


def test_labels_give_each_class_its_density():
    dist = GaussianMixture([0.3, 0.7], [[-1.0], [2.0]], [0.4, 0.9])
    model = LabelledFlowMixtureOracle(dist)
    labels = torch.tensor([0, 1, 2, 1, 0])  # 2: the null class, the whole mixture
    lp = log_prob(model, X, cond=labels, chunk=2)
    expect = torch.stack([_log_normal(X[0, 0], -1.0, 0.4), _log_normal(X[1, 0], 2.0, 0.9),
                          dist.log_prob(X[2:3])[0], _log_normal(X[3, 0], 2.0, 0.9), _log_normal(X[4, 0], -1.0, 0.4)])
    torch.testing.assert_close(lp, expect, rtol=2e-4, atol=2e-4)
    one = log_prob(model, X, cond=torch.tensor(1))
    torch.testing.assert_close(one, _log_normal(X[:, 0], 2.0, 0.9), rtol=2e-4, atol=2e-4)


def test_a_run_in_data_units():
    """A run standardised by x = 2 z + 1 whose model is the flow of N(M, V) in z: x ~ N(2M + 1, 4V)."""
    info = {"data": {"scale": [2.0], "shift": [1.0], "data_shape": [1]}}
    run = SimpleNamespace(model=FlowMixtureOracle(GAUSS), info=info)
    x = 2 * X + 1
    torch.testing.assert_close(log_prob(run, x), _log_normal(x[:, 0], 2 * M + 1, 4 * V), rtol=2e-4, atol=2e-4)
    # float32 data are read in float64 before the change of units (x - 0.1 is inexact in float32)
    run.info = {"data": {"scale": [2.0], "shift": [0.1], "data_shape": [1]}}
    x32 = torch.tensor([[-1.5], [0.0], [0.625], [2.25]])
    assert torch.equal(log_prob(run, x32), log_prob(run, x32.double()))


def test_the_bound_is_minus_the_vlb_from_the_same_draws():
    oracle = MixtureOracle(GAUSS, make_schedule("linear", 20, beta_start=1e-3, beta_end=0.3))
    lp = log_prob(oracle, X, method="bound", generator=gen(1), chunk=3)
    g = gen(1)
    expect = torch.cat([-vlb_terms(oracle, X[:3], g)["total_nats"], -vlb_terms(oracle, X[3:], g)["total_nats"]])
    torch.testing.assert_close(lp, expect.double(), rtol=1e-12, atol=1e-12)


def test_the_divergence_rule_at_its_size():
    assert EXACT_TRACE_MAX_DIMS == 16
    assert resolve_divergence("auto", (16,)) == "exact" and resolve_divergence("auto", (4, 4)) == "exact"
    assert resolve_divergence("auto", (17,)) == "hutchinson"
    assert resolve_divergence("exact", (100,)) == "exact" and resolve_divergence("hutchinson", (1,)) == "hutchinson"
    with pytest.raises(DDPMLabError, match="^divergence must be one of auto, exact, hutchinson, got 'trace'$"):
        resolve_divergence("trace", (1,))


class _NaNFlow(FlowMixtureOracle):
    def velocity(self, x, t, cond=None):
        return torch.full_like(x, float("nan"))


def test_a_nan_velocity_stops_in_one_line():
    with pytest.raises(NonFiniteError, match=r"^the model's velocity field is NaN or infinite at t = 0 \(NaN weights, "
                                             r"or a flow carried to where the network overflows\)$"):
        log_prob(_NaNFlow(GAUSS), X)


@pytest.mark.parametrize("kwargs, needle", [
    ({"method": "exact"}, "^method must be one of ode, bound, got 'exact'$"),
    ({"method": "bound", "cond": torch.tensor(0)}, "^the bound takes no condition; use method='ode'"),
    ({"cond": torch.tensor([0, 1])}, r"^cond has shape \(2,\); pass one condition per example, \(5, \.\.\.\), or one"),
])
def test_refusals(kwargs, needle):
    model = (MixtureOracle(GAUSS, make_schedule("linear", 10)) if kwargs.get("method") == "bound"
             else LabelledFlowMixtureOracle(GAUSS))
    with pytest.raises(DDPMLabError, match=needle):
        log_prob(model, X, **kwargs)


def test_a_flow_has_no_bound():
    with pytest.raises(DDPMLabError, match="^method='bound' needs a family with a discrete bound; a flow model has "
                                           "none: use method='ode'$"):
        log_prob(FlowMixtureOracle(GAUSS), X, method="bound")


def _run(name="seed_mixture", dist=None, data=None):
    return SimpleNamespace(cfg=SimpleNamespace(data=SimpleNamespace(name=name)), dist=dist, info={"data": data or {}})


def test_exact_log_prob_where_it_is_known():
    torch.testing.assert_close(exact_log_prob(_run(dist=GAUSS), X.float()), GAUSS.log_prob(X))
    board = NAMED["checkerboard"]()
    x2 = torch.tensor([[0.5, 0.5], [-3.5, 0.2], [1.5, 0.5]])
    torch.testing.assert_close(exact_log_prob(_run("checkerboard"), x2), board.log_prob(x2.double()))
    assert exact_log_prob(_run(dist=GAUSS, data={"scale": [2.0]}), X) is None  # standardised
    assert exact_log_prob(_run("file"), X) is None
    assert exact_log_prob(_run("moons"), X) is None  # no closed form
    assert exact_log_prob(_run("no_such_data"), X) is None


def test_the_arguments_reach_the_ode(monkeypatch):
    """Each option of log_prob is the ODE's, per chunk of at most 1024 examples (the default)."""
    calls = []

    def spy(model, x, **kw):
        calls.append((model, x.shape[0], kw))
        return {"log_likelihood": torch.zeros(x.shape[0], dtype=torch.float64)}

    monkeypatch.setattr(lp_module, "ode_log_likelihood", spy)
    model, g = FlowMixtureOracle(GAUSS), gen(2)
    log_prob(model, torch.zeros(1025, 1), generator=g)
    assert [n for _, n, _ in calls] == [1024, 1]
    m, _, kw = calls[0]
    assert m is model and kw["generator"] is g and kw["prior"] == "normal" and kw["divergence"] == "exact"
    assert (kw["rtol"], kw["atol"], kw["max_nfe"], kw["threads"]) == (1e-5, 1e-5, 10_000, 1)
    calls.clear()
    prior = lambda x: x.sum(1)  # noqa: E731
    log_prob(model, torch.zeros(3, 1), prior=prior, rtol=1e-3, atol=1e-4, max_nfe=77, threads=None, chunk=2)
    assert [n for _, n, _ in calls] == [2, 1]
    kw = calls[0][2]
    assert kw["prior"] is prior and (kw["rtol"], kw["atol"], kw["max_nfe"], kw["threads"]) == (1e-3, 1e-4, 77, None)


def test_auto_takes_the_exact_trace_in_three_dimensions():
    """d = 3 <= 16: the exact divergence (the ODE's own default would be Hutchinson's above d = 2)."""
    dist = GaussianMixture([1.0], [[0.5, -0.3, 1.0]], [[0.6, 0.4, 0.8]])
    x = dist.sample(4, gen(3), dtype=torch.float64)
    lp = log_prob(FlowMixtureOracle(dist), x, generator=gen(4))
    torch.testing.assert_close(lp, dist.log_prob(x), rtol=5e-4, atol=5e-4)


def test_float32_data_are_read_in_float64():
    oracle = MixtureOracle(GAUSS, make_schedule("linear", 20, beta_start=1e-3, beta_end=0.3))
    x = torch.tensor([[-1.5], [0.0], [0.625], [2.25]])  # exact in float32
    a = log_prob(oracle, x, method="bound", generator=gen(5))
    b = log_prob(oracle, x.double(), method="bound", generator=gen(5))
    assert torch.equal(a, b)


def test_bad_counts_and_examples_are_named():
    model = FlowMixtureOracle(GAUSS)
    with pytest.raises(DDPMLabError, match="^chunk must be >= 1, got 0$"):
        log_prob(model, X, chunk=0)
    with pytest.raises(DDPMLabError, match=r"^x holds examples of shape \(2,\), but the model's data_shape is \(1,\)$"):
        log_prob(model, torch.zeros(3, 2))


def test_a_model_that_cannot_take_the_data_is_named_in_one_line():
    """A network for 2-D data behind a model that claims 1-D: the deep torch error becomes the probe's line."""
    model = FlowModel(MLPDenoiser(2, width=8, depth=1, time_dim=8), data_shape=(1,))
    with pytest.raises(DDPMLabError, match=r"^the model fails on examples of shape \(1,\) without labels "
                                           r"\(RuntimeError: mat1 and mat2"):
        log_prob(model, torch.zeros(3, 1, dtype=torch.float64))
    labelled = FlowModel(MLPDenoiser(2, width=8, depth=1, time_dim=8, num_classes=3), data_shape=(1,))
    with pytest.raises(DDPMLabError, match=r"^the model fails on examples of shape \(1,\) with labels"):
        log_prob(labelled, torch.zeros(3, 1, dtype=torch.float64), cond=torch.tensor([0, 1, 2]))


class _Float32Only(torch.nn.Module):
    """A network that works in its own dtype and fails in float64 (where the ODE evaluates it)."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x, t, cond=None):
        if x.dtype == torch.float64:
            raise RuntimeError("boom in float64")
        return x * self.w


def test_a_model_that_takes_its_own_dtype_keeps_its_own_error():
    """The probe feeds the model the data in its own dtype: it passes, so the deep error propagates as it is."""
    with pytest.raises(RuntimeError, match="^boom in float64$"):
        log_prob(FlowModel(_Float32Only(), data_shape=(1,)), X)

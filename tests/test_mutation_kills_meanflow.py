"""Oracles for ``objectives/meanflow.py`` (issue 27, mutation testing): the defaults of Geng et al. Table 1,
the refusals at their boundaries, the time draws against the logit-normal written out, and the per-example
loss and its gradient (stop-gradient target and weight) against central differences on a 2-D model."""
import math

import pytest
import torch

from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.flow_model import FlowModel
from ddpmlab.models.meanflow import MeanFlowModel
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.objectives.meanflow import MeanFlow


def _model(classes=0):
    torch.manual_seed(0)
    net = MLPDenoiser(2, width=16, depth=1, time_dim=8, num_classes=classes)
    return MeanFlowModel(net, data_shape=(2,)).double()


def test_the_defaults_are_the_papers():
    obj = MeanFlow()
    assert (obj.ratio, obj.p, obj.c, obj.loc, obj.scale) == (0.25, 1.0, 1e-3, -0.4, 1.0)
    for kw in ({"ratio": 0.0}, {"ratio": 1.0}, {"p": 0.0}, {"c": 1e-12}, {"scale": 1e-12}):
        MeanFlow(**kw)  # the boundaries that are allowed


@pytest.mark.parametrize("kw, message", [
    ({"ratio": -1e-9}, "the MeanFlow ratio (draws with r < t) must lie in [0, 1], got -1e-09"),
    ({"ratio": 1 + 1e-9}, "the MeanFlow ratio (draws with r < t) must lie in [0, 1], got 1.000000001"),
    ({"p": -1e-9}, "the adaptive weight needs p >= 0 and c > 0, got p = -1e-09, c = 0.001"),
    ({"c": 0.0}, "the adaptive weight needs p >= 0 and c > 0, got p = 1.0, c = 0.0"),
    ({"scale": 0.0}, "the logit-normal scale must be > 0, got 0.0"),
])
def test_refusals_are_one_sentence(kw, message):
    with pytest.raises(DDPMLabError) as err:
        MeanFlow(**kw)
    assert str(err.value) == message


@pytest.mark.parametrize("ratio", [0.0, 0.3, 1.0])
def test_times_are_two_logit_normals_sorted_and_r_kept_with_probability_ratio(ratio):
    obj = MeanFlow(ratio=ratio, loc=0.7, scale=1.9)
    r, t = obj.times(400, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    a = [1 / (1 + math.exp(-(0.7 + 1.9 * float(e)))) for e in torch.randn(400, generator=g, dtype=torch.float64)]
    b = [1 / (1 + math.exp(-(0.7 + 1.9 * float(e)))) for e in torch.randn(400, generator=g, dtype=torch.float64)]
    keep = torch.rand(400, generator=g, dtype=torch.float64).tolist()
    assert r.dtype == t.dtype == torch.float64
    for i in range(400):
        assert t[i].item() == pytest.approx(max(a[i], b[i]), rel=1e-12)
        assert r[i].item() == pytest.approx(min(a[i], b[i]) if keep[i] < ratio else max(a[i], b[i]), rel=1e-12)


def _by_hand(obj, m, x0, seed, cond=None):
    """The loss's draws and regression written out: d/dt u along (v, 1) by central differences."""
    n = x0.shape[0]
    g = torch.Generator().manual_seed(seed)
    r, t = obj.times(n, g)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    z, v = (1 - t[:, None]) * x0 + t[:, None] * eps, eps - x0
    h = 1e-6
    with torch.no_grad():
        dudt = (m.average_velocity(z + h * v, r, t + h, cond) - m.average_velocity(z - h * v, r, t - h, cond)) / (2 * h)
        target = v - (t - r)[:, None] * dudt
    u = m.average_velocity(z, r, t, cond)
    error = (u - target).square().mean(1)
    return error / (error.detach() + obj.c) ** obj.p


@pytest.mark.parametrize("p, classes", [(0.0, 0), (0.5, 3), (2.0, 0)])
def test_the_loss_and_its_gradient_are_the_identity_regression_by_hand(p, classes):
    """Per dimension (a 2-D model), the adaptive weight sg(w) = 1 / sg(||u - u_tgt||^2 + c)^p and the
    target under stop-gradient: the loss and the parameters' gradient of its sum, both by hand."""
    m, cond = _model(classes), (torch.arange(24) % 3 if classes else None)
    x0 = torch.randn(24, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64) * 0.7 + 0.3
    obj = MeanFlow(p=p, c=0.05, ratio=0.5)
    loss = obj(m, x0, torch.Generator().manual_seed(5), cond)
    grads = torch.autograd.grad(loss.sum(), list(m.parameters()))
    want = _by_hand(obj, m, x0, 5, cond)
    want_grads = torch.autograd.grad(want.sum(), list(m.parameters()))
    torch.testing.assert_close(loss.detach(), want.detach(), rtol=1e-6, atol=1e-9)
    for a, b in zip(grads, want_grads):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6 * (1 + float(b.abs().max())))


def test_only_a_flow_map_model_is_trained():
    flow = FlowModel(MLPDenoiser(2, width=8, depth=1), data_shape=(2,))
    with pytest.raises(DDPMLabError) as err:
        MeanFlow()(flow, torch.zeros(4, 2))
    assert str(err.value).startswith("objective = 'meanflow' does not serve a flow model (")

"""Oracles for ``objectives/shortcut.py`` (issue 27, mutation testing): the defaults and refusals word for
word, the draws against Frans et al.'s power-of-two grid written out draw by draw, the trained step size,
the self-consistency target on a stand-in model of closed form, and a class-conditional loss by hand."""
import math

import pytest
import torch

from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.flow_model import FlowModel
from ddpmlab.models.meanflow import MeanFlowModel
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.objectives.shortcut import Shortcut


def test_defaults_and_the_allowed_boundaries():
    obj = Shortcut()
    assert (obj.max_steps, obj.bootstrap) == (128, 0.25)
    for m in (1, 2, 64):
        Shortcut(max_steps=m)
    for b in (0.0, 1.0):
        Shortcut(bootstrap=b)


@pytest.mark.parametrize("bad", [0, 3, 6, True, 4.0, -4])
def test_max_steps_must_be_a_power_of_two(bad):
    with pytest.raises(DDPMLabError) as err:
        Shortcut(max_steps=bad)
    assert str(err.value) == f"the shortcut's max_steps must be a power of two (1, 2, 4, ...), got {bad!r}"


@pytest.mark.parametrize("bad", [-1e-9, 1 + 1e-9])
def test_bootstrap_must_be_a_fraction(bad):
    with pytest.raises(DDPMLabError) as err:
        Shortcut(bootstrap=bad)
    assert str(err.value) == f"the shortcut's bootstrap fraction must lie in [0, 1], got {bad}"


@pytest.mark.parametrize("max_steps, bootstrap, n", [(8, 0.3, 50), (1, 1.0, 20), (4, 0.0, 10)])
def test_draws_by_hand(max_steps, bootstrap, n):
    t, d, consistent = Shortcut(max_steps, bootstrap).draws(n, torch.Generator().manual_seed(6))
    g = torch.Generator().manual_seed(6)
    k = round(bootstrap * n)
    j = torch.randint(0, int(math.log2(max_steps)) + 1, (k,), generator=g).tolist()
    slots = torch.rand(k, generator=g, dtype=torch.float64).tolist()
    t_fm = torch.rand(n - k, generator=g, dtype=torch.float64).tolist()
    want_t, want_d = [], []
    for ji, u in zip(j, slots):
        two_d = 2.0 ** -ji
        want_t.append(min(two_d * (1 + math.floor(u / two_d)), 1.0))
        want_d.append(0.0 if two_d * max_steps <= 1 else two_d / 2)
    assert t.tolist() == want_t + t_fm and d.tolist() == want_d + [0.0] * (n - k)
    assert consistent.tolist() == [True] * k + [False] * (n - k)
    assert t.dtype == d.dtype == torch.float64


def test_every_level_is_drawn():
    t, d, consistent = Shortcut(8, 1.0).draws(400, torch.Generator().manual_seed(0))
    assert set((2 * d).tolist()) == {0.0, 0.25, 0.5, 1.0}  # 2d = 1/8 queried at d = 0


def test_step_of_by_hand():
    d = torch.tensor([0.0, 0.125, 0.5, 0.0, 0.25], dtype=torch.float64)
    consistent = torch.tensor([True, True, True, False, False])
    assert Shortcut.step_of(d, consistent, 16).tolist() == [1 / 16, 0.25, 1.0, 0.0, 0.0]


class Stand:
    """u(x, r, t) = x (t - r) + r^2 + 3 t + cond, with r, t per row."""

    def average_velocity(self, x, r, t, cond=None):
        r, t = (torch.as_tensor(v, dtype=x.dtype).reshape(-1).expand(x.shape[0]).reshape(-1, 1) for v in (r, t))
        return x * (t - r) + r * r + 3 * t + (0 if cond is None else cond.reshape(-1, 1))


@pytest.mark.parametrize("as_tensor", [False, True])
def test_consistency_target_by_hand(as_tensor):
    x = torch.tensor([[0.5, -1.0], [2.0, 0.25]], dtype=torch.float64)
    t, d, cond = 0.7, 0.1, torch.tensor([1.0, -2.0], dtype=torch.float64)  # not exact in float32
    u = lambda y, r, s, c: y * (s - r) + r * r + 3 * s + c  # noqa: E731
    args = (t, d)
    if as_tensor:
        args = (torch.tensor([t, t], dtype=torch.float64), torch.tensor([d, d], dtype=torch.float64))
    got = Shortcut.consistency_target(Stand(), x, *args, cond)
    for i in range(2):
        c = float(cond[i])
        first = u(x[i], t - d, t, c)
        second = u(x[i] - d * first, t - 2 * d, t - d, c)
        torch.testing.assert_close(got[i], (first + second) / 2, rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype, classes", [(torch.float64, 3), (torch.float32, 0)])
def test_the_loss_is_the_per_example_loop(dtype, classes):
    """A class-conditional float64 model, and an unconditional float32 one (times in the data's dtype)."""
    torch.manual_seed(0)
    net = MLPDenoiser(2, width=16, depth=1, time_dim=8, num_classes=classes)
    model = MeanFlowModel(net, data_shape=(2,)).to(dtype)
    obj = Shortcut(max_steps=4, bootstrap=0.5)
    x0 = torch.randn(10, 2, generator=torch.Generator().manual_seed(1), dtype=dtype)
    cond = torch.arange(10) % 3 if classes else None
    got = obj(model, x0, torch.Generator().manual_seed(2), cond)
    g = torch.Generator().manual_seed(2)
    t, d, consistent = obj.draws(10, g)
    eps = torch.randn(x0.shape, generator=g, dtype=dtype)
    tol = 1e-10 if dtype == torch.float64 else 1e-5
    with torch.no_grad():
        for i in range(10):
            ti, di, c = float(t[i]), float(d[i]), (None if cond is None else cond[i:i + 1])
            x = (1 - ti) * x0[i:i + 1] + ti * eps[i:i + 1]
            if consistent[i]:
                first = model.average_velocity(x, ti - di, ti, c)
                second = model.average_velocity(x - di * first, ti - 2 * di, ti - di, c)
                target, step = (first + second) / 2, (2 * di if di > 0 else 1 / 4)
            else:
                target, step = eps[i:i + 1] - x0[i:i + 1], 0.0
            want = (model.average_velocity(x, ti - step, ti, c) - target).square().mean()
            assert got[i].item() == pytest.approx(want.item(), rel=tol, abs=tol / 100)
    assert got.requires_grad and got.dtype == dtype


def test_only_a_flow_map_model_is_trained():
    flow = FlowModel(MLPDenoiser(2, width=8, depth=1), data_shape=(2,))
    with pytest.raises(DDPMLabError) as err:
        Shortcut()(flow, torch.zeros(4, 2))
    assert str(err.value).startswith("objective = 'shortcut' does not serve a flow model (")

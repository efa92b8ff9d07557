"""Oracles for ``sampling/flow_map.py`` and ``sampling/consistency.py`` (issue 27, mutation testing): the
few-step samplers against plain loops over a stand-in flow map written in closed form, their callbacks,
the generator stream they consume and their one-line stop on a non-finite state."""
import pytest
import torch

from ddpmlab.core.utils import NonFiniteError
from ddpmlab.sampling.consistency import consistency_sample
from ddpmlab.sampling.flow_map import flow_map_sample

GRID = [1.0, 0.75, 0.25, 0.0]


class AffineMap:
    """phi(x, t, s) = (1 + s) x + t - 2 s + cond (cond a number or None), each call recorded; NaN from
    time ``nan_at`` on (the map's start time t for which the output is NaN)."""

    def __init__(self, nan_at=None):
        self.calls, self.nan_at = [], nan_at

    def flow_map(self, x, t, s, cond=None):
        self.calls.append((t, s, cond))
        out = (1 + s) * x + t - 2 * s + (0 if cond is None else cond)
        return out * float("nan") if t == self.nan_at else out


def _x():
    return torch.randn(5, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def test_flow_map_sampler_is_the_chain_of_maps_by_hand():
    model, x = AffineMap(), _x()
    seen = []
    got = flow_map_sample(model, x, torch.tensor(GRID), cond=0.5, callback=lambda i, s, y: seen.append((i, s, y)))
    want, states = x, []
    for t, s in zip(GRID[:-1], GRID[1:]):
        want = (1 + s) * want + t - 2 * s + 0.5
        states.append(want)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-15)
    assert model.calls == [(1.0, 0.75, 0.5), (0.75, 0.25, 0.5), (0.25, 0.0, 0.5)]
    assert [(i, s) for i, s, _ in seen] == [(0, 0.75), (1, 0.25), (2, 0.0)]
    for (_, _, y), w in zip(seen, states):
        torch.testing.assert_close(y, w, rtol=0, atol=1e-15)
    one = flow_map_sample(AffineMap(), x, torch.tensor([1.0, 0.0]))  # one step, no callback, no cond
    torch.testing.assert_close(one, x + 1.0, rtol=0, atol=0)


def test_flow_map_sampler_stops_at_a_non_finite_state_naming_the_time():
    with pytest.raises(NonFiniteError, match=r"^flow_map sampler: non-finite values \(NaN or inf\) at step "
                                             r"t = 0\.25; the model or its schedule is broken there$"):
        flow_map_sample(AffineMap(nan_at=0.75), _x(), torch.tensor(GRID))


def test_consistency_sampler_is_algorithm_1_by_hand():
    """f(x, t) = phi(x, t, 0) at every grid time but the last, noised back to the next time s > 0 with
    z from the generator, (1 - s) x_0 + s z; nothing drawn after the last map."""
    model, x = AffineMap(), _x()
    seen = []
    g = torch.Generator().manual_seed(3)
    got = consistency_sample(model, x, torch.tensor(GRID), g, cond=0.5,
                             callback=lambda i, s, y: seen.append((i, s, y)))
    h = torch.Generator().manual_seed(3)
    want, states = x, []
    for t, s in zip(GRID[:-1], GRID[1:]):
        want = want + t + 0.5
        if s > 0:
            want = (1 - s) * want + s * torch.randn(want.shape, generator=h).double()
        states.append(want)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    assert model.calls == [(1.0, 0.0, 0.5), (0.75, 0.0, 0.5), (0.25, 0.0, 0.5)]
    assert [(i, s) for i, s, _ in seen] == [(0, 0.75), (1, 0.25), (2, 0.0)]
    for (_, _, y), w in zip(seen, states):
        torch.testing.assert_close(y, w, rtol=0, atol=1e-12)
    assert torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=h))  # the same stream consumed
    one = consistency_sample(AffineMap(), x, torch.tensor([1.0, 0.0]))  # one step: f(x_1, 1), no noise
    torch.testing.assert_close(one, x + 1.0, rtol=0, atol=0)


def test_consistency_sampler_stops_at_a_non_finite_state_naming_the_time():
    with pytest.raises(NonFiniteError, match=r"^consistency sampler: non-finite values \(NaN or inf\) at step "
                                             r"t = 0\.75; the model or its schedule is broken there$"):
        consistency_sample(AffineMap(nan_at=0.75), _x(), torch.tensor(GRID), torch.Generator().manual_seed(0))

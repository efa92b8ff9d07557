"""Oracles for ``models/flow_map.py`` (issue 27, mutation testing): the mixture's log tails and density,
the tail gap, the false-position point and the quantile against plain-``math`` closed forms (both tails,
far out); the monotone map between two Gaussians (affine); the RK45 solve of linear ODEs with a kink,
restarted at the knots, its per-example tolerance, its stop and failure; and the refusals word for word."""
import math
import re

import pytest
import torch

from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.flow_map import (ExactFlowMap, _false_position, _log_tails, _params_1d, _tail_gap,
                                     exact_flow_map, mixture_quantile_1d, monotone_map_1d, ode_flow_map)
from ddpmlab.models.flow_oracle import FlowMixtureOracle

W, MU, VAR = [0.3, 0.7], [-1.5, 1.0], [0.2, 0.4]
MIX = GaussianMixture(W, [[m] for m in MU], VAR)
YS = [-8.0, -1.7, 0.0, 0.9, 3.0, 9.0]


def _phi(z):
    """Phi(z) in plain math (erfc: no cancellation in either tail)."""
    return 0.5 * math.erfc(-z / math.sqrt(2))


def _tails(y):
    """log F(y), log(1 - F(y)), log f(y) of MIX by hand."""
    sd = [math.sqrt(v) for v in VAR]
    lower = sum(w * _phi((y - m) / s) for w, m, s in zip(W, MU, sd))
    upper = sum(w * _phi(-(y - m) / s) for w, m, s in zip(W, MU, sd))
    pdf = sum(w * math.exp(-0.5 * ((y - m) / s) ** 2) / (s * math.sqrt(2 * math.pi)) for w, m, s in zip(W, MU, sd))
    return math.log(lower), math.log(upper), math.log(pdf)


def test_log_tails_and_density_by_hand():
    lower, upper, log_pdf = _log_tails(_params_1d(MIX), torch.tensor(YS, dtype=torch.float64))
    for i, y in enumerate(YS):
        want = _tails(y)
        assert [lower[i].item(), upper[i].item(), log_pdf[i].item()] == pytest.approx(want, rel=1e-12, abs=1e-14)


@pytest.mark.parametrize("upper", [False, True])
def test_tail_gap_and_its_slope_by_hand(upper):
    target = torch.tensor([-0.3] * len(YS), dtype=torch.float64)
    gap, slope = _tail_gap(_params_1d(MIX), torch.tensor(YS, dtype=torch.float64), target,
                           torch.full((len(YS),), upper))
    for i, y in enumerate(YS):
        lo, up, lp = _tails(y)
        tail = up if upper else lo
        assert gap[i].item() == pytest.approx(-0.3 - tail if upper else tail + 0.3, rel=1e-12, abs=1e-14)
        assert slope[i].item() == pytest.approx(math.exp(lp - tail), rel=1e-11)


def test_false_position_by_hand():
    lo, hi = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([2.0, 2.0, 2.0])
    g_lo, g_hi = torch.tensor([-1.0, -1.0, 0.0]), torch.tensor([3.0, -1e-30, 1.0])
    # the chord's zero 0.5; then one on hi and one on lo: bisection
    assert _false_position(lo, hi, g_lo, g_hi).tolist() == [0.5, 1.0, 1.0]


@pytest.mark.parametrize("upper", [False, True])
def test_the_quantile_hits_its_level_in_both_tails(upper):
    levels = torch.tensor([-3000.0, -1000.0, -700.0, -40.0, -3.0, -0.7, -0.05, -1e-6], dtype=torch.float64)
    y = mixture_quantile_1d(MIX, levels, torch.full((8,), upper))  # below -745 exp(level) underflows
    lower, up, _ = _log_tails(_params_1d(MIX), y)
    tail = up if upper else lower
    single = mixture_quantile_1d(MIX, levels.float(), torch.full((8,), upper))  # any float dtype of the level
    torch.testing.assert_close(single, mixture_quantile_1d(MIX, levels.float().double(), torch.full((8,), upper)))
    torch.testing.assert_close(tail, levels, rtol=1e-11, atol=1e-13)
    assert bool((y.diff() < 0).all()) if upper else bool((y.diff() > 0).all())  # log(1 - F) falls in y
    # a single Gaussian: mu + sd z, z = Phi^{-1} of the level by bisection in plain math
    one = GaussianMixture([1.0], [[0.5]], [4.0])
    got = mixture_quantile_1d(one, torch.tensor([math.log(0.01)], dtype=torch.float64), torch.tensor([upper]))
    a, b = -10.0, 10.0
    for _ in range(200):
        mid = (a + b) / 2
        a, b = (mid, b) if _phi(mid) < 0.01 else (a, mid)
    assert got.item() == pytest.approx(0.5 + 2 * (-a if upper else a), rel=1e-12)


def test_the_quantile_between_far_modes():
    """Two far modes (Newton alone would wander in the empty middle): F(y) = level at every level."""
    far = GaussianMixture([0.5, 0.5], [[-10.0], [10.0]], [0.01, 0.01])
    levels = torch.tensor([math.log(0.5 - 1e-9), math.log(0.5), math.log(0.5 + 1e-9), math.log(0.25)],
                          dtype=torch.float64)
    y = mixture_quantile_1d(far, levels, torch.zeros(4, dtype=torch.bool))
    lower, _, _ = _log_tails(_params_1d(far), y)
    torch.testing.assert_close(lower, levels, rtol=1e-12, atol=1e-14)


def test_monotone_map_between_two_gaussians_is_affine_out_to_the_tails():
    source = GaussianMixture([1.0], [[1.0]], [0.25])
    target = GaussianMixture([1.0], [[-2.0]], [9.0])
    x = torch.tensor([-14.0, -1.0, 0.7, 1.0, 2.2, 16.0], dtype=torch.float32)
    got = monotone_map_1d(source, target, x[:, None])
    assert got.dtype == torch.float64 and got.shape == (6,)
    want = [-2.0 + 3.0 / 0.5 * (v - 1.0) for v in x.double().tolist()]
    assert got.tolist() == pytest.approx(want, rel=1e-9, abs=1e-9)


def _kinked(t):
    return 1.0 + 3.0 * max(0.0, t - 0.4) + 5.0 * max(0.0, t - 0.7)


@pytest.mark.parametrize("t_from, t_to", [(0.0, 1.0), (1.0, 0.0)])
def test_a_linear_ode_with_a_kink_restarts_at_the_knot(t_from, t_to):
    """dx/dt = a(t) x, a = 1 + 3 max(0, t - 0.4) + 5 max(0, t - 0.7) (kinks at 0.4 and 0.7): x(t_to) =
    x exp(int a), restarted at the knots in the interval, in the direction of the solve (the others are
    dropped), float64, shaped like x; without the restarts, or with the pieces in the wrong order, the
    error is 1e-7 or more."""
    starts = []

    def velocity(x, t):
        starts.append(t)
        return _kinked(t) * x

    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float32)
    got = ode_flow_map(velocity, x, t_from, t_to, knots=(0.7, 0.4, 1.5, -0.2, 0.4))
    integral = 1.0 + 3.0 * 0.6 ** 2 / 2 + 5.0 * 0.3 ** 2 / 2
    want = x.double() * math.exp(integral if t_to > t_from else -integral)
    assert got.dtype == torch.float64 and got.shape == (2, 2)
    torch.testing.assert_close(got, want, rtol=1e-8, atol=0)
    assert 0.4 in starts and 0.7 in starts and starts[0] == t_from
    assert all(min(t_from, t_to) <= s <= max(t_from, t_to) for s in starts)


def test_the_tolerance_holds_for_every_example():
    """10 000 examples of dx/dt = -x at rtol 1e-6: each within about 1e-6 (solve_ivp bounds the RMS over
    the whole system; divided by sqrt(size) the bound holds per example)."""
    x = torch.ones(10_000, 1, dtype=torch.float64)
    got = ode_flow_map(lambda y, t: -y, x, 0.0, 3.0, rtol=1e-6, atol=1e-12)
    assert float((got / math.exp(-3.0) - 1).abs().max()) < 1e-7


def test_the_same_time_is_the_identity_without_a_call():
    calls = []
    x = torch.randn(3, 1)
    got = ode_flow_map(lambda y, t: calls.append(t) or y, x, 0.5, 0.5, knots=(0.5,))
    assert torch.equal(got, x.double()) and got.dtype == torch.float64 and calls == []


def test_the_absolute_tolerance_holds_for_every_example():
    """Values far below atol / rtol: atol rules; divided by sqrt(size), each example is within it."""
    x = torch.full((10_000, 1), 1e-6, dtype=torch.float64)
    got = ode_flow_map(lambda y, t: -y, x, 0.0, 3.0, rtol=1e-3, atol=1e-8)
    assert float((got - 1e-6 * math.exp(-3.0)).abs().max()) < 1e-8


def test_a_point_beyond_float64s_tails_cannot_be_bracketed():
    with pytest.raises(DDPMLabError) as err:
        mixture_quantile_1d(MIX, torch.tensor([-1e60], dtype=torch.float64), torch.tensor([False]))
    assert str(err.value) == "the mixture quantile could not be bracketed (a point beyond float64's tails)"


def test_the_solve_stops_after_max_nfe_and_reports_a_failure():
    calls = []
    with pytest.raises(DDPMLabError) as err:
        ode_flow_map(lambda y, t: calls.append(t) or -y, torch.ones(2, 1), 0.0, 1.0, max_nfe=5)
    assert len(calls) == 5  # five evaluations, the sixth refused
    assert re.fullmatch(r"the exact flow map found no solution within 5 velocity evaluations \(stopped at "
                        r"t = 0\.\d+\)", str(err.value))
    with pytest.raises(DDPMLabError) as err:
        ode_flow_map(lambda y, t: y * y, torch.ones(1, 1), 0.0, 2.0)  # blows up at t = 1
    assert str(err.value).startswith("the exact flow map's integration failed: Required step size")


def test_exact_flow_map_passes_its_tolerances_and_methods():
    oracle = FlowMixtureOracle(MIX)
    x = torch.tensor([[-1.0], [0.2], [2.0]], dtype=torch.float64)
    loose = exact_flow_map(oracle, x, 0.8, 0.1, "rk45", rtol=1e-3, atol=1e-3)
    by_hand = ode_flow_map(oracle.velocity_field(), x, oracle.ode_time(0.8), oracle.ode_time(0.1),
                           oracle.ode_knots(), 1e-3, 1e-3)
    assert torch.equal(loose, by_hand)
    tight = exact_flow_map(oracle, x, 0.8, 0.1, "rk45")
    assert not torch.equal(loose, tight)
    quantile = exact_flow_map(oracle, x, 0.8, 0.1, "quantile")
    assert torch.equal(exact_flow_map(oracle, x, 0.8, 0.1), quantile)  # the default in 1-D
    torch.testing.assert_close(tight, quantile, rtol=1e-7, atol=1e-7)
    model = ExactFlowMap(oracle, "rk45")
    assert model.data_shape == (1,) and torch.equal(model.flow_map(x, 0.8, 0.1), tight)
    assert torch.equal(exact_flow_map(oracle, x, 0, 0), x)  # 0 is the data in every family


class NoVelocity:
    """A mixture and a data shape but no velocity field: not an exact oracle."""

    dist, data_shape = MIX, (1,)


def test_refusals_word_for_word():
    oracle = FlowMixtureOracle(MIX)
    x = torch.zeros(2, 1, dtype=torch.float64)
    cases = [
        (lambda: exact_flow_map(oracle, x, "late", 0.0), "the flow map's start time t must be a number, got 'late'"),
        (lambda: exact_flow_map(oracle, x, 1.0, None), "the flow map's end time s must be a number, got None"),
        (lambda: exact_flow_map(oracle, x, 1.0, 0.0, "euler"),
         "the flow map's method must be one of quantile, rk45 or None, got 'euler'"),
        (lambda: exact_flow_map(NoVelocity(), x, 1.0, 0.0),
         "the exact flow map needs an exact oracle of a Gaussian mixture (family_of(model).oracle(model, dist)), "
         "got NoVelocity"),
        (lambda: exact_flow_map(oracle, torch.zeros(3, 2), 1.0, 0.0),
         "the flow map's x holds examples of shape (2,), but the model's data_shape is (1,)"),
        (lambda: exact_flow_map(object(), x, 1.0, 0.0),
         "the exact flow map needs an exact oracle of a Gaussian mixture (family_of(model).oracle(model, dist)), "
         "got object"),
        (lambda: ExactFlowMap(oracle).flow_map(x, 1.0, 0.0, cond=torch.zeros(2)),
         "the exact flow map is unconditional; it takes no condition"),
        (lambda: _params_1d(GaussianMixture([1.0], [[0.0, 0.0]], [[[1.0, 0.0], [0.0, 1.0]]])),
         "the closed-form (quantile) flow map is 1-D; this mixture has 2 dimensions (use method='rk45')"),
    ]
    for call, message in cases:
        with pytest.raises(DDPMLabError) as err:
            call()
        assert str(err.value) == message

"""Oracles for ``sampling/grids.py`` (issue 27, mutation testing): the nearest steps of noise levels against
a plain loop, the axes' counts, checks, ODE times and noise ranges by hand, the grids' options, and each
refusal's exact line."""
import math

import pytest
import torch

from ddpmlab.core.schedule import NoiseSchedule, make_schedule
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.core.distributions import seed_mixture
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.sampling.grids import (EDM_SIGMA_RANGE, ESSER_SHIFT, TIME_GRIDS, ContinuousTime, DiscreteSteps,
                                    all_grid_options, axis_of, build_grid, grid_options, karras_sigmas, make_grid,
                                    shift_option)
from ddpmlab.sampling.options import MAX_ODE_STEPS

SCHED = make_schedule("linear", 50, beta_start=1e-3, beta_end=0.2)


def _log_sigma(schedule, t):
    a = float(schedule.alphas_cumprod[t])
    return 0.5 * math.log((1 - a) / a)


def _plain_from_sigmas(schedule, sigmas):
    """Step T, then for each later sigma the step 1..T nearest in log sigma (the lower on a tie), kept
    below the previous one and at least K - i, then 0."""
    T, K = schedule.T, len(sigmas)
    out = [T]
    for i in range(1, K):
        ls = math.log(float(sigmas[i]))
        best = min(range(1, T + 1), key=lambda t: (abs(_log_sigma(schedule, t) - ls), t))
        out.append(max(min(best, out[-1] - 1), K - i))
    return out + [0]


def test_nearest_steps_near_the_top_are_the_plain_loop():
    top = math.exp(_log_sigma(SCHED, 50))
    sigmas = [top, 0.999 * top, 0.99 * math.exp(_log_sigma(SCHED, 49)), 0.1]
    got = DiscreteSteps(SCHED).from_sigmas(torch.tensor(sigmas, dtype=torch.float64))
    assert got.tolist() == _plain_from_sigmas(SCHED, sigmas) and got.tolist()[1] == 50 - 1


@pytest.mark.parametrize("sigmas", [[80.0, 3.0, 1.0, 0.4, 0.2, 0.05, 0.03],
                                    [10.0, 0.6, 0.59, 0.58, 0.57, 0.56],  # crowded: kept distinct
                                    [5.0, 0.001, 0.0009]])  # below the range: room for the rest
def test_nearest_steps_are_the_plain_loop(sigmas):
    axis = DiscreteSteps(SCHED)
    got = axis.from_sigmas(torch.tensor(sigmas, dtype=torch.float64))
    assert got.tolist() == _plain_from_sigmas(SCHED, sigmas)


def test_the_ddpm_noise_range_by_hand():
    lo, hi = DiscreteSteps(SCHED).sigma_range()
    assert lo == pytest.approx(max(math.exp(_log_sigma(SCHED, 1)), EDM_SIGMA_RANGE[0]), rel=1e-12)
    assert hi == pytest.approx(min(math.exp(_log_sigma(SCHED, 50)), EDM_SIGMA_RANGE[1]), rel=1e-12)
    assert ContinuousTime().sigma_range() == EDM_SIGMA_RANGE
    tiny = NoiseSchedule([1e-7])  # sigma(1) = 3.2e-4, below EDM's range
    with pytest.raises(DDPMLabError, match=r"^the model's noise levels sigma in \[0.000316, 0.000316\] lie outside "
                                           r"\(0.002, 80.0\): use the uniform grid$"):
        DiscreteSteps(tiny).sigma_range()


def test_counts():
    axis = DiscreteSteps(SCHED)
    assert axis.count(0) == 50 and axis.count(50) == 50 and axis.count(1) == 1
    for bad in (51, -1):
        with pytest.raises(DDPMLabError, match=f"^steps must lie in 1..50, got {bad}$"):
            axis.count(bad)
    flow = ContinuousTime()
    assert flow.count(MAX_ODE_STEPS) == MAX_ODE_STEPS and flow.count(1) == 1
    too_many = f"^a flow's ODE takes at most {MAX_ODE_STEPS} steps, got {MAX_ODE_STEPS + 1}$"
    with pytest.raises(DDPMLabError, match=too_many):
        flow.count(MAX_ODE_STEPS + 1)
    with pytest.raises(DDPMLabError, match=r"^a flow's ODE needs the number of steps: --steps K \(steps=K\) "
                                           r"with K >= 1$"):
        flow.count(0)


def test_times_and_ode_times():
    axis = DiscreteSteps(SCHED)
    grid = axis.from_times(5)
    assert grid.tolist() == SCHED.spaced_steps(5)[::-1] + [0] and grid.dtype == torch.long
    times, last = axis.ode_times(grid)
    assert times == [k / 50 for k in grid.tolist()[:-1]] and last == grid.tolist()[-2]
    with pytest.raises(DDPMLabError, match=r"^the time shift \(and the shifted grid\) is a flow option; a DDPM's grid "
                                           r"is made of its schedule's steps \(leave the shift at 1\)$"):
        axis.from_times(5, 2.0)
    flow = ContinuousTime()
    g = flow.from_times(4)
    assert g.dtype == torch.float64 and g.tolist() == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0], abs=1e-15)
    assert flow.ode_times(g) == (g.tolist(), None)
    half = ESSER_SHIFT * 0.5 / (1 + (ESSER_SHIFT - 1) * 0.5)
    assert make_grid(flow, "shifted", 2).tolist() == pytest.approx([1.0, half, 0.0])
    assert ESSER_SHIFT == 3.0


def test_flow_noise_levels_map_to_times():
    t = ContinuousTime().from_sigmas(torch.tensor([80.0, 3.0, 1.0, 0.25], dtype=torch.float64))
    assert t.tolist() == pytest.approx([1.0, 0.75, 0.5, 0.2, 0.0], abs=1e-15)
    lam = torch.linspace(-2 * math.log(80.0), -2 * math.log(0.002), 5, dtype=torch.float64)
    s = torch.exp(-0.5 * lam)
    got = make_grid(ContinuousTime(), "log_snr", 5)
    assert got.tolist() == pytest.approx([1.0] + (s[1:] / (1 + s[1:])).tolist() + [0.0], rel=1e-12)
    k = karras_sigmas(4, 0.1, 10.0, 3.0)
    lo, hi = 0.1 ** (1 / 3), 10 ** (1 / 3)
    assert k.tolist() == pytest.approx([(hi + i / 3 * (lo - hi)) ** 3 for i in range(4)])
    assert karras_sigmas(3, 0.1, 10.0).tolist() == pytest.approx(
        [(10 ** (1 / 7) + i / 2 * (0.1 ** (1 / 7) - 10 ** (1 / 7))) ** 7 for i in range(3)])


def test_checks():
    steps, flow = DiscreteSteps(SCHED), ContinuousTime()
    assert steps.check(torch.tensor([50, 20, 0], dtype=torch.int32)).dtype == torch.long
    assert flow.check(torch.tensor([1.0, 0.5, 0.0], dtype=torch.float32)).dtype == torch.float64
    assert flow.check(torch.tensor([1.0 - 1e-10, 0.5, 1e-10], dtype=torch.float64))[0] == 1.0 - 1e-10
    for bad in ([1.0 - 2e-9, 0.5, 0.0], [1.0, 0.5, 2e-9], [1.0, float("nan"), 0.0], [1.0, 0.5, 0.5, 0.0]):
        with pytest.raises(DDPMLabError, match=r"^a grid runs strictly down, times from 1 down to 0 "
                                               r"\(first 1.0, last 0.0\)"):
            flow.check(torch.tensor(bad, dtype=torch.float64))
    long = torch.tensor([50, 40, 30, 20, 10, 5, 2, 1])
    with pytest.raises(DDPMLabError, match=r"got \[50, 40, 30, 20, 10, 5\] \.\.\.$"):
        steps.check(long)
    with pytest.raises(DDPMLabError, match=r"got \[50, 20, 1\]$"):
        steps.check(torch.tensor([50, 20, 1]))
    for shape_bad in (torch.tensor([50]), torch.tensor([[50, 0]])):
        with pytest.raises(DDPMLabError, match=r"^a grid is a 1-D tensor of at least 2 steps from 50 down to 0, "
                                               r"got shape"):
            steps.check(shape_bad)
    with pytest.raises(DDPMLabError, match=r"^a DDPM's grid is whole steps from 50 down to 0, "
                                           r"got a torch.bool tensor$"):
        steps.check(torch.tensor([True, False]))
    with pytest.raises(DDPMLabError, match=r"^a flow's grid is times t from 1 down to 0, got a torch.int64 tensor$"):
        flow.check(torch.tensor([1, 0]))


def test_grid_options_and_the_shift():
    assert grid_options("uniform") == ("shift",) and grid_options("shifted") == ("shift",)
    assert grid_options("karras") == ("rho",) and grid_options("log_snr") == ()
    assert {"shift", "rho"} <= all_grid_options()
    assert shift_option(1.0) == {} and shift_option(2.5) == {"shift": 2.5}
    with pytest.raises(DDPMLabError, match=r"^the log_snr grid takes no option rho \(its options: none\)$"):
        make_grid(ContinuousTime(), "log_snr", 3, rho=2.0)
    with pytest.raises(DDPMLabError, match=r"^the karras grid takes no option a, shift \(its options: rho\)$"):
        make_grid(ContinuousTime(), "karras", 3, shift=2.0, a=1)
    with pytest.raises(DDPMLabError, match=r"^a grid given as times takes no steps or grid options \(its length is"):
        make_grid(ContinuousTime(), [1.0, 0.0], rho=2.0)
    assert make_grid(ContinuousTime(), [1.0, 0.0]).tolist() == [1.0, 0.0]
    assert make_grid(DiscreteSteps(SCHED)).tolist() == list(range(50, -1, -1))  # steps 0: all T


def test_axes_by_family_name():
    calls = []

    def lazy():
        calls.append(1)
        return SCHED

    axis = axis_of("ddpm", lazy)
    assert isinstance(axis, DiscreteSteps) and not calls
    assert axis.schedule is SCHED and axis.schedule is SCHED and len(calls) == 1
    assert axis_of("ddpm", SCHED).schedule is SCHED
    assert isinstance(axis_of("flow", None), ContinuousTime)


def test_a_single_noise_level_is_a_range():
    assert DiscreteSteps(NoiseSchedule([0.5])).sigma_range() == (1.0, 1.0)  # sigma(1) = 1: lo = hi is fine


def test_the_shift_is_checked_by_name():
    with pytest.raises(DDPMLabError, match="^the time shift must be in"):
        ContinuousTime().from_times(3, 1000.0)


def test_a_grid_may_end_at_its_tolerance():
    assert ContinuousTime().check(torch.tensor([1.0, 0.5, 1e-9], dtype=torch.float64))[-1] == 1e-9


def test_the_shown_grid_is_cut_after_six_entries():
    steps = DiscreteSteps(SCHED)
    with pytest.raises(DDPMLabError, match=r"got \[50, 40, 30, 20, 10, 5\]$"):
        steps.check(torch.tensor([50, 40, 30, 20, 10, 5]))
    with pytest.raises(DDPMLabError, match=r"got \[50, 40, 30, 20, 10, 5\] \.\.\.$"):
        steps.check(torch.tensor([50, 40, 30, 20, 10, 5, 1]))


def test_a_grid_of_two_options_lists_both(monkeypatch):
    def two(axis, steps, a: float = 1.0, b: float = 2.0):
        return axis.from_times(steps)

    monkeypatch.setitem(TIME_GRIDS._items, "h4_two", two)
    with pytest.raises(DDPMLabError, match=r"^the h4_two grid takes no option rho \(its options: a, b\)$"):
        make_grid(ContinuousTime(), "h4_two", 3, rho=2.0)


def test_build_grid_defaults_to_every_step_evenly():
    oracle = MixtureOracle(seed_mixture(), SCHED)
    assert build_grid(oracle).tolist() == list(range(50, -1, -1))

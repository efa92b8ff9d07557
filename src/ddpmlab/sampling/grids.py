"""Time grids: the times a sampler visits, from the prior to the data, made outside the sampler (as
k-diffusion's ``get_sigmas_*``), so that every spacing combines with every sampler.

A grid is a 1-D tensor, strictly decreasing, in the model's own time; K steps make K + 1 entries:

- a DDPM (a discrete chain, ``DiscreteSteps``): a long tensor of paper steps of its schedule, T first, then
  the kept steps, then 0 (the data): ``tensor([250, 240, ..., 10, 0])``. The last move, from the smallest
  kept step to 0, is the model's p(x_0 | x_k) (its x_0 prediction for the deterministic samplers);
- a flow (continuous time, ``ContinuousTime``): a float64 tensor of times t from 1 (the prior N(0, I)) to
  0 (the data).

``build_grid(model, name, steps, **options)`` is the one place that makes a grid (by registered name,
or checks one given as a tensor); the representation is the time axis the model's family names
(``Family.time_axis``, a name in ``TIME_AXES``). A registered grid ``f(axis, steps, **options)`` spaces times or noise levels and lets
the axis map them onto the model's time:

- ``uniform``: evenly spaced in time: a DDPM's ``steps`` evenly kept steps (``NoiseSchedule.spaced_steps``,
  what every sampler used before grids existed); a flow's t_i = 1 - i / K;
- ``shifted``: a flow's time shift (Esser et al. 2024, eq. 23), t = k u / (1 + (k - 1) u) of the uniform
  u, which spends more steps near the noise for k > 1; ``shift`` k (default 3; ``uniform`` takes a shift
  too, default 1, so a run's ``sample.time_shift`` keeps its meaning: with k given the two are the same);
- ``karras``: EDM's spacing (Karras et al. 2022, eq. 5) of the noise-to-signal ratio
  sigma = sqrt((1 - abar) / abar), sigma_i = (smax^(1/rho) + i / (K - 1) (smin^(1/rho) - smax^(1/rho)))^rho,
  i = 0..K-1, then 0; ``rho`` (default 7) concentrates the steps at low noise;
- ``log_snr``: evenly spaced in the log signal-to-noise ratio lambda = log(abar / (1 - abar)) = -2 log sigma
  (k-diffusion's ``get_sigmas_exponential``; the limit of ``karras`` as rho grows).

The noise levels span the model's own range within EDM's [0.002, 80] (``EDM_SIGMA_RANGE``; a cosine
schedule's sigma(T) is about 1e4, where the data are long lost): a DDPM's sigma(1)..sigma(T), a flow's
sigma = t / (1 - t) over (0, inf). The first level stands for the prior: a DDPM's grid starts at step T,
a flow's at t = 1, where x_T ~ N(0, I) is drawn. Each later sigma_i goes to a DDPM's nearest step in
log sigma, kept distinct (each at most one below the previous and leaving room for the rest, so K steps
stay K steps), or to a flow's t = sigma / (1 + sigma).
"""
from __future__ import annotations

import inspect
import math
from functools import cached_property
from typing import Callable

import torch

from ddpmlab.core.paths import shifted_grid
from ddpmlab.core.registry import Registry
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.family import FAMILIES, family_of
from ddpmlab.sampling.options import MAX_ODE_STEPS, RHO_RANGE, TIME_SHIFT_RANGE, check_in_range

TIME_GRIDS = Registry("time grid")  # name -> f(axis, steps, **options) -> grid
TIME_AXES = Registry("time axis")  # name -> class(schedule) of a family's time
EDM_SIGMA_RANGE = (0.002, 80.0)  # the noise levels karras and log_snr span at most (Karras et al. 2022, Table 1)
ESSER_SHIFT = 3.0  # the shifted grid's default shift (Esser et al. 2024's choice at 1024 x 1024)


@TIME_AXES.register("steps")
class DiscreteSteps:
    """A DDPM's time: the paper steps 0..T of its schedule; a grid is a long tensor T, ..., 0."""

    def __init__(self, schedule: Callable):
        self._schedule = schedule  # the NoiseSchedule, or a zero-argument callable that gives it

    @cached_property
    def schedule(self):
        return self._schedule() if callable(self._schedule) else self._schedule

    def count(self, steps: int) -> int:
        """The number of steps: ``steps``, all T when 0."""
        T = self.schedule.T
        steps = int(steps) or T
        if not 1 <= steps <= T:
            raise DDPMLabError(f"steps must lie in 1..{T}, got {steps}")
        return steps

    def from_times(self, steps: int, shift: float = 1.0) -> torch.Tensor:
        """The ``steps`` evenly kept steps, T first, then 0; a DDPM has no time shift."""
        if shift != 1.0:
            raise DDPMLabError("the time shift (and the shifted grid) is a flow option; a DDPM's grid is made of "
                               "its schedule's steps (leave the shift at 1)")
        return torch.tensor(self.schedule.spaced_steps(steps)[::-1] + [0])

    def sigma_range(self) -> tuple[float, float]:
        """The noise levels a grid spans: sigma(1)..sigma(T) of the schedule, sigma = sqrt((1 - abar) / abar),
        within EDM's range."""
        log_sigma = self._log_sigmas()
        return _within_edm(math.exp(log_sigma[0].item()), math.exp(log_sigma[-1].item()))

    def from_sigmas(self, sigmas: torch.Tensor) -> torch.Tensor:
        """Step T (the prior) for sigma_0, then for each decreasing sigma_i (i = 1..K-1) the nearest step in
        log sigma, kept distinct and leaving room for the rest (K - i <= s_i < s_{i-1}), then 0."""
        log_sigma = self._log_sigmas()  # (T,) increasing: steps 1..T
        target = sigmas.double().log()
        hi = torch.searchsorted(log_sigma, target).clamp(1, log_sigma.numel() - 1)
        lo = hi - 1
        nearest = torch.where(target - log_sigma[lo] <= log_sigma[hi] - target, lo, hi) + 1  # paper steps
        K, out = len(sigmas), [self.schedule.T]
        for i, s in enumerate(nearest.tolist()[1:], start=1):
            out.append(max(min(s, out[-1] - 1), K - i))
        return torch.tensor(out + [0])

    def _log_sigmas(self) -> torch.Tensor:
        abar = self.schedule.alphas_cumprod[1:]
        return 0.5 * (torch.log1p(-abar) - abar.log())

    def check(self, grid: torch.Tensor) -> torch.Tensor:
        """``grid`` if it is a DDPM's: whole steps from T down to 0, strictly decreasing."""
        T = self.schedule.T
        if grid.dtype.is_floating_point or grid.dtype == torch.bool:
            raise DDPMLabError(f"a DDPM's grid is whole steps from {T} down to 0, got a {grid.dtype} tensor")
        _check_ends(grid, T, 0, f"steps from {T} down to 0")
        return grid.long()

    def ode_times(self, grid: torch.Tensor) -> tuple[list[float], int | None]:
        """The velocity ODE's times s = k / T down to the smallest kept step k, and k: the sampler ends with
        the denoising x_0 = the model's x_0 prediction there, where the score is singular."""
        steps, T = grid.tolist(), self.schedule.T
        return [k / T for k in steps[:-1]], steps[-2]


@TIME_AXES.register("continuous")
class ContinuousTime:
    """A flow's time t in [0, 1], t = 1 the prior; a grid is a float64 tensor 1, ..., 0."""

    def __init__(self, schedule=None):
        """(No schedule: continuous time has none; the argument keeps one signature for every axis.)"""

    def count(self, steps: int) -> int:
        steps = int(steps)
        if not steps:
            raise DDPMLabError("a flow's ODE needs the number of steps: --steps K (steps=K) with K >= 1")
        if steps > MAX_ODE_STEPS:
            raise DDPMLabError(f"a flow's ODE takes at most {MAX_ODE_STEPS} steps, got {steps}")
        return steps

    def from_times(self, steps: int, shift: float = 1.0) -> torch.Tensor:
        """t = k u / (1 + (k - 1) u) for u evenly spaced from 1 to 0 (``core.paths.shifted_grid``)."""
        shift = check_in_range("the time shift", shift, *TIME_SHIFT_RANGE)
        return torch.tensor(shifted_grid(steps, shift), dtype=torch.float64)

    def sigma_range(self) -> tuple[float, float]:
        """The noise levels a grid spans: sigma = t / (1 - t) runs over (0, inf), so EDM's range."""
        return _within_edm(0.0, math.inf)

    def from_sigmas(self, sigmas: torch.Tensor) -> torch.Tensor:
        """t = sigma / (1 + sigma) for sigma_1..sigma_{K-1}, after the prior's t = 1 and before the data's 0."""
        t = sigmas.double() / (1.0 + sigmas.double())
        t[0] = 1.0
        return torch.cat([t, t.new_zeros(1)])

    def check(self, grid: torch.Tensor) -> torch.Tensor:
        if not grid.dtype.is_floating_point:
            raise DDPMLabError(f"a flow's grid is times t from 1 down to 0, got a {grid.dtype} tensor")
        _check_ends(grid, 1.0, 0.0, "times from 1 down to 0")
        return grid.double()

    def ode_times(self, grid: torch.Tensor) -> tuple[list[float], None]:
        """The times themselves; the ODE runs to t = 0, whose state is the sample."""
        return grid.tolist(), None


def _within_edm(sigma_min: float, sigma_max: float) -> tuple[float, float]:
    """The model's noise levels [sigma_min, sigma_max] within ``EDM_SIGMA_RANGE``: beyond sigma = 80 the data
    are lost in the noise (a cosine schedule's sigma(T) is about 1e4), and the first grid time stands for
    the prior anyway."""
    lo, hi = max(sigma_min, EDM_SIGMA_RANGE[0]), min(sigma_max, EDM_SIGMA_RANGE[1])
    if lo > hi:
        raise DDPMLabError(f"the model's noise levels sigma in [{sigma_min:.3g}, {sigma_max:.3g}] lie outside "
                           f"{EDM_SIGMA_RANGE}: use the uniform grid")
    return lo, hi


def _check_ends(grid: torch.Tensor, first, last, what: str) -> None:
    """A 1-D grid from ``first`` to ``last`` (within float rounding: a shifted grid starts at 1 - 1e-15),
    strictly decreasing."""
    if grid.dim() != 1 or grid.numel() < 2:
        raise DDPMLabError(f"a grid is a 1-D tensor of at least 2 {what}, got shape {tuple(grid.shape)}")
    ends = abs(grid[0].item() - first) <= 1e-9 and abs(grid[-1].item() - last) <= 1e-9
    if not bool(torch.isfinite(grid.double()).all()) or not ends or not bool((grid[1:] < grid[:-1]).all()):
        raise DDPMLabError(f"a grid runs strictly down, {what} (first {first}, last {last}), got "
                           f"{grid.tolist()[:6]}{' ...' if grid.numel() > 6 else ''}")


def time_axis(model) -> DiscreteSteps | ContinuousTime:
    """The time the model's grids live on (its family's axis): a flow's continuous t, or the steps of a
    DDPM's schedule."""
    return TIME_AXES.get(family_of(model).time_axis)(lambda: model.schedule)


def axis_of(family: str, schedule) -> DiscreteSteps | ContinuousTime:
    """The time axis of the family named ``family``; ``schedule`` (a NoiseSchedule or a callable giving one)
    is read only by an axis of steps."""
    return TIME_AXES.get(FAMILIES.get(family).time_axis)(schedule)


@TIME_GRIDS.register("uniform")
def uniform_grid(axis, steps: int, shift: float = 1.0) -> torch.Tensor:
    """Evenly spaced in time (a flow's shifted by ``shift`` k when k != 1)."""
    return axis.from_times(steps, shift)


@TIME_GRIDS.register("shifted")
def shifted_time_grid(axis, steps: int, shift: float = ESSER_SHIFT) -> torch.Tensor:
    """A flow's uniform grid under the time shift k = ``shift`` (Esser et al. 2024, eq. 23)."""
    return axis.from_times(steps, shift)


def karras_sigmas(steps: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM's ``steps`` noise levels from sigma_max down to sigma_min (Karras et al. 2022, eq. 5), float64."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


@TIME_GRIDS.register("karras")
def karras_grid(axis, steps: int, rho: float = 7.0) -> torch.Tensor:
    """EDM's rho spacing of sigma over the model's sigma range."""
    rho = check_in_range("the karras grid's rho", rho, *RHO_RANGE)
    return axis.from_sigmas(karras_sigmas(steps, *axis.sigma_range(), rho))


@TIME_GRIDS.register("log_snr")
def log_snr_grid(axis, steps: int) -> torch.Tensor:
    """Evenly spaced in log-SNR lambda = -2 log sigma over the model's sigma range."""
    sigma_min, sigma_max = axis.sigma_range()
    lam = torch.linspace(-2 * math.log(sigma_max), -2 * math.log(sigma_min), steps, dtype=torch.float64)
    return axis.from_sigmas(torch.exp(-0.5 * lam))


def grid_options(name: str) -> tuple[str, ...]:
    """The options the registered grid ``name`` takes (beyond the axis and the steps)."""
    return tuple(inspect.signature(TIME_GRIDS.get(name)).parameters)[2:]


def all_grid_options() -> set[str]:
    """Every option some registered grid takes: what ``sample`` passes to the grid, not the sampler."""
    return {o for name in TIME_GRIDS for o in grid_options(name)}


def shift_option(time_shift: float) -> dict:
    """A run's ``sample.time_shift`` as a grid option: none at 1 (no shift), so that a grid without a shift
    (karras, log_snr) is asked for one only when it is set."""
    return {} if time_shift == 1.0 else {"shift": time_shift}


def make_grid(axis, grid="uniform", steps: int = 0, **options) -> torch.Tensor:
    """The grid named ``grid`` of ``steps`` steps (0: a DDPM's T) with its ``options`` on ``axis``, or
    ``grid`` itself, checked, when it is a tensor (or list) of times."""
    if not isinstance(grid, str):
        if steps or options:
            raise DDPMLabError("a grid given as times takes no steps or grid options (its length is the steps)")
        return axis.check(torch.as_tensor(grid))
    fn = TIME_GRIDS.get(grid)
    unknown = sorted(set(options) - set(grid_options(grid)))
    if unknown:
        takes = ", ".join(grid_options(grid)) or "none"
        raise DDPMLabError(f"the {grid} grid takes no option {', '.join(unknown)} (its options: {takes})")
    return axis.check(fn(axis, axis.count(steps), **options))


def build_grid(model, grid="uniform", steps: int = 0, **options) -> torch.Tensor:
    """``make_grid`` on the model's own time axis: what ``ddpmlab.sample`` hands to every sampler."""
    return make_grid(time_axis(model), grid, steps, **options)

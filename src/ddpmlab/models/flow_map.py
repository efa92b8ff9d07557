"""The exact flow map of a Gaussian mixture: Phi_{t -> s}(x), the state at time s of the probability-flow
ODE dx/dt = v(x, t) that is at x at time t, for data q(x_0) = sum_k w_k N(mu_k, S_k).

On a Gaussian path x_t = alpha(t) x_0 + sigma(t) eps the marginal q_t is the mixture ``dist.on_path(alpha,
sigma)``, and the exact velocity v is the oracle's (``MixtureOracle``: a DDPM's probability-flow drift on
the VP path, Song et al. 2021 eq. 13; ``FlowMixtureOracle``: a flow's velocity on its path). Two ways to
the map:

- ``quantile`` (1-D): the flow keeps the order of points, so it is the monotone transport between the
  marginals, Phi_{t -> s}(x) = F_s^{-1}(F_t(x)) with F the mixture CDF (``monotone_map_1d``); it depends on
  q_t and q_s only, not on the path between them. Inverted by safeguarded Newton in float64 on the log of
  the smaller tail, so both tails keep their precision;
- ``rk45`` (any dimension): scipy's adaptive Dormand-Prince of the oracle's ``velocity_field`` in float64
  (``ode_flow_map``), rtol 1e-8 for every example, restarted at the velocity's knots in time (a DDPM's
  continuous schedule interpolates log alpha-bar between its steps, so beta(s) has a kink at each k / T:
  across them one solve's error is about 1e-6, piece by piece about 1e-11).

``exact_flow_map(oracle, x, t, s)`` takes the oracle's family time (a DDPM's paper steps, a flow's t in
[0, 1]; 0 is the data), so a few-step model's map f(x_t, t -> s) is scored against it at the same times;
``ExactFlowMap(oracle)`` is the exact map as a ``FlowMapModel``.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.core.validate import check_examples

RTOL = 1e-8  # the adaptive solve's relative tolerance, for every example
ATOL = 1e-10  # and its absolute one
MAX_NFE = 100_000  # the adaptive solve's cap on velocity evaluations: past it, stop instead of hanging
NEWTON_ITERATIONS = 200  # the quantile's cap on safeguarded Newton steps (it converges in far fewer)
NEWTON_TOL = 1e-13  # the quantile's step tolerance, relative to max(1, |y|)
EPS = torch.finfo(torch.float64).eps
TABLE_POINTS = 4097  # the table that narrows each quantile's bracket before Newton
METHODS = ("quantile", "rk45")


# -- the closed form in 1-D ------------------------------------------------------------------------
def _params_1d(dist: GaussianMixture):
    """log-weights, means and standard deviations (K,) of a 1-D mixture."""
    if dist.dim != 1:
        raise DDPMLabError(f"the closed-form (quantile) flow map is 1-D; this mixture has {dist.dim} dimensions "
                           "(use method='rk45')")
    return dist.weights.log(), dist.means[:, 0], dist.covariances[:, 0, 0].sqrt()


def _log_tails(params, y: torch.Tensor):
    """log F(y), log(1 - F(y)) and log f(y) of a 1-D mixture at y (B,), each (B,), float64."""
    log_w, mu, sd = params
    z = (y[:, None] - mu) / sd  # (B, K)
    lower = torch.logsumexp(log_w + torch.special.log_ndtr(z), 1)
    upper = torch.logsumexp(log_w + torch.special.log_ndtr(-z), 1)
    log_pdf = torch.logsumexp(log_w - 0.5 * z * z - sd.log() - 0.5 * math.log(2 * math.pi), 1)
    return lower, upper, log_pdf


def _tail_gap(params, y, target, upper):
    """g(y) = log F(y) - target (lower tail) or target - log(1 - F(y)) (upper), increasing in y, and g'(y)."""
    lower_y, upper_y, log_pdf = _log_tails(params, y)
    tail = torch.where(upper, upper_y, lower_y)
    gap = torch.where(upper, target - tail, tail - target)
    return gap, (log_pdf - tail).exp()  # d log F / dy = f / F; -d log(1 - F) / dy = f / (1 - F)


def _bracket(params, target, upper):
    """lo <= F^{-1} <= hi and g there (g(lo) <= 0 <= g(hi)). First the quantiles of the components (F is
    their weighted mean: at the smallest every component's CDF is at most the level, at the largest at
    least), cut to neighbours on a table of g over all of them (Newton alone wanders where the density is
    low, between the modes), then widened where g has no sign change (far tails, where exp(target)
    underflows)."""
    _, mu, sd = params
    z = torch.special.ndtri(target.exp().clamp_min(torch.finfo(torch.float64).tiny))
    comp = mu + sd * torch.where(upper, -z, z)[:, None]  # (B, K): each component's quantile of the level
    lo, hi = comp.amin(1), comp.amax(1)
    grid = torch.linspace(float(lo.min()), float(hi.max()), TABLE_POINTS, dtype=torch.float64)
    lower, upper_tail, _ = _log_tails(params, grid)  # log F increasing, log(1 - F) decreasing in y
    first = torch.where(upper, torch.searchsorted(-upper_tail, -target.contiguous()),
                        torch.searchsorted(lower, target.contiguous())).clamp(1, TABLE_POINTS - 1)
    lo, hi = torch.maximum(lo, grid[first - 1]), torch.minimum(hi, grid[first])  # g(grid[first]) >= 0 first
    width = sd.max() * torch.ones_like(lo)
    for _ in range(64):
        g_lo, g_hi = _tail_gap(params, lo, target, upper)[0], _tail_gap(params, hi, target, upper)[0]
        low_bad, high_bad = g_lo > 0, g_hi < 0
        if not bool((low_bad | high_bad).any()):
            return lo, hi, g_lo, g_hi
        lo, hi = torch.where(low_bad, lo - width, lo), torch.where(high_bad, hi + width, hi)
        width = torch.where(low_bad | high_bad, 2 * width, width)
    raise DDPMLabError("the mixture quantile could not be bracketed (a point beyond float64's tails)")


def mixture_quantile_1d(dist: GaussianMixture, log_level: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """y with log F(y) = ``log_level`` (or log(1 - F(y)) where ``upper``) for a 1-D mixture, (B,) float64:
    safeguarded Newton on the increasing g of ``_tail_gap`` inside a bracket (where Newton's step would
    leave it, the false-position point of the bracket instead), to NEWTON_TOL."""
    params = _params_1d(dist)
    target = log_level.to(torch.float64)
    lo, hi, g_lo, g_hi = _bracket(params, target, upper)
    y = _false_position(lo, hi, g_lo, g_hi)
    for _ in range(NEWTON_ITERATIONS):
        gap, slope = _tail_gap(params, y, target, upper)
        below, above = gap < 0, gap > 0
        lo, g_lo = torch.where(below, y, lo), torch.where(below, gap, g_lo)
        hi, g_hi = torch.where(above, y, hi), torch.where(above, gap, g_hi)
        newton = y - gap / slope
        inside = (newton >= lo) & (newton <= hi) & torch.isfinite(newton)  # y itself is an end of it
        step = torch.where(inside, newton, _false_position(lo, hi, g_lo, g_hi)) - y
        level = gap.abs() <= 4 * EPS * target.abs().clamp_min(1.0)  # g at its rounding: y is as good as it gets
        step = torch.where(level, torch.zeros_like(step), step)
        y = y + step
        if bool((step.abs() <= NEWTON_TOL * y.abs().clamp_min(1.0)).all()):
            return y
    raise DDPMLabError(f"the mixture quantile did not converge in {NEWTON_ITERATIONS} steps")


def _false_position(lo, hi, g_lo, g_hi):
    """Where the chord from (lo, g_lo) to (hi, g_hi) crosses zero, held strictly inside [lo, hi] (bisection
    where rounding puts it on an end)."""
    y = lo - g_lo * (hi - lo) / (g_hi - g_lo)
    return torch.where((y > lo) & (y < hi), y, 0.5 * (lo + hi))


def monotone_map_1d(source: GaussianMixture, target: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """F_target^{-1}(F_source(x)) for x (B,): the increasing map that pushes ``source`` onto ``target`` (the
    1-D optimal transport), through the smaller tail of F_source(x) so that neither tail loses precision."""
    x = x.to(torch.float64).reshape(-1)
    lower, upper, _ = _log_tails(_params_1d(source), x)
    use_upper = upper < lower
    return mixture_quantile_1d(target, torch.where(use_upper, upper, lower), use_upper)


# -- the ODE in any dimension ------------------------------------------------------------------------
def _solve_piece(rhs, y: np.ndarray, t_from: float, t_to: float, rtol: float, atol: float) -> np.ndarray:
    """One RK45 solve of the flattened system from t_from to t_to; its state at t_to."""
    from scipy.integrate import solve_ivp  # imported where used: `import ddpmlab` stays fast

    sol = solve_ivp(rhs, (t_from, t_to), y, method="RK45", rtol=rtol, atol=atol)
    if not sol.success:
        raise DDPMLabError(f"the exact flow map's integration failed: {sol.message}")
    return np.ascontiguousarray(sol.y[:, -1])


def ode_flow_map(velocity, x: torch.Tensor, t_from: float, t_to: float, knots=(), rtol: float = RTOL,
                 atol: float = ATOL, max_nfe: int = MAX_NFE) -> torch.Tensor:
    """The state at ``t_to`` of dx/dt = velocity(x, t) started at x (B, *dims) at ``t_from``: scipy's RK45 in
    float64, restarted at each of ``knots`` between the two (times where the velocity's time derivative
    jumps, which an adaptive step's error estimate cannot see). All examples are one system; the
    tolerances are divided by sqrt(its size), which bounds every example's local error by ``rtol`` and
    ``atol`` (solve_ivp bounds the RMS over all components). Returns float64, shaped like x."""
    x = x.detach().to(torch.float64).cpu()
    t_from, t_to = float(t_from), float(t_to)
    shape, nfe = x.shape, 0

    def rhs(t, y):
        nonlocal nfe
        nfe += 1
        if nfe > max_nfe:
            raise DDPMLabError(f"the exact flow map found no solution within {max_nfe} velocity evaluations "
                               f"(stopped at t = {t:.4g})")
        with torch.no_grad():
            out = velocity(torch.from_numpy(y).reshape(shape), float(t))
        return out.reshape(-1).double().numpy()

    inner = sorted({float(k) for k in knots if min(t_from, t_to) < float(k) < max(t_from, t_to)},
                   reverse=t_to < t_from)
    times = [t_from] + inner + [t_to] if t_from != t_to else [t_from]
    y, k = x.reshape(-1).numpy().copy(), math.sqrt(x.numel())
    for a, b in zip(times[:-1], times[1:]):
        y = _solve_piece(rhs, y, a, b, rtol / k, atol / k)
    return torch.from_numpy(y).reshape(shape)


# -- the map of an oracle, at its family's time ---------------------------------------------------------
def _family_time(oracle, t, name: str):
    """``t`` as the oracle's family time: 0 (the data) or one its ``check_times`` accepts."""
    try:
        value = float(t)
    except (TypeError, ValueError):
        raise DDPMLabError(f"the flow map's {name} must be a number, got {t!r}") from None
    return 0 if value == 0 else oracle.check_times([t])[0]


def _check_oracle(oracle) -> GaussianMixture:
    dist = getattr(oracle, "dist", None)
    if not isinstance(dist, GaussianMixture) or not hasattr(oracle, "velocity_field"):
        raise DDPMLabError(f"the exact flow map needs an exact oracle of a Gaussian mixture (family_of(model)."
                           f"oracle(model, dist)), got {type(oracle).__name__}")
    return dist


def exact_flow_map(oracle, x, t, s, method: str | None = None, rtol: float = RTOL, atol: float = ATOL) -> torch.Tensor:
    """Phi_{t -> s}(x): where the exact probability-flow ODE of ``oracle`` (a ``MixtureOracle`` or
    ``FlowMixtureOracle``, of its family's path) carries x (B, *data_shape) from time t to time s, both the
    oracle's family time (a DDPM's paper steps 0..T, a flow's t in [0, 1]; 0 is the data, either direction).

    ``method``: "quantile" (1-D only, the closed form F_s^{-1}(F_t(x)) of ``monotone_map_1d``), "rk45"
    (``ode_flow_map`` of the oracle's ``velocity_field`` at its ``ode_time``, restarted at its ``ode_knots``),
    or None: quantile
    in 1-D, rk45 otherwise. Returns float64, shaped like x.
    """
    dist = _check_oracle(oracle)
    method = method or ("quantile" if dist.dim == 1 else "rk45")
    if method not in METHODS:
        raise DDPMLabError(f"the flow map's method must be one of {', '.join(METHODS)} or None, got {method!r}")
    x = check_examples(x, "the flow map's x", tuple(oracle.data_shape), dtype=torch.float64).cpu()
    t, s = _family_time(oracle, t, "start time t"), _family_time(oracle, s, "end time s")
    if method == "quantile":
        source, target = (dist.on_path(*oracle.marginal_coefficients(u)) for u in (t, s))
        return monotone_map_1d(source, target, x).reshape(x.shape)
    return ode_flow_map(oracle.velocity_field(), x, oracle.ode_time(t), oracle.ode_time(s), oracle.ode_knots(),
                        rtol, atol)


class ExactFlowMap:
    """The exact map of ``oracle`` as a ``FlowMapModel``: ``flow_map(x, t, s)`` is ``exact_flow_map`` (the
    best possible few-step model; its flow-map error is zero)."""

    def __init__(self, oracle, method: str | None = None):
        _check_oracle(oracle)
        self.oracle, self.method = oracle, method
        self.data_shape = tuple(oracle.data_shape)

    def flow_map(self, x: torch.Tensor, t, s, cond=None) -> torch.Tensor:
        if cond is not None:
            raise DDPMLabError("the exact flow map is unconditional; it takes no condition")
        return exact_flow_map(self.oracle, x, t, s, self.method)

"""Fixed-step and adaptive solvers of the velocity ODE dx/dt = v(x, t) from t = 1 (the prior) towards
t = 0 (the data), for a model of any family (its ``velocity_field``, ``ddpmlab.core.contract``):

- ``euler``: x <- x + h v(x, t) (first order, one evaluation a step);
- ``midpoint``: x <- x + h v(x + h/2 v(x, t), t + h/2) (second order, two evaluations);
- ``heun``: x <- x + h/2 (v(x, t) + v(x + h v(x, t), t + h)) (second order, two evaluations);
- ``rk45``: scipy's adaptive Dormand-Prince, at most ``max_nfe`` evaluations; the grid only says
  where states are kept.

Each is ``f(model, x, grid, cond=None, callback=None, **options)``; the grid's own time axis
(``ddpmlab.sampling.grids``) gives its times: a flow's run from t = 1 to t = 0, whose state is the sample;
a DDPM's are its kept steps s = k / T down to the smallest one, and its last step is the denoising
x_0 = the model's x_0 prediction (where the score is singular). Each declares ``contract = ProcessModel``:
it serves every family (``Family.serves``).
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from ddpmlab.core.process import ProcessModel
from ddpmlab.core.utils import NonFiniteError
from ddpmlab.sampling.grids import time_axis
from ddpmlab.sampling.registry import ODE_SOLVERS
from ddpmlab.sampling.samplers import check_finite, denoise

MAX_NFE = 20_000  # the adaptive solver's cap on drift evaluations: past it, stop instead of hanging


def _finish(model, x, grid: torch.Tensor, last, cond, callback, name: str):
    """The sample: a DDPM's denoised x_0 from its smallest kept step ``last`` (a step of its own, the
    grid's last), or a flow's state at t = 0 itself (``last`` None)."""
    if last is not None:
        x = denoise(model, x, last, cond)
        if callback is not None:
            callback(grid.numel() - 2, 0, x)
    check_finite(x, f"ode ({name})", 0)
    return x


def _fixed_step(name: str, step, model, x: torch.Tensor, grid: torch.Tensor, cond=None, callback=None):
    """The fixed-step solver ``name``: its rule ``step`` from each of the grid's times to the next, then the
    finish. Registered with ``name`` and ``step`` bound (``functools.partial``, below)."""
    times, last = time_axis(model).ode_times(grid)
    v = model.velocity_field(cond, float64=False)
    for i, (t_hi, t_lo) in enumerate(zip(times[:-1], times[1:])):
        x = step(v, x, t_hi, t_lo - t_hi)
        check_finite(x, f"ode ({name})", f"{t_lo:.4g}")
        if callback is not None:
            callback(i, grid[i + 1].item(), x)
    return _finish(model, x, grid, last, cond, callback, name)


def _euler(v, x, t, h):
    return x + h * v(x, t)


def _midpoint(v, x, t, h):
    return x + h * v(x + 0.5 * h * v(x, t), t + 0.5 * h)


def _heun(v, x, t, h):
    d1 = v(x, t)
    return x + 0.5 * h * (d1 + v(x + h * d1, t + h))


for _name, _step in (("euler", _euler), ("heun", _heun), ("midpoint", _midpoint)):
    _solve = functools.partial(_fixed_step, _name, _step)  # the solving runs in a module-level function
    _solve.contract = ProcessModel
    ODE_SOLVERS.register(_name, _solve)


@ODE_SOLVERS.register("rk45")
def rk45_solve(model, x: torch.Tensor, grid: torch.Tensor, cond=None, callback=None, rtol: float = 1e-5,
               atol: float = 1e-5, max_nfe: int = MAX_NFE):
    """scipy's adaptive RK45 (states kept on the grid), at most ``max_nfe`` evaluations, then the finish."""
    times, last = time_axis(model).ode_times(grid)
    v = model.velocity_field(cond)
    shape, nfe = x.shape, 0

    def rhs(t, y):
        nonlocal nfe
        nfe += 1
        if nfe > max_nfe:
            raise NonFiniteError(f"ode (rk45) sampler: no solution within {max_nfe} evaluations (stopped at "
                                 f"t = {t:.4g}); the model's flow is far from a smooth one")
        out = v(torch.from_numpy(y).reshape(shape).to(x.dtype), t).reshape(-1).double().cpu().numpy()
        if not np.isfinite(out).all():
            raise NonFiniteError(f"ode (rk45) sampler: non-finite drift (NaN or inf) at t = {t:.4g}")
        return out

    from scipy.integrate import solve_ivp  # imported where used: `import ddpmlab` stays fast

    sol = solve_ivp(rhs, (1.0, times[-1]), x.reshape(-1).double().cpu().numpy(), method="RK45", rtol=rtol,
                    atol=atol, t_eval=times)
    if not sol.success:
        raise NonFiniteError(f"ode (rk45) sampler: integration failed ({sol.message})")

    def state(i):  # the state kept at times[i]
        return torch.from_numpy(np.ascontiguousarray(sol.y[:, i])).to(x.device, x.dtype).reshape(shape)

    if callback is not None:
        for i in range(1, sol.y.shape[1]):
            callback(i - 1, grid[i].item(), state(i))
    return _finish(model, state(sol.y.shape[1] - 1), grid, last, cond, callback, "rk45")


rk45_solve.contract = ProcessModel

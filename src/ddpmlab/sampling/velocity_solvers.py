"""Fixed-step and adaptive solvers of the velocity ODE dx/dt = v(x, t) from t = 1 (the prior) towards
t = 0 (the data), for either process family (``ddpmlab.core.paths.velocity_field``):

- ``euler``: x <- x + h v(x, t) (first order, one evaluation a step);
- ``midpoint``: x <- x + h v(x + h/2 v(x, t), t + h/2) (second order, two evaluations);
- ``heun``: x <- x + h/2 (v(x, t) + v(x + h v(x, t), t + h)) (second order, two evaluations);
- ``rk45``: scipy's adaptive Dormand-Prince, at most ``max_nfe`` evaluations; the grid only says
  where states are kept.

The grid of a flow runs from t = 1 to t = 0 over ``steps`` steps, uniform or shifted (``shift``,
``ddpmlab.core.paths.shifted_grid``); a flow's last state is its sample. A DDPM's grid is its ``steps``
evenly kept steps s = t / T of the schedule, down to the smallest one, and its last step is the
denoising x_0 = the model's x_0 prediction (where the score is singular). Solvers carry ``families``,
the process families they serve (read by the ``ode`` sampler).
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ddpmlab.core.contract import step_tensor
from ddpmlab.core.paths import family_of, shifted_grid, velocity_field
from ddpmlab.core.utils import DDPMLabError, NonFiniteError
from ddpmlab.sampling.registry import ODE_SOLVERS
from ddpmlab.sampling.samplers import check_finite

MAX_NFE = 20_000  # the adaptive solver's cap on drift evaluations: past it, stop instead of hanging
BOTH = ("ddpm", "flow")


def _plan(model, steps: int, shift: float):
    """The grid (times from 1 down) and the finishing map x -> sample of the model's family."""
    if family_of(model) == "flow":
        if not steps:
            raise DDPMLabError("a flow's ODE needs the number of steps: --steps K (steps=K) with K >= 1")
        return shifted_grid(int(steps), shift), (lambda x, cond: x)
    if shift != 1.0:
        raise DDPMLabError("the time shift is a flow option; a DDPM's ODE runs on its schedule's evenly kept steps "
                           "(leave the shift at 1)")
    T = model.schedule.T
    kept = model.schedule.spaced_steps(steps or T)

    def denoise(x, cond):
        return model.p_mean_variance(x, step_tensor(model, x.shape[0], kept[0]), cond).pred_x0

    return [k / T for k in reversed(kept)], denoise


def _close(traj: list, x, model, keep_trajectory: bool):
    """The sample, or the states from it (index 0) to x_T: a DDPM's denoised x_0 is a state of its own,
    a flow's t = 0 state is its sample."""
    if family_of(model) == "ddpm":
        traj.append(x)
    else:
        traj[-1] = x
    return torch.stack(traj[::-1]) if keep_trajectory else x


def _fixed_step(name: str, step):
    def solve(model, x: torch.Tensor, steps: int = 0, cond=None, keep_trajectory: bool = False,
              shift: float = 1.0):
        grid, finish = _plan(model, steps, shift)
        v = velocity_field(model, cond, float64=family_of(model) == "ddpm")
        traj = [x]
        for t_hi, t_lo in zip(grid[:-1], grid[1:]):
            x = step(v, x, t_hi, t_lo - t_hi)
            check_finite(x, f"ode ({name})", f"{t_lo:.4g}")
            traj.append(x)
        x = finish(x, cond)
        check_finite(x, f"ode ({name})", 0)
        return _close(traj, x, model, keep_trajectory)

    solve.families = BOTH
    solve.__name__ = f"{name}_solve"
    return solve


def _euler(v, x, t, h):
    return x + h * v(x, t)


def _midpoint(v, x, t, h):
    return x + h * v(x + 0.5 * h * v(x, t), t + 0.5 * h)


def _heun(v, x, t, h):
    d1 = v(x, t)
    return x + 0.5 * h * (d1 + v(x + h * d1, t + h))


euler_solve = ODE_SOLVERS.register("euler", _fixed_step("euler", _euler))
heun_solve = ODE_SOLVERS.register("heun", _fixed_step("heun", _heun))
midpoint_solve = ODE_SOLVERS.register("midpoint", _fixed_step("midpoint", _midpoint))


@ODE_SOLVERS.register("rk45")
def rk45_solve(model, x: torch.Tensor, steps: int = 0, cond=None, keep_trajectory: bool = False,
               rtol: float = 1e-5, atol: float = 1e-5, max_nfe: int = MAX_NFE, shift: float = 1.0):
    """scipy's adaptive RK45 (states kept on the grid), at most ``max_nfe`` evaluations, then the finish."""
    grid, finish = _plan(model, steps, shift)
    v = velocity_field(model, cond)
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

    sol = solve_ivp(rhs, (1.0, grid[-1]), x.reshape(-1).double().cpu().numpy(), method="RK45", rtol=rtol,
                    atol=atol, t_eval=grid)
    if not sol.success:
        raise NonFiniteError(f"ode (rk45) sampler: integration failed ({sol.message})")
    traj = [torch.from_numpy(np.ascontiguousarray(sol.y[:, i])).to(x.device, x.dtype).reshape(shape)
            for i in range(sol.y.shape[1])]
    x = finish(traj[-1], cond)
    check_finite(x, "ode (rk45)", 0)
    return _close(traj, x, model, keep_trajectory)


rk45_solve.families = BOTH

"""Sampling by the probability-flow ODE (Song et al. 2021, eq. 13 for the VP SDE):

    dx/ds = -1/2 beta(s) (x + grad_x log q_s(x)),   s from 1 down to 1/T.

Three solvers over the K kept steps of the schedule:
- ``dpm_solver`` (default): DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), the
  exponential integrator of the ODE in the half log-SNR lambda = log(sqrt(abar) / sqrt(1 - abar)), with
  the model's x_0 prediction extrapolated linearly in lambda from the last two steps: second order,
  one network evaluation a step. Its first-order special case is DDIM (eta = 0).
- ``heun``: Heun's second-order method in s = t / T on the continuous schedule of
  ``ddpmlab.evaluation.ode`` (log alpha-bar interpolated through the grid), two evaluations a step.
- ``rk45``: scipy's adaptive solver on that schedule (the kept steps only say where states are kept).
The last step, from the smallest kept step to 0, is the denoising x_0 = the model's x_0 prediction,
where the ODE's score is singular.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from scipy.integrate import solve_ivp

from ddpmlab.core.continuous import ContinuousSchedule, score_function
from ddpmlab.core.contract import step_tensor
from ddpmlab.core.utils import NonFiniteError
from ddpmlab.sampling.registry import ODE_SOLVERS, SAMPLERS
from ddpmlab.sampling.samplers import check_finite

MAX_NFE = 20_000  # the adaptive solver's cap on drift evaluations: past it, stop instead of hanging


def _drift(score, cont: ContinuousSchedule):
    def f(x, s):
        return -0.5 * cont.beta(s) * (x + score(x, s))

    return f


def _denoise(model, x, t: int, cond=None):
    """x_0 from x_t: the model's own x_0 prediction at step t."""
    return model.p_mean_variance(x, step_tensor(model, x.shape[0], t), cond).pred_x0


@ODE_SOLVERS.register("dpm_solver")
def dpm_solver(model, x: torch.Tensor, steps: int = 0, cond=None, keep_trajectory: bool = False):
    """DPM-Solver++(2M) (``dpm_solver_2m``) from x = x_T down ``steps`` evenly kept steps, then x_0.
    Returns x_0, or the states (K + 1, n, *dims) from x_0 (index 0) to x_T."""
    kept = model.schedule.spaced_steps(steps or model.schedule.T)
    x, traj = dpm_solver_2m(model, x, kept, cond, keep_trajectory)
    return torch.stack(traj[::-1]) if keep_trajectory else x


def dpm_solver_2m(model, x: torch.Tensor, kept: list[int], cond=None, keep_trajectory: bool = False):
    """DPM-Solver++(2M) from x at step ``kept[-1]`` down the increasing ``kept`` steps, then x_0.

    With alpha = sqrt(abar), sigma = sqrt(1 - abar), h_i = lambda_i - lambda_{i-1} and D_i the x_0
    prediction extrapolated in lambda (first order on the first step),
    x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (exp(-h_i) - 1) D_i,
    D_i = (1 + 1 / (2 r_i)) x0_{i-1} - 1 / (2 r_i) x0_{i-2},  r_i = h_{i-1} / h_i.
    Returns x_0, and the states visited (x_T first) when ``keep_trajectory``.
    """
    abar = model.schedule.alphas_cumprod
    order = list(reversed(kept))
    lam = {t: 0.5 * math.log(abar[t].item() / (1.0 - abar[t].item())) for t in order}
    traj = [x] if keep_trajectory else None
    prev_x0, prev_h = None, None
    for t, s in zip(order, order[1:] + [0]):
        x0 = _denoise(model, x, t, cond)
        if s == 0:
            x = x0
        else:
            h = lam[s] - lam[t]
            d = x0 if prev_x0 is None else x0 + (x0 - prev_x0) * (h / (2.0 * prev_h))  # 1 + 1/(2r), r = prev_h / h
            sigma_ratio = math.sqrt((1.0 - abar[s].item()) / (1.0 - abar[t].item()))
            x = sigma_ratio * x - math.sqrt(abar[s].item()) * math.expm1(-h) * d
            prev_x0, prev_h = x0, h
        check_finite(x, "ode (dpm_solver)", t)
        if traj is not None:
            traj.append(x)
    return x, traj


def _grid(model, steps: int) -> tuple[list[int], list[float]]:
    """Kept steps and the continuous times s = t / T they stand at, from s = 1 down."""
    kept = model.schedule.spaced_steps(steps or model.schedule.T)
    return kept, [k / model.schedule.T for k in reversed(kept)]


def _finish(model, x, traj, kept, cond, keep_trajectory):
    x = _denoise(model, x, kept[0], cond)
    check_finite(x, "ode", kept[0])
    traj.append(x)
    return torch.stack(traj[::-1]) if keep_trajectory else x


@ODE_SOLVERS.register("heun")
def heun_solve(model, x: torch.Tensor, steps: int = 0, cond=None, keep_trajectory: bool = False):
    """Heun's second-order method in s = t / T on the continuous schedule, two evaluations a step,
    then the denoising step from the smallest kept step."""
    kept, grid = _grid(model, steps)
    cont = ContinuousSchedule(model.schedule)
    f = _drift(_conditioned(score_function(model, cont), cond), cont)
    traj = [x]
    for s_hi, s_lo in zip(grid[:-1], grid[1:]):
        h = s_lo - s_hi
        d1 = f(x, s_hi)
        x = x + 0.5 * h * (d1 + f(x + h * d1, s_lo))
        check_finite(x, "ode (heun)", round(s_lo * model.schedule.T))
        traj.append(x)
    return _finish(model, x, traj, kept, cond, keep_trajectory)


@ODE_SOLVERS.register("rk45")
def rk45_solve(model, x: torch.Tensor, steps: int = 0, cond=None, keep_trajectory: bool = False,
               rtol: float = 1e-5, atol: float = 1e-5, max_nfe: int = MAX_NFE):
    """scipy's adaptive RK45 on the continuous schedule (the kept steps only say where states are
    kept), at most ``max_nfe`` drift evaluations, then the denoising step."""
    kept, grid = _grid(model, steps)
    cont = ContinuousSchedule(model.schedule)
    f = _drift(_conditioned(score_function(model, cont), cond), cont)
    shape, nfe = x.shape, 0

    def rhs(s, y):
        nonlocal nfe
        nfe += 1
        if nfe > max_nfe:
            raise NonFiniteError(f"ode (rk45) sampler: no solution within {max_nfe} evaluations (stopped at "
                                 f"s = {s:.4g}); the model's flow is far from a diffusion's")
        out = f(torch.from_numpy(y).reshape(shape).to(x.dtype), s).reshape(-1).double().cpu().numpy()
        if not np.isfinite(out).all():
            raise NonFiniteError(f"ode (rk45) sampler: non-finite drift (NaN or inf) at s = {s:.4g}")
        return out

    sol = solve_ivp(rhs, (1.0, grid[-1]), x.reshape(-1).double().cpu().numpy(), method="RK45", rtol=rtol,
                    atol=atol, t_eval=grid)
    if not sol.success:
        raise NonFiniteError(f"ode (rk45) sampler: integration failed ({sol.message})")
    traj = [torch.from_numpy(np.ascontiguousarray(sol.y[:, i])).to(x.device, x.dtype).reshape(shape)
            for i in range(sol.y.shape[1])]
    return _finish(model, traj[-1], traj, kept, cond, keep_trajectory)


def _conditioned(score, cond):
    return score if cond is None else (lambda x, s: score(x, s, cond))


@SAMPLERS.register("ode")
@torch.no_grad()
def ode_sample(model, x: torch.Tensor, steps: int = 0, generator: torch.Generator | None = None, cond=None,
               keep_trajectory: bool = False, solver: str = "dpm_solver", **options):
    """The probability-flow ODE from x = x_T by the registered ``solver`` (``dpm_solver``, ``heun`` or
    ``rk45``; ``options`` such as rtol go to it) on ``steps`` evenly kept steps; deterministic."""
    return ODE_SOLVERS.get(solver)(model, x, steps, cond=cond, keep_trajectory=keep_trajectory, **options)

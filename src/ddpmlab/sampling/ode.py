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

from ddpmlab.evaluation.ode import ContinuousSchedule, score_function
from ddpmlab.core.parameterisation import model_predict_x0_eps
from ddpmlab.core.utils import DDPMLabError

ODE_SOLVERS = ("dpm_solver", "heun", "rk45")


def _drift(score, cont: ContinuousSchedule):
    def f(x, s):
        return -0.5 * cont.beta(s) * (x + score(x, s))

    return f


def _denoise(model, x, t: int):
    """x_0 from x_t: the model's own x_0 prediction at step t."""
    x0, _ = model_predict_x0_eps(model, x, torch.full((x.shape[0],), t, dtype=torch.long))
    return x0


def dpm_solver_2m(model, x: torch.Tensor, kept: list[int], keep_trajectory: bool = False):
    """DPM-Solver++(2M) from x at step ``kept[-1]`` down the increasing ``kept`` steps, then x_0.

    With alpha = sqrt(abar), sigma = sqrt(1 - abar), h_i = lambda_i - lambda_{i-1} and D_i the x_0
    prediction extrapolated in lambda (first order on the first step),
    x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (exp(-h_i) - 1) D_i,
    D_i = (1 + 1 / (2 r_i)) x0_{i-1} - 1 / (2 r_i) x0_{i-2},  r_i = h_{i-1} / h_i.
    Returns x_0, and the states visited (x_T first) when ``keep_trajectory``.
    """
    abar = model.schedule.alphas_cumprod
    steps = list(reversed(kept))
    lam = {t: 0.5 * math.log(abar[t].item() / (1.0 - abar[t].item())) for t in steps}
    traj = [x] if keep_trajectory else None
    prev_x0, prev_h = None, None
    n = x.shape[0]
    for t, s in zip(steps, steps[1:] + [0]):
        x0, _ = model_predict_x0_eps(model, x, torch.full((n,), t, dtype=torch.long))
        if s == 0:
            x = x0
        else:
            h = lam[s] - lam[t]
            d = x0 if prev_x0 is None else x0 + (x0 - prev_x0) * (h / (2.0 * prev_h))  # 1 + 1/(2r), r = prev_h / h
            sigma_ratio = math.sqrt((1.0 - abar[s].item()) / (1.0 - abar[t].item()))
            x = sigma_ratio * x - math.sqrt(abar[s].item()) * math.expm1(-h) * d
            prev_x0, prev_h = x0, h
        if traj is not None:
            traj.append(x)
    return x, traj


@torch.no_grad()
def ode_sample(model, n: int, steps: int | None = None, generator: torch.Generator | None = None,
               keep_trajectory: bool = False, method: str = "dpm_solver", rtol: float = 1e-5, atol: float = 1e-5,
               x_T: torch.Tensor | None = None):
    """Samples (n, *dims), or the trajectory (K + 1, n, *dims) from x_0 (index 0) to x_T, by ``method``
    (``dpm_solver``, ``heun`` or ``rk45``) on ``steps`` evenly kept steps (all T by default)."""
    sched = model.schedule
    T = sched.T
    kept = sched.spaced_steps(steps or T)
    shape = (n,) + tuple(model.data_shape)
    x = torch.randn(shape, generator=generator) if x_T is None else x_T.clone()
    if method == "dpm_solver":
        x, traj = dpm_solver_2m(model, x, kept, keep_trajectory)
        return torch.stack(traj[::-1]) if keep_trajectory else x
    cont = ContinuousSchedule(sched)
    f = _drift(score_function(model, cont), cont)
    grid = [k / T for k in reversed(kept)]  # 1 = s_K > ... > s_1
    traj = [x]
    if method == "heun":
        for s_hi, s_lo in zip(grid[:-1], grid[1:]):
            h = s_lo - s_hi
            d1 = f(x, s_hi)
            x_euler = x + h * d1
            x = x + 0.5 * h * (d1 + f(x_euler, s_lo))
            traj.append(x)
    elif method == "rk45":
        def rhs(s, y):
            return f(torch.from_numpy(y).reshape(shape).float(), s).reshape(-1).double().numpy()

        sol = solve_ivp(rhs, (1.0, grid[-1]), x.reshape(-1).double().numpy(), method="RK45", rtol=rtol,
                        atol=atol, t_eval=grid)
        states = [torch.from_numpy(np.ascontiguousarray(sol.y[:, i])).float().reshape(shape)
                  for i in range(sol.y.shape[1])]
        x = states[-1]
        traj = states
    else:
        raise DDPMLabError(f"unknown ODE solver {method!r}; choose one of {', '.join(ODE_SOLVERS)}")
    x = _denoise(model, x, kept[0])
    traj.append(x)
    return torch.stack(traj[::-1]) if keep_trajectory else x

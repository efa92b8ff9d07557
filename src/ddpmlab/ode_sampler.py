"""Sampling by the probability-flow ODE (Song et al. 2021, eq. 13 for the VP SDE):

    dx/ds = -1/2 beta(s) (x + grad_x log q_s(x)),   s from 1 down to 1/T,

on the continuous schedule of ``ddpmlab.evaluation.ode`` (log alpha-bar interpolated through the
grid, so s = t / T has exactly q(x_t)). ``heun``: Heun's second-order method on the kept steps
(2 network evaluations a step); ``rk45``: scipy's adaptive solver. The last step from s = 1/T to 0
is the denoising x_0 = (x_1 - sqrt(1 - abar_1) eps) / sqrt(abar_1), where the ODE's score is singular.
"""
from __future__ import annotations


import numpy as np
import torch
from scipy.integrate import solve_ivp

from ddpmlab.evaluation.ode import ContinuousSchedule, score_function
from ddpmlab.gaussian_diffusion import model_predict_x0_eps


def _drift(score, cont: ContinuousSchedule):
    def f(x, s):
        return -0.5 * cont.beta(s) * (x + score(x, s))

    return f


def _denoise(model, x):
    """x_0 from x_1: the model's own x_0 prediction at step 1."""
    x0, _ = model_predict_x0_eps(model, x, torch.ones(x.shape[0], dtype=torch.long))
    return x0


@torch.no_grad()
def ode_sample(model, n: int, steps: int | None = None, generator: torch.Generator | None = None,
               keep_trajectory: bool = False, method: str | None = None, rtol: float = 1e-5, atol: float = 1e-5):
    """Samples (n, *dims), or the trajectory (K + 1, n, *dims) from x_0 (index 0) to x_T.

    ``method`` defaults to ``heun`` on ``steps`` kept steps, or ``rk45`` when all T steps are asked for.
    """
    sched = model.schedule
    T = sched.T
    steps = steps or T
    method = method or ("rk45" if steps == T else "heun")
    cont = ContinuousSchedule(sched)
    f = _drift(score_function(model, cont), cont)
    shape = (n,) + tuple(model.data_shape)
    x = torch.randn(shape, generator=generator)
    grid = [k / T for k in reversed(sched.spaced_steps(steps))]  # 1 = s_K > ... > s_1
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
        raise ValueError(f"unknown ODE method {method!r}")
    x = _denoise(model, x)
    traj.append(x)
    return torch.stack(traj[::-1]) if keep_trajectory else x



"""Sampling by the probability-flow ODE (Song et al. 2021, eq. 13 for the VP SDE):

    dx/ds = -1/2 beta(s) (x + grad_x log q_s(x)),   s from 1 down to 1/T.

Solvers over the steps of a grid (``ddpmlab.sampling.grids``), each ``f(model, x, grid, cond=None,
callback=None, **options)``:
- ``dpm_solver`` (default, DDPM only): DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), the
  exponential integrator of the ODE in the half log-SNR lambda = log(sqrt(abar) / sqrt(1 - abar)), with
  the model's x_0 prediction extrapolated linearly in lambda from the last two steps: second order,
  one network evaluation a step. Its first-order special case is DDIM (eta = 0).
- ``euler``, ``midpoint``, ``heun``, ``rk45``: the velocity-ODE solvers of ``velocity_solvers`` in
  s = t / T on the continuous schedule (log alpha-bar interpolated through the grid), for every family:
  the drift above is the VP path's velocity (a DDPM model's ``velocity_field``), and a flow model's
  velocity is its own prediction on the linear path, solved from t = 1 to 0.
A DDPM's last step, from the smallest kept step to 0, is the denoising x_0 = the model's x_0 prediction,
where the ODE's score is singular.
"""
from __future__ import annotations

import inspect
import math

import torch

from ddpmlab.core.process import ProcessModel
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.family import family_of
from ddpmlab.sampling import velocity_solvers  # noqa: F401  (registers euler, midpoint, heun, rk45)
from ddpmlab.sampling.registry import ODE_SOLVERS, SAMPLERS
from ddpmlab.sampling.samplers import check_finite, denoise


@ODE_SOLVERS.register("dpm_solver")
def dpm_solver_2m(model, x: torch.Tensor, grid: torch.Tensor, cond=None, callback=None) -> torch.Tensor:
    """DPM-Solver++(2M) from x at step ``grid[0]`` down the grid's steps, then x_0 at its last step 0.

    With alpha = sqrt(abar), sigma = sqrt(1 - abar), h_i = lambda_i - lambda_{i-1} and D_i the x_0
    prediction extrapolated in lambda (first order on the first step),
    x_i = (sigma_i / sigma_{i-1}) x_{i-1} - alpha_i (exp(-h_i) - 1) D_i,
    D_i = (1 + 1 / (2 r_i)) x0_{i-1} - 1 / (2 r_i) x0_{i-2},  r_i = h_{i-1} / h_i.
    """
    abar = model.schedule.alphas_cumprod
    steps = grid.tolist()
    lam = {t: 0.5 * math.log(abar[t].item() / (1.0 - abar[t].item())) for t in steps[:-1]}
    prev_x0, prev_h = None, None
    for i, (t, s) in enumerate(zip(steps[:-1], steps[1:])):
        x0 = denoise(model, x, t, cond)
        if s == 0:
            x = x0
        else:
            h = lam[s] - lam[t]
            d = x0 if prev_x0 is None else x0 + (x0 - prev_x0) * (h / (2.0 * prev_h))  # 1 + 1/(2r), r = prev_h / h
            sigma_ratio = math.sqrt((1.0 - abar[s].item()) / (1.0 - abar[t].item()))
            x = sigma_ratio * x - math.sqrt(abar[s].item()) * math.expm1(-h) * d
            prev_x0, prev_h = x0, h
        check_finite(x, "ode (dpm_solver)", t)
        if callback is not None:
            callback(i, s, x)
    return x



@SAMPLERS.register("ode")
@torch.no_grad()
def ode_sample(model, x: torch.Tensor, grid: torch.Tensor, generator: torch.Generator | None = None, cond=None,
               callback=None, solver: str | None = None, **options) -> torch.Tensor:
    """The probability-flow ODE from x = x_T down the grid by the registered ``solver`` (default:
    the family's ``default_solver``: ``dpm_solver`` for a DDPM, ``heun`` for a flow; ``options`` such as
    rtol go to it); deterministic. A solver that does not serve the model's family is refused in one line
    naming those that do."""
    family = family_of(model)
    solver = solver or family.default_solver
    fn = ODE_SOLVERS.get(solver)
    family.check(fn, "ODE solver", solver, ODE_SOLVERS)
    unknown = sorted(set(options) - set(inspect.signature(fn).parameters))
    if unknown:
        raise DDPMLabError(f"ODE solver {solver!r} takes no option {', '.join(unknown)}")
    return fn(model, x, grid, cond=cond, callback=callback, **options)


ode_sample.contract = ProcessModel  # every family's model has a velocity field

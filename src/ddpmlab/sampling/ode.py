"""Sampling by the probability-flow ODE (Song et al. 2021, eq. 13 for the VP SDE):

    dx/ds = -1/2 beta(s) (x + grad_x log q_s(x)),   s from 1 down to 1/T.

Solvers over the K kept steps of the schedule:
- ``dpm_solver`` (default, DDPM only): DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", Algorithm 2), the
  exponential integrator of the ODE in the half log-SNR lambda = log(sqrt(abar) / sqrt(1 - abar)), with
  the model's x_0 prediction extrapolated linearly in lambda from the last two steps: second order,
  one network evaluation a step. Its first-order special case is DDIM (eta = 0).
- ``euler``, ``midpoint``, ``heun``, ``rk45``: the velocity-ODE solvers of ``velocity_solvers`` in
  s = t / T on the continuous schedule (log alpha-bar interpolated through the grid), for both process
  families: the drift above is the VP path's velocity (``ddpmlab.core.paths``), and a flow model's
  velocity is its own prediction on the linear path, solved from t = 1 to 0.
The last step, from the smallest kept step to 0, is the denoising x_0 = the model's x_0 prediction,
where the ODE's score is singular.
"""
from __future__ import annotations

import inspect
import math

import torch

from ddpmlab.core.contract import step_tensor
from ddpmlab.core.paths import family_of
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.sampling import velocity_solvers  # noqa: F401  (registers euler, midpoint, heun, rk45)
from ddpmlab.sampling.registry import ODE_SOLVERS, SAMPLERS
from ddpmlab.sampling.samplers import check_finite


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


dpm_solver.families = ("ddpm",)


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


@SAMPLERS.register("ode")
@torch.no_grad()
def ode_sample(model, x: torch.Tensor, steps: int = 0, generator: torch.Generator | None = None, cond=None,
               keep_trajectory: bool = False, solver: str | None = None, **options):
    """The probability-flow ODE from x = x_T by the registered ``solver`` (default: ``dpm_solver`` for a
    DDPM, ``heun`` for a flow; ``options`` such as rtol or shift go to it) on ``steps`` steps; deterministic.
    A solver that does not serve the model's family is refused in one line naming those that do."""
    family = family_of(model)
    solver = solver or DEFAULT_SOLVER[family]
    fn = ODE_SOLVERS.get(solver)
    if family not in getattr(fn, "families", ("ddpm",)):
        fits = [n for n in ODE_SOLVERS if family in getattr(ODE_SOLVERS.get(n), "families", ("ddpm",))]
        raise DDPMLabError(f"ODE solver {solver!r} does not solve a {family} model's ODE; use one of {', '.join(fits)}")
    if family == "ddpm" and options.pop("shift", 1.0) != 1.0:
        raise DDPMLabError("the time shift is a flow option; a DDPM's ODE runs on its schedule's evenly kept "
                           "steps (leave the shift at 1)")
    unknown = sorted(set(options) - set(inspect.signature(fn).parameters))
    if unknown:
        raise DDPMLabError(f"ODE solver {solver!r} takes no option {', '.join(unknown)}")
    return fn(model, x, steps, cond=cond, keep_trajectory=keep_trajectory, **options)


ode_sample.families = ("ddpm", "flow")
DEFAULT_SOLVER = {"ddpm": "dpm_solver", "flow": "heun"}

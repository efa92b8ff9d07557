"""Samplers: plain functions, each labelled with its algorithm.

A model here is anything with ``schedule``, ``data_shape`` and ``p_mean_variance(x_t, t)`` returning
the mean and variance of p(x_{t-1} | x_t) (trained models and the exact oracle alike).
"""
from __future__ import annotations

import torch

from ddpmlab.core.parameterisation import model_predict_x0_eps
from ddpmlab.core.utils import DDPMLabError


@torch.no_grad()
def ancestral_sample(model, n: int, generator: torch.Generator | None = None, keep_trajectory: bool = False,
                     x_T: torch.Tensor | None = None):
    """Ancestral sampling (Ho et al. 2020, Algorithm 2): x_T ~ N(0, I), then x_{t-1} ~ p(x_{t-1} | x_t).

    Noise is added at every step, t = 1 included, so the samples follow the model's own p(x_0 | x_1)
    (a model whose variance is 0 at t = 1 returns its mean there). Returns (n, *dims), or the whole
    trajectory (T + 1, n, *dims) indexed by paper step (``traj[0]`` = x_0, ``traj[T]`` = x_T).
    """
    T = model.schedule.T
    shape = (n,) + tuple(model.data_shape)
    x = torch.randn(shape, generator=generator) if x_T is None else x_T.clone()
    traj = None
    if keep_trajectory:
        traj = x.new_empty((T + 1,) + shape)  # (T + 1, n, *dims)
        traj[T] = x
    for t in range(T, 0, -1):
        mean, variance = model.p_mean_variance(x, torch.full((n,), t, dtype=torch.long))
        x = mean + variance.sqrt() * torch.randn(shape, generator=generator)
        if traj is not None:
            traj[t - 1] = x
    return traj if keep_trajectory else x


def ddim_step(model, x_t: torch.Tensor, t: int, s: int, eta: float = 0.0):
    """Mean and variance of the DDIM step from t to s < t (Song et al. 2021, eq. 12 and 16):

    x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z,
    sigma^2 = eta^2 (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s).
    With eta = 1 and s = t - 1, sigma^2 is the ancestral step's beta-tilde_t.
    """
    sched = model.schedule
    n = x_t.shape[0]
    x0, eps = model_predict_x0_eps(model, x_t, torch.full((n,), t, dtype=torch.long))
    ab_t, ab_s = sched.alphas_cumprod[t], sched.alphas_cumprod[s]
    var = eta ** 2 * (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)
    mean = ab_s.sqrt().item() * x0 + (1 - ab_s - var).clamp_min(0).sqrt().item() * eps
    return mean, torch.full_like(x_t, float(var))


@torch.no_grad()
def ddim_sample(model, n: int, steps: int | None = None, eta: float = 0.0,
                generator: torch.Generator | None = None, keep_trajectory: bool = False,
                x_T: torch.Tensor | None = None):
    """DDIM sampling on ``steps`` evenly kept steps (all T by default); eta = 0 is deterministic.

    Works for any reverse model: x_0 and eps come from ``predict_x0_eps`` or are implied by the mean.
    Returns (n, *dims) or the trajectory (K + 1, n, *dims) from x_0 (index 0) to x_T.
    """
    sched = model.schedule
    kept = sched.spaced_steps(steps or sched.T)
    shape = (n,) + tuple(model.data_shape)
    x = torch.randn(shape, generator=generator) if x_T is None else x_T.clone()
    traj = [x] if keep_trajectory else None
    for t, s in zip(reversed(kept), reversed([0] + kept[:-1])):
        mean, var = ddim_step(model, x, t, s, eta)
        x = mean + var.sqrt() * torch.randn(shape, generator=generator) if eta > 0 else mean
        if traj is not None:
            traj.append(x)
    return torch.stack(traj[::-1]) if keep_trajectory else x


SAMPLERS = ("ancestral", "ddim", "ode")


def draw_samples(model, n: int, sampler: str = "ancestral", steps: int = 0, eta: float = 0.0,
                 generator: torch.Generator | None = None, keep_trajectory: bool = False,
                 ode_solver: str = "dpm_solver"):
    """Dispatch by name. ``steps = 0`` means all T; ancestral sampling on fewer steps respaces the model
    (a new schedule from the kept alpha-bars), DDIM and the ODE (``ode_solver``) integrate over the kept
    steps."""
    T = model.schedule.T
    steps = steps or T
    if sampler == "ancestral":
        if steps != T:
            if not hasattr(model, "respaced"):
                raise DDPMLabError(f"{type(model).__name__} cannot be respaced; use --sampler ddim or ode")
            model = model.respaced(steps)
        return ancestral_sample(model, n, generator=generator, keep_trajectory=keep_trajectory)
    if sampler == "ddim":
        return ddim_sample(model, n, steps=steps, eta=eta, generator=generator, keep_trajectory=keep_trajectory)
    if sampler == "ode":
        from ddpmlab.sampling.ode import ode_sample

        return ode_sample(model, n, steps=steps, generator=generator, keep_trajectory=keep_trajectory,
                          method=ode_solver)
    raise DDPMLabError(f"unknown sampler {sampler!r}; choose one of {', '.join(SAMPLERS)}")

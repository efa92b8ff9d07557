"""Ancestral and DDIM sampling: plain functions, each labelled with its algorithm, registered by name.

Every sampler takes any model of the contract (``ddpmlab.core.contract.ReverseModel``: trained models and
the exact oracle alike), creates its tensors on the model's device and dtype, and stops with a one-line
``NonFiniteError`` naming the step where the state stops being finite.
"""
from __future__ import annotations

import torch

from ddpmlab.core.contract import step_tensor
from ddpmlab.core.utils import NonFiniteError
from ddpmlab.sampling.registry import SAMPLERS


def check_finite(x: torch.Tensor, sampler: str, t: int) -> None:
    """Stop with one line when the state holds NaN or infinity (a diverged or broken model)."""
    if not bool(torch.isfinite(x).all()):
        raise NonFiniteError(f"{sampler} sampler: non-finite values (NaN or inf) at step t = {t}; "
                             "the model or its schedule is broken there")


def noise_like(x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """Standard normal noise shaped like x, drawn on the CPU generator (the same stream on any device)
    and moved to x's device and dtype."""
    return torch.randn(x.shape, generator=generator).to(x.device, x.dtype)


@SAMPLERS.register("ancestral")
@torch.no_grad()
def ancestral_sample(model, x: torch.Tensor, steps: int = 0, generator: torch.Generator | None = None,
                     cond=None, keep_trajectory: bool = False) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2): x_{t-1} ~ p(x_{t-1} | x_t) from x = x_T.

    Fewer ``steps`` than T respace the model (a new schedule from the kept alpha-bars). Noise is added at
    every step, t = 1 included, so the samples follow the model's own p(x_0 | x_1) (a model whose
    variance is 0 at t = 1 returns its mean there). Returns (n, *dims), or the whole trajectory
    (K + 1, n, *dims) indexed by (respaced) step: ``traj[0]`` = x_0, ``traj[K]`` = x_T.
    """
    model = model.respaced(steps or model.schedule.T)
    T, n = model.schedule.T, x.shape[0]
    traj = None
    if keep_trajectory:
        traj = x.new_empty((T + 1,) + tuple(x.shape))  # (T + 1, n, *dims)
        traj[T] = x
    for t in range(T, 0, -1):
        p = model.p_mean_variance(x, step_tensor(model, n, t), cond)
        x = p.mean + p.variance.sqrt() * noise_like(x, generator)
        check_finite(x, "ancestral", t)
        if traj is not None:
            traj[t - 1] = x
    return traj if keep_trajectory else x


def ddim_step(model, x_t: torch.Tensor, t: int, s: int, eta: float = 0.0, cond=None):
    """Mean and variance of the DDIM step from t to s < t (Song et al. 2021, eq. 12 and 16):

    x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z,
    sigma^2 = eta^2 (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s).
    With eta = 1 and s = t - 1, sigma^2 is the ancestral step's beta-tilde_t.
    """
    sched = model.schedule
    p = model.p_mean_variance(x_t, step_tensor(model, x_t.shape[0], t), cond)
    ab_t, ab_s = sched.alphas_cumprod[t], sched.alphas_cumprod[s]
    var = eta ** 2 * (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)
    mean = ab_s.sqrt().item() * p.pred_x0 + (1 - ab_s - var).clamp_min(0).sqrt().item() * p.pred_eps
    return mean, torch.full_like(x_t, float(var))


@SAMPLERS.register("ddim")
@torch.no_grad()
def ddim_sample(model, x: torch.Tensor, steps: int = 0, generator: torch.Generator | None = None,
                cond=None, keep_trajectory: bool = False, eta: float = 0.0) -> torch.Tensor:
    """DDIM sampling on ``steps`` evenly kept steps (all T by default); eta = 0 is deterministic.

    x_0 and eps come from the contract's ``pred_x0`` and ``pred_eps``. Returns (n, *dims) or the
    trajectory (K + 1, n, *dims) from x_0 (index 0) to x_T.
    """
    sched = model.schedule
    kept = sched.spaced_steps(steps or sched.T)
    traj = [x] if keep_trajectory else None
    for t, s in zip(reversed(kept), reversed([0] + kept[:-1])):
        mean, var = ddim_step(model, x, t, s, eta, cond)
        x = mean + var.sqrt() * noise_like(x, generator) if eta > 0 else mean
        check_finite(x, "ddim", t)
        if traj is not None:
            traj.append(x)
    return torch.stack(traj[::-1]) if keep_trajectory else x

"""Ancestral and DDIM sampling: plain functions, each labelled with its algorithm, registered by name.

Every sampler takes any model of the contract (``ddpmlab.core.contract.ReverseModel``: trained models and
the exact oracle alike) and a grid of steps T, ..., 0 made outside it (``ddpmlab.sampling.grids``),
creates its tensors on the model's device and dtype, calls ``callback(i, t, x)`` after step i with the
state x reached at grid time t, and stops with a one-line ``NonFiniteError`` naming the step where the
state stops being finite.
"""
from __future__ import annotations

import torch

from ddpmlab.core.contract import step_tensor
from ddpmlab.core.utils import NonFiniteError
from ddpmlab.sampling.options import ETA_RANGE, check_in_range
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


def denoise(model, x: torch.Tensor, t: int, cond=None) -> torch.Tensor:
    """x_0 from x_t: the model's own x_0 prediction at step t (the deterministic samplers' last step)."""
    return model.p_mean_variance(x, step_tensor(model, x.shape[0], t), cond).pred_x0


def respaced_on(model, steps: list[int]):
    """The model on the kept steps of the grid ``steps`` (T, ..., 0): by their number when they are the
    evenly kept ones (every model offers that), else by the steps themselves (``NoiseSchedule.spaced``)."""
    kept = sorted(steps[:-1])
    even = len(kept) <= model.schedule.T and kept == model.schedule.spaced_steps(len(kept))
    return model.respaced(len(kept) if even else kept)


@SAMPLERS.register("ancestral")
@torch.no_grad()
def ancestral_sample(model, x: torch.Tensor, grid: torch.Tensor, generator: torch.Generator | None = None,
                     cond=None, callback=None) -> torch.Tensor:
    """Ancestral sampling (Ho et al. 2020, Algorithm 2): x_{t-1} ~ p(x_{t-1} | x_t) from x = x_T.

    A grid of fewer steps than T respaces the model (a new schedule from the kept alpha-bars, improved-
    diffusion's ``respace``). Noise is added at every step, the last included, so the samples follow the
    model's own p(x_0 | x_k) (a model whose variance is 0 there returns its mean). Returns (n, *dims).
    """
    steps = grid.tolist()
    model = respaced_on(model, steps)
    T, n = model.schedule.T, x.shape[0]
    for i, t in enumerate(range(T, 0, -1)):
        p = model.p_mean_variance(x, step_tensor(model, n, t), cond)
        x = p.mean + p.variance.sqrt() * noise_like(x, generator)
        check_finite(x, "ancestral", steps[i])  # the grid's step: t counts the respaced model's steps
        if callback is not None:
            callback(i, steps[i + 1], x)
    return x


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
def ddim_sample(model, x: torch.Tensor, grid: torch.Tensor, generator: torch.Generator | None = None,
                cond=None, callback=None, eta: float = 0.0) -> torch.Tensor:
    """DDIM sampling from step t to the next step s of the grid; eta = 0 is deterministic.

    x_0 and eps come from the contract's ``pred_x0`` and ``pred_eps``; eta lies in ``options.ETA_RANGE``.
    Returns (n, *dims).
    """
    eta = check_in_range("DDIM's eta", eta, *ETA_RANGE)
    steps = grid.tolist()
    for i, (t, s) in enumerate(zip(steps[:-1], steps[1:])):
        mean, var = ddim_step(model, x, t, s, eta, cond)
        x = mean + var.sqrt() * noise_like(x, generator) if eta > 0 else mean
        check_finite(x, "ddim", t)
        if callback is not None:
            callback(i, s, x)
    return x

"""The forward (noising) process q and its posterior (Ho et al. 2020, eq. 2, 4, 6, 7).

Data have shape ``(B, *dims)``; t is an integer tensor of paper steps (see ``ddpmlab.core.schedule``).
"""
from __future__ import annotations

import torch

from ddpmlab.core.schedule import NoiseSchedule
from ddpmlab.core.utils import extract


def q_step_sample(schedule: NoiseSchedule, x_prev: torch.Tensor, t: torch.Tensor,
                  noise: torch.Tensor | None = None) -> torch.Tensor:
    """Sample x_t ~ q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I)   (eq. 2)."""
    noise = torch.randn_like(x_prev) if noise is None else noise
    return extract(schedule.alphas.sqrt(), t, x_prev) * x_prev + extract(schedule.betas.sqrt(), t, x_prev) * noise


def q_mean_variance(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor):
    """Mean and variance of q(x_t | x_0) = N(sqrt(abar_t) x_0, (1 - abar_t) I)   (eq. 4)."""
    mean = extract(schedule.sqrt_alphas_cumprod, t, x0) * x0
    variance = extract(1.0 - schedule.alphas_cumprod, t, x0).expand_as(x0)
    return mean, variance


def q_sample(schedule: NoiseSchedule, x0: torch.Tensor, t: torch.Tensor,
             noise: torch.Tensor | None = None, coef=None) -> torch.Tensor:
    """Sample x_t ~ q(x_t | x_0) in one step   (eq. 4, reparameterised as in eq. 14's argument).
    ``coef``: (sqrt(abar_t), sqrt(1 - abar_t)) already gathered for t, broadcastable against x0
    (``DiffusionModel.training_coefficients``); gathered from the schedule when None."""
    noise = torch.randn_like(x0) if noise is None else noise
    if coef is None:
        coef = (extract(schedule.sqrt_alphas_cumprod, t, x0), extract(schedule.sqrt_one_minus_alphas_cumprod, t, x0))
    return coef[0] * x0 + coef[1] * noise


def q_posterior_mean_variance(schedule: NoiseSchedule, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
    """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)   (eq. 6-7).

    mean = coef1_t x_0 + coef2_t x_t, variance = beta-tilde_t = (1 - abar_{t-1}) / (1 - abar_t) beta_t.
    """
    mean = extract(schedule.posterior_mean_coef1, t, x_t) * x0 + extract(schedule.posterior_mean_coef2, t, x_t) * x_t
    variance = extract(schedule.posterior_variance, t, x_t).expand_as(x_t)
    log_variance = extract(schedule.posterior_log_variance_clipped, t, x_t).expand_as(x_t)
    return mean, variance, log_variance


def forward_trajectory(schedule: NoiseSchedule, x0: torch.Tensor, generator: torch.Generator | None = None,
                       noise: torch.Tensor | None = None) -> torch.Tensor:
    """The whole forward chain x_0, x_1, ..., x_T by repeated steps of eq. 2; shape (T + 1, B, *dims).

    ``noise`` (T, B, *dims), if given, holds epsilon_1..epsilon_T. This is the plain loop; the seed's
    training uses ``forward_trajectory_fast``, which unrolls the same recurrence without a Python loop.
    """
    T = schedule.T
    if noise is None:
        noise = torch.randn((T,) + tuple(x0.shape), generator=generator, dtype=x0.dtype)
    traj = x0.new_empty((T + 1,) + tuple(x0.shape))  # (T + 1, B, *dims)
    traj[0] = x0
    for t in range(1, T + 1):
        traj[t] = q_step_sample(schedule, traj[t - 1], torch.tensor(t), noise[t - 1])
    return traj


def trajectory_scales(schedule: NoiseSchedule, dtype=torch.float32, device=None):
    """(sqrt(beta_t / abar_t), sqrt(abar_t)) for t = 1..T: the two factors of ``forward_trajectory_fast``."""
    scale_in = (schedule.betas[1:] / schedule.alphas_cumprod[1:]).sqrt().to(device, dtype)
    return scale_in, schedule.sqrt_alphas_cumprod[1:].to(device, dtype)


def forward_trajectory_fast(schedule: NoiseSchedule, x0: torch.Tensor, noise: torch.Tensor,
                            out: torch.Tensor | None = None, scales=None) -> torch.Tensor:
    """The chain of eq. 2 without a loop over t, for the same noise epsilon_1..epsilon_T.

    Unrolling x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) eps_t gives
    x_t = sqrt(abar_t) (x_0 + sum_{s <= t} sqrt(beta_s / abar_s) eps_s): one scaled cumulative sum.
    ``noise`` has shape (T, B, *dims); ``out`` (T + 1, B, *dims) may be a reused buffer and ``scales``
    the precomputed ``trajectory_scales``.
    """
    T = schedule.T
    shape = (T,) + (1,) * x0.dim()
    scale_in, scale_out = scales if scales is not None else trajectory_scales(schedule, x0.dtype, x0.device)
    if out is None:
        out = x0.new_empty((T + 1,) + tuple(x0.shape))
    out[0] = x0
    body = out[1:]
    torch.mul(noise, scale_in.reshape(shape), out=body)
    torch.cumsum(body, 0, out=body)
    body.add_(x0).mul_(scale_out.reshape(shape))
    return out


def q_sample_steps(schedule: NoiseSchedule, x0: torch.Tensor, first: int, max_rows: int,
                   generator: torch.Generator | None = None):
    """For steps first..T in chunks of whole steps (at most ``max_rows`` (step, example) rows each), yield
    (ts (c,), t (c B,), x0 repeated (c B, *dims), x_t ~ q(x_t | x_0) (eq. 4)); example fastest, one fresh
    x_t per step and example drawn from ``generator`` in float64: what the per-step evaluations share."""
    B = x0.shape[0]
    chunk = max(1, max_rows // B)
    for start in range(first, schedule.T + 1, chunk):
        ts = torch.arange(start, min(start + chunk, schedule.T + 1))  # (c,)
        t = ts.repeat_interleave(B)  # (c B,)
        x0_rep = x0.repeat((len(ts),) + (1,) * (x0.dim() - 1))  # (c B, *dims), example fastest
        yield ts, t, x0_rep, q_sample(schedule, x0_rep, t, torch.randn(x0_rep.shape, generator=generator,
                                                                         dtype=torch.float64))

"""Noise schedules, precomputed once in float64 (Ho et al. 2020, sec. 2; Nichol & Dhariwal 2021).

Time-index convention: paper steps t = 0..T. Every array has length T + 1 and index t holds the
paper's quantity at step t; index 0 is the data, so ``betas[0] = 0`` and ``alphas_cumprod[0] = 1``.
Forward steps are t = 1..T; reverse steps run t = T..1. A network sees ``model_time(t) = t / T``.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ddpmlab.core.registry import Registry
from ddpmlab.core.utils import DDPMLabError

SCHEDULES = Registry("schedule")  # name -> f(num_steps, **options) -> betas for t = 1..T (float64)


@SCHEDULES.register("constant")
def constant_betas(num_steps: int, beta: float = 0.02, **_) -> torch.Tensor:
    """beta_t = beta (the seed's schedule)."""
    if not 0.0 < beta < 1.0:
        raise DDPMLabError(f"beta must lie in (0, 1), got {beta}")
    return torch.full((num_steps,), float(beta), dtype=torch.float64)


@SCHEDULES.register("linear")
def linear_betas(num_steps: int, beta_start: float = 1e-4, beta_end: float = 0.02, **_) -> torch.Tensor:
    """beta_start..beta_end evenly (Ho et al. 2020, sec. 4), taken as given at any T.

    The defaults are Ho et al.'s numbers for T = 1000 (alpha-bar_T = 4.0e-5). They are not rescaled
    for another T: at T = 100 they leave alpha-bar_T = 0.36, so x_T keeps 60% of the data's scale and
    sampling from N(0, I) starts far from q(x_T). To keep Ho's alpha-bar_T at another T, pass both ends
    multiplied by 1000 / T, as the packaged configs do in their TOML: 4e-4..0.08 at T = 250
    (alpha-bar_T = 3.3e-5), 1e-3..0.2 at T = 100 (alpha-bar_T = 2.0e-5).
    """
    if not (0.0 < beta_start < 1.0 and 0.0 < beta_end < 1.0):
        raise DDPMLabError(f"beta_start and beta_end must lie in (0, 1), got {beta_start}, {beta_end}")
    return torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64)


@SCHEDULES.register("cosine")
def cosine_betas(num_steps: int, cosine_s: float = 0.008, max_beta: float = 0.999, **_) -> torch.Tensor:
    """alpha_bar(t) = cos^2(((t/T + s) / (1 + s)) pi / 2), betas clipped at ``max_beta``
    (Nichol & Dhariwal 2021, eq. 17)."""
    steps = torch.arange(num_steps + 1, dtype=torch.float64) / num_steps
    f = torch.cos((steps + cosine_s) / (1 + cosine_s) * math.pi / 2) ** 2
    abar = f / f[0]
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def make_betas(kind: str, num_steps: int, **options) -> torch.Tensor:
    """Betas for t = 1..T (float64, length T) of the registered schedule ``kind``; the keyword arguments
    (beta, beta_start, beta_end, cosine_s, max_beta) go to the schedules that take them."""
    if num_steps < 1:
        raise DDPMLabError(f"number of diffusion steps must be >= 1, got {num_steps}")
    return SCHEDULES.get(kind)(num_steps, **options)


class NoiseSchedule:
    """Every per-step constant of the forward process and its posterior, in float64.

    Attributes are tensors of length T + 1 indexed by paper step t (see the module docstring):
    ``betas``, ``alphas``, ``alphas_cumprod`` (alpha-bar_t), ``alphas_cumprod_prev`` (alpha-bar_{t-1}),
    ``sqrt_alphas_cumprod``, ``sqrt_one_minus_alphas_cumprod``, ``sqrt_recip_alphas_cumprod``,
    ``sqrt_recipm1_alphas_cumprod``, and the posterior
    q(x_{t-1} | x_t, x_0) = N(coef1_t x_0 + coef2_t x_t, beta-tilde_t) (Ho et al. eq. 6-7):
    ``posterior_variance``, ``posterior_log_variance_clipped``, ``posterior_mean_coef1``,
    ``posterior_mean_coef2``. At t = 1 the posterior is a point mass at x_0 (beta-tilde_1 = 0);
    its clipped log-variance uses beta-tilde_2, as improved-diffusion does.

    ``timesteps[t]`` is the step of the original schedule that step t stands for (the identity unless
    the schedule was respaced) and ``num_train_steps`` that schedule's T, so a network always sees the
    time it was trained with.
    """

    def __init__(self, betas: torch.Tensor, timesteps: torch.Tensor | None = None,
                 num_train_steps: int | None = None):
        betas = torch.as_tensor(betas, dtype=torch.float64).flatten()
        if betas.numel() < 1:
            raise DDPMLabError("a schedule needs at least one step")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise DDPMLabError("every beta must lie in (0, 1)")
        self.num_steps = T = betas.numel()
        self.timesteps = (torch.arange(T + 1) if timesteps is None else torch.as_tensor(timesteps)).long()
        self.num_train_steps = int(num_train_steps if num_train_steps is not None else T)
        self.spec = None  # how make_schedule made it ({"kind", "steps", options}); None otherwise

        zero = torch.zeros(1, dtype=torch.float64)
        self.betas = torch.cat([zero, betas])
        self.alphas = 1.0 - self.betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        abar, abar_prev = self.alphas_cumprod, self.alphas_cumprod_prev
        self.sqrt_alphas_cumprod = abar.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - abar).sqrt()
        self.sqrt_recip_alphas_cumprod = abar.rsqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / abar - 1.0).sqrt()

        one_minus = 1.0 - abar
        safe = torch.where(one_minus > 0, one_minus, torch.ones_like(one_minus))
        self.posterior_variance = torch.where(one_minus > 0, self.betas * (1.0 - abar_prev) / safe, zero)
        self.posterior_mean_coef1 = torch.where(one_minus > 0, self.betas * abar_prev.sqrt() / safe, zero + 1)
        self.posterior_mean_coef2 = torch.where(one_minus > 0, (1.0 - abar_prev) * self.alphas.sqrt() / safe, zero)
        clip = self.posterior_variance[2] if T >= 2 else self.betas[1]
        self.posterior_log_variance_clipped = torch.log(torch.cat([
            torch.stack([clip, clip]), self.posterior_variance[2:]]))

    @property
    def T(self) -> int:
        return self.num_steps

    def model_time(self, t: torch.Tensor) -> torch.Tensor:
        """Network time input for paper step t: original step / original T, in (0, 1] (float32, on t's
        device). A floating t is a continuous step of this schedule (the probability-flow ODE)."""
        t = torch.as_tensor(t)
        if t.dtype.is_floating_point:
            tau = t.double() / self.num_steps * (self.timesteps[-1].item() / self.num_train_steps)
        else:
            tau = self.timesteps[t.cpu()].double().to(t.device) / self.num_train_steps
        return tau.float()

    def respace(self, keep: Sequence[int]) -> "NoiseSchedule":
        """A schedule on the kept steps ``keep`` (increasing, each in 1..T, T included).

        New betas come from the kept alpha-bars, beta'_i = 1 - abar_{k_i} / abar_{k_{i-1}}
        (improved-diffusion ``respace.py``), so every kept step has exactly the original marginal
        q(x_{k_i} | x_0) and every other function is reused unchanged.
        """
        keep = sorted(set(int(k) for k in keep))
        if not keep or keep[0] < 1 or keep[-1] != self.T:
            raise DDPMLabError(f"respaced steps must lie in 1..{self.T} and include {self.T}")
        abar = self.alphas_cumprod[torch.tensor([0] + keep)]
        betas = 1.0 - abar[1:] / abar[:-1]
        return NoiseSchedule(betas, timesteps=self.timesteps[torch.tensor([0] + keep)],
                             num_train_steps=self.num_train_steps)

    def spaced_steps(self, num_steps: int) -> list[int]:
        """``num_steps`` evenly spread steps of 1..T, increasing, T always kept."""
        if not 1 <= num_steps <= self.T:
            raise DDPMLabError(f"steps must lie in 1..{self.T}, got {num_steps}")
        return torch.linspace(self.T, 0, num_steps + 1)[:-1].round().long().flip(0).tolist()

    def spaced(self, num_steps) -> "NoiseSchedule":
        """Respace to ``num_steps`` evenly spread steps (always keeping step T), or to the kept steps
        themselves when ``num_steps`` is a list of them (a grid of ``ddpmlab.sampling.grids``)."""
        if isinstance(num_steps, (list, tuple)):
            keep = sorted(num_steps)
            return self if keep == list(range(1, self.T + 1)) else self.respace(keep)
        if num_steps == self.T:
            return self
        return self.respace(self.spaced_steps(num_steps))


def make_schedule(kind: str, num_steps: int, **options) -> NoiseSchedule:
    """A NoiseSchedule by registered name: ``make_schedule("linear", 250, beta_start=4e-4,
    beta_end=0.08)``, ``make_schedule("constant", 250, beta=0.02)`` (see ``make_betas``). The schedule
    remembers how it was made (``spec``), so a run can record it.

    Options are used as given, never rescaled for ``num_steps``: ``make_schedule("linear", T)`` is Ho et
    al.'s 1e-4..0.02 at every T (alpha-bar_T = 0.36 at T = 100, 4.0e-5 at T = 1000; see
    ``linear_betas``), while the packaged configs store betas already scaled by 1000 / T."""
    schedule = NoiseSchedule(make_betas(kind, num_steps, **options))
    schedule.spec = {"kind": kind, "steps": int(num_steps), **options}
    return schedule

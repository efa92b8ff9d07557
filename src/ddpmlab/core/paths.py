"""Gaussian probability paths x_t = alpha(t) x_0 + sigma(t) eps, t in [0, 1] (t = 0 the data, t = 1 the
prior), and the velocity field of a model of either process family on them.

Conditioned on x_0 the path moves with d x_t / dt = alpha'(t) x_0 + sigma'(t) eps; the marginal
q(x_t) moves with the probability-flow velocity (Lipman et al. 2023, eq. 8 and Theorem 1; Albergo &
Vanden-Eijnden 2023, eq. 2.10)

    v(x, t) = alpha'(t) E[x_0 | x_t = x] + sigma'(t) E[eps | x_t = x],

so one ODE sampler and one likelihood routine serve every path:

- ``LinearPath``: alpha = 1 - t, sigma = t (rectified flow, Liu et al. 2023; conditional OT, Lipman et
  al. eq. 20); v = E[eps - x_0 | x_t], what a flow model predicts. At t = 1 the marginal is N(0, I) exactly.
- ``VPPath``: the DDPM process (Ho et al. eq. 4) in continuous time, alpha = sqrt(abar(t)),
  sigma = sqrt(1 - abar(t)) on ``ContinuousSchedule``; its velocity is the probability-flow ODE's drift
  -1/2 beta(t) (x + grad log q_t(x)) (Song et al. 2021, eq. 13).

``family_of(model)`` reads a model's process family ("ddpm" or "flow"); ``velocity_field(model)`` is
either family's velocity on its path.
"""
from __future__ import annotations

import copy
import math

import torch

from ddpmlab.core.continuous import ContinuousSchedule, score_function
from ddpmlab.core.utils import DDPMLabError

FAMILIES = ("ddpm", "flow")


class LinearPath:
    """alpha(t) = 1 - t, sigma(t) = t. ``t`` is a float or a tensor broadcastable against the data."""

    name = "linear"

    def alpha(self, t):
        return 1.0 - t

    def sigma(self, t):
        return t

    def d_alpha(self, t):
        return -1.0 + 0.0 * t

    def d_sigma(self, t):
        return 1.0 + 0.0 * t

    def velocity(self, x0, eps, t):
        """The conditional velocity alpha' x_0 + sigma' eps = eps - x_0 (the regression target)."""
        return eps - x0


class VPPath:
    """alpha(t) = sqrt(abar(t)), sigma(t) = sqrt(1 - abar(t)) on a ``ContinuousSchedule`` (float t):
    alpha' = -1/2 beta alpha, sigma' = 1/2 beta abar / sigma with beta(t) = -d log abar / dt."""

    name = "vp"

    def __init__(self, cont: ContinuousSchedule):
        self.cont = cont

    def alpha(self, t: float) -> float:
        return math.sqrt(self.cont.alpha_bar(t))

    def sigma(self, t: float) -> float:
        return math.sqrt(1.0 - self.cont.alpha_bar(t))

    def d_alpha(self, t: float) -> float:
        return -0.5 * self.cont.beta(t) * self.alpha(t)

    def d_sigma(self, t: float) -> float:
        return 0.5 * self.cont.beta(t) * self.cont.alpha_bar(t) / self.sigma(t)

    def velocity(self, x0, eps, t: float):
        return self.d_alpha(t) * x0 + self.d_sigma(t) * eps


def family_of(model) -> str:
    """The model's process family: its ``family`` attribute, "ddpm" when it has none."""
    family = getattr(model, "family", "ddpm")
    if family not in FAMILIES:
        raise DDPMLabError(f"model family must be one of {', '.join(FAMILIES)}, got {family!r}")
    return family


def velocity_field(model, cond=None, float64: bool = True):
    """v(x, t) (x (B, *dims), float t in [0, 1], t = 0 the data), differentiable in x, for any model.

    A flow model predicts it (``model.velocity``); a DDPM model's comes from its score on the VP path,
    v = -1/2 beta(t) (x + score(x, t)) (= alpha' E[x_0|x] + sigma' E[eps|x] with E[eps|x] = -sigma score).
    ``float64``: evaluate a float64 copy of the model (the likelihood's and the adaptive solver's need).
    """
    if family_of(model) == "flow":
        net = copy.deepcopy(model).double() if float64 else model

        def flow(x, t):
            dtype = torch.float64 if float64 else x.dtype
            return net.velocity(x.to(dtype), t, cond).to(x.dtype)

        return flow
    cont = ContinuousSchedule(model.schedule)
    score = score_function(model, cont)

    def ddpm(x, t):
        return -0.5 * cont.beta(t) * (x + score(x, t, cond))

    return ddpm


def shifted_grid(steps: int, shift: float = 1.0, t_end: float = 0.0) -> list[float]:
    """``steps`` + 1 times from 1 down to ``t_end``: uniform in u, mapped by t = shift u / (1 + (shift - 1) u)
    (Esser et al. 2024, eq. 23), which spends more steps near the noise for shift > 1."""
    if steps < 1:
        raise DDPMLabError(f"the ODE needs at least 1 step, got {steps}")
    if not shift > 0:
        raise DDPMLabError(f"the time shift must be > 0, got {shift}")
    grid = []
    for i in range(steps + 1):
        u = 1.0 - i / steps
        grid.append(t_end + (1.0 - t_end) * shift * u / (1.0 + (shift - 1.0) * u))
    return grid

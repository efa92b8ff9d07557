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

A model's own ``velocity_field`` (``ddpmlab.core.contract``) is its family's velocity on its path.
"""
from __future__ import annotations

import math

from ddpmlab.core.continuous import ContinuousSchedule
from ddpmlab.core.utils import DDPMLabError

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

"""The discrete schedule in continuous time, for the probability-flow ODE (Song et al. 2021, sec. 4.3).

log alpha-bar(s) for s in [0, 1] interpolates log abar_t at s = t / T, so the marginal at s = t / T is
exactly q(x_t), and beta(s) = -d log abar / ds. Used by the ODE samplers and the ODE likelihood alike.
"""
from __future__ import annotations

import copy

import numpy as np
import torch


class ContinuousSchedule:
    """log alpha-bar(s): the monotone cubic (PCHIP) interpolant through (t / T, log abar_t), so the
    marginal at s = t / T is exactly q(x_t) and beta(s) = -d log abar / ds is continuous (a
    piecewise-constant beta would put T jumps in the ODE's right-hand side, which adaptive solvers
    handle badly). PCHIP keeps log abar decreasing, so beta(s) >= 0, and reproduces a constant schedule's
    linear log abar exactly (beta(s) = -T log(1 - beta) there)."""

    def __init__(self, schedule):
        self.T = schedule.T
        grid = np.arange(self.T + 1) / self.T
        from scipy.interpolate import PchipInterpolator  # imported where used: `import ddpmlab` stays fast

        self._log_alpha_bar = PchipInterpolator(grid, schedule.alphas_cumprod.log().numpy())
        self._beta = self._log_alpha_bar.derivative()

    def alpha_bar(self, s: float) -> float:
        return float(np.exp(self._log_alpha_bar(s)))

    def beta(self, s: float) -> float:
        return float(-self._beta(s))


def score_function(model, cont: ContinuousSchedule):
    """score(x, s, cond=None): grad_x log q_s(x | cond) for x (B, *dims) at continuous time s in [0, 1], from
    the model's contract method ``score`` evaluated on a float64 copy, returned in x's dtype; differentiable
    in x.
    The model's continuous step is t_c = s T, where the continuous schedule's alpha-bar is that of s."""
    net = copy.deepcopy(model).double()

    def score(x, s, cond=None):
        return net.score(x.to(torch.float64), s * cont.T, cont.alpha_bar(s), cond).to(x.dtype)

    return score

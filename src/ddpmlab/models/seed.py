"""The seed's reverse process: two small networks for the mean and standard deviation of each step.

p(x_{t-1} | x_t) = N(mu(x_t, t), sigma(x_t, t)^2 I)   (Ho et al. 2020, eq. 1), where
mu = Linear(D + 1, H) - ReLU - Linear(H, D) and sigma = the same followed by Softplus, each fed x_t
(flattened to D features) with the time t / T appended. The seed used H = 4 and D = 1.

The two networks' weights are stored stacked (index 0 = mean network, 1 = std network) so that the
fused whole-trajectory bound (``ddpmlab.objectives.seed_bound``) can evaluate both in one pass; each
network is still its own set of weights, initialised as ``torch.nn.Linear`` does.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ddpmlab.core.schedule import NoiseSchedule


class SeedMeanStd(nn.Module):
    """Both seed networks. ``forward(x, tau)`` maps (B, D) inputs and (B,) times to (mean, std), each (B, D).

    Parameters (2 = {mean net, std net}): ``w_in`` (2, H, D + 1), ``b_in`` (2, H), ``w_out`` (2, D, H),
    ``b_out`` (2, D). Column D of ``w_in`` multiplies the time input.
    """

    def __init__(self, dim: int = 1, hidden: int = 4):
        super().__init__()
        self.dim, self.hidden = int(dim), int(hidden)
        self.w_in = nn.Parameter(torch.empty(2, hidden, dim + 1))
        self.b_in = nn.Parameter(torch.empty(2, hidden))
        self.w_out = nn.Parameter(torch.empty(2, dim, hidden))
        self.b_out = nn.Parameter(torch.empty(2, dim))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weights and biases, as ``nn.Linear`` initialises."""
        with torch.no_grad():
            for p, fan_in in ((self.w_in, self.dim + 1), (self.b_in, self.dim + 1),
                              (self.w_out, self.hidden), (self.b_out, self.hidden)):
                bound = 1.0 / math.sqrt(fan_in)
                p.copy_(torch.rand(p.shape, generator=generator) * 2 * bound - bound)

    def forward(self, x: torch.Tensor, tau: torch.Tensor):
        inp = torch.cat([x, tau.reshape(-1, 1).to(x.dtype)], dim=1)  # (B, D + 1)
        h = torch.relu(torch.einsum("bi,kji->kbj", inp, self.w_in) + self.b_in[:, None, :])  # (2, B, H)
        out = torch.einsum("kbj,kij->kbi", h, self.w_out) + self.b_out[:, None, :]  # (2, B, D)
        return out[0], F.softplus(out[1])


class SeedReverse(nn.Module):
    """The seed's learned reverse process over data of shape (B, *dims): networks plus schedule."""

    def __init__(self, schedule: NoiseSchedule, data_shape: tuple, hidden: int = 4):
        super().__init__()
        self.schedule = schedule
        self.data_shape = tuple(data_shape)
        self.net = SeedMeanStd(dim=math.prod(self.data_shape), hidden=hidden)

    def mean_std(self, x_t: torch.Tensor, t: torch.Tensor):
        """mu(x_t, t) and sigma(x_t, t), shaped like x_t."""
        tau = self.schedule.model_time(torch.as_tensor(t).expand(x_t.shape[0]))
        mean, std = self.net(x_t.reshape(x_t.shape[0], -1), tau)
        return mean.reshape(x_t.shape), std.reshape(x_t.shape)

    def p_mean_variance(self, x_t: torch.Tensor, t: torch.Tensor):
        """Mean and variance of p(x_{t-1} | x_t)   (eq. 1)."""
        mean, std = self.mean_std(x_t, t)
        return mean, std.square()

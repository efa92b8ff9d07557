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

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ddpmlab.core.contract import PMeanVariance
from ddpmlab.core.process import ReverseProcess
from ddpmlab.core.diffusion import forward_trajectory_fast, trajectory_scales
from ddpmlab.core.parameterisation import from_mean_variance
from ddpmlab.core.schedule import NoiseSchedule
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.seed_fused import _FusedSeedNLL, _Workspace


SEED_TYPES = ("previous_x", "learned")  # (mean type, variance type) of the seed's networks: mu and sigma


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


class SeedReverse(nn.Module, ReverseProcess):
    """The seed's learned reverse process over data of shape (B, *dims): networks plus schedule.

    Unconditional: the seed's networks take no condition (a ``cond`` is refused).
    """

    def __init__(self, schedule: NoiseSchedule, data_shape: tuple, hidden: int = 4):
        super().__init__()
        self.schedule = schedule
        self.data_shape = tuple(data_shape)
        self.net = SeedMeanStd(dim=math.prod(self.data_shape), hidden=hidden)
        self._fused = None  # (workspace, network times, trajectory scales) of the fused bound, made once

    @property
    def dtype(self) -> torch.dtype:
        return self.net.w_in.dtype

    @property
    def device(self) -> torch.device:
        return self.net.w_in.device

    def describe(self) -> dict:
        """The ``[model]`` settings that rebuild the seed's networks: its mean type (mu) and variance type
        (sigma) are fixed."""
        return {"arch": "seed", "mean_type": SEED_TYPES[0], "var_type": SEED_TYPES[1], "hidden": self.net.hidden}

    def mean_std(self, x_t: torch.Tensor, t: torch.Tensor, cond=None):
        """mu(x_t, t) and sigma(x_t, t), shaped like x_t; t may be a continuous step (float)."""
        if cond is not None:
            raise DDPMLabError("the seed's networks are unconditional; use model.arch = 'mlp' or 'unet' "
                               "for a conditional model")
        tau = self.schedule.model_time(torch.as_tensor(t).expand(x_t.shape[0]))
        mean, std = self.net(x_t.reshape(x_t.shape[0], -1), tau.to(x_t.device))
        return mean.reshape(x_t.shape), std.reshape(x_t.shape)

    def p_mean_variance(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> PMeanVariance:
        """p(x_{t-1} | x_t) = N(mu, sigma^2)   (eq. 1), with the x_0 and eps its mean implies."""
        mean, std = self.mean_std(x_t, t, cond)
        return from_mean_variance(self.schedule, x_t, t, mean, std.square())

    def score(self, x: torch.Tensor, t_c: float, alpha_bar: float, cond=None) -> torch.Tensor:
        """The networks take continuous time: the mean at t_c (held in [1, T]) with alpha_t and beta_t
        linear in t between steps, solved for the score: (sqrt(alpha) mu - x) / beta."""
        sched = self.schedule
        tc = min(max(float(t_c), 1.0), float(sched.T))
        grid = np.arange(sched.T + 1)
        alpha = float(np.interp(tc, grid, sched.alphas.numpy()))
        beta = float(np.interp(tc, grid, sched.betas.numpy()))
        mean, _ = self.mean_std(x, torch.full((x.shape[0],), tc, dtype=torch.float64), cond)
        return (math.sqrt(alpha) * mean - x) / beta

    def trajectory_step_nll(self, x0: torch.Tensor, noise: torch.Tensor, fused: bool | None = None):
        """The step terms of the whole-trajectory bound (see ``ReverseProcess.trajectory_step_nll``);
        on 1-D data on the CPU in one fused pass (``ddpmlab.models.seed_fused``) unless ``fused=False``."""
        N, D = x0.shape[0], x0[0].numel()
        use = (D == 1 and x0.device.type == "cpu") if fused is None else fused
        if not use:
            return super().trajectory_step_nll(x0, noise)
        if D != 1:
            raise ValueError("the fused seed bound handles the seed's networks on 1-D data only")
        sched, net = self.schedule, self.net
        if self._fused is None or self._fused[3] != x0.dtype:
            tau = sched.model_time(torch.arange(1, sched.T + 1)).to(x0.dtype)  # (T,)
            self._fused = (_Workspace(), tau, trajectory_scales(sched, x0.dtype), x0.dtype)
        ws, tau, scales, _ = self._fused
        x0, noise = x0.reshape(N, 1), noise.reshape(sched.T, N, 1)
        ws.ensure(sched.T, N, net.hidden, x0.dtype)
        traj = forward_trajectory_fast(sched, x0[:, 0], noise[..., 0], out=ws.traj, scales=scales)
        step_nll = _FusedSeedNLL.apply(traj, tau, net.w_in, net.b_in, net.w_out, net.b_out, ws)
        return step_nll, traj[-1]

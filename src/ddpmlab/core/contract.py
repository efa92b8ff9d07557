"""The one model contract: what samplers, objectives and metrics may ask of a reverse-process model.

A trained ``DiffusionModel``, the seed's two networks and the exact ``MixtureOracle`` all satisfy
``ReverseModel``; code below the model never asks which one it holds. ``ReverseProcess`` is a base class
with the contract's defaults (a score implied by the reverse mean, no respacing, float64 on the CPU).

Time convention: see ``ddpmlab.core.schedule`` (paper steps t = 0..T, t = 0 the data).
"""
from __future__ import annotations

import math
from typing import NamedTuple, Protocol, runtime_checkable

import torch

from ddpmlab.core.diffusion import forward_trajectory_fast
from ddpmlab.core.schedule import NoiseSchedule
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.core.validate import check_shape


class PMeanVariance(NamedTuple):
    """The reverse step p(x_{t-1} | x_t) = N(mean, variance) (Ho et al. 2020, eq. 1), with the x_0 and the
    noise it implies (eq. 7 and 11 inverted). Every tensor is shaped like x_t."""

    mean: torch.Tensor
    variance: torch.Tensor
    log_variance: torch.Tensor
    pred_x0: torch.Tensor
    pred_eps: torch.Tensor


@runtime_checkable
class ReverseModel(Protocol):
    """What every model offers.

    - ``schedule`` (``NoiseSchedule``) and ``data_shape`` (one example's shape, e.g. ``(2,)`` or ``(1, 8, 8)``);
    - ``dtype`` and ``device``: where the model computes (samplers create their tensors there);
    - ``p_mean_variance(x_t, t, cond=None)``: the reverse step at integer paper steps t (B,);
    - ``score(x, t_c, alpha_bar, cond=None)``: grad_x log q(x) at the continuous step t_c in [0, T],
      where the schedule's alpha-bar is ``alpha_bar`` (the probability-flow ODE's need);
    - ``respaced(num_steps)``: the same model on fewer, evenly kept steps, or on the kept steps given as a
      list (``NoiseSchedule.spaced``; ancestral sampling on a grid);
    - ``family``: "ddpm" (optional; a flow model says "flow" and offers ``velocity`` instead).
    ``cond`` is an optional per-example condition (B, ...) (class labels), passed to the network.
    """

    schedule: NoiseSchedule
    data_shape: tuple

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def p_mean_variance(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> PMeanVariance: ...

    def score(self, x: torch.Tensor, t_c: float, alpha_bar: float, cond=None) -> torch.Tensor: ...

    def respaced(self, num_steps: int) -> "ReverseModel": ...


def step_tensor(model, n: int, t: int) -> torch.Tensor:
    """Paper step ``t`` for a batch of ``n``, as the long tensor (n,) on the model's device."""
    return torch.full((n,), int(t), dtype=torch.long, device=model.device)


class ReverseProcess:
    """Defaults of the contract for models that are not ``nn.Module``s, or that lack a part of it.

    ``family`` names the process: "ddpm" (this contract) or "flow" (a velocity model on the linear path,
    ``ddpmlab.models.flow_model``); samplers, solvers and objectives read it instead of probing types."""

    family = "ddpm"

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def double(self):
        """A float64 version of the model (itself: the default computes in float64)."""
        return self

    @property
    def needs_data_moments(self) -> bool:
        """Whether the model waits for the data's mean and standard deviation (``set_data_moments``)."""
        return False

    def set_data_moments(self, mean: float, std: float) -> None:
        """Receive the data's scalar mean and standard deviation (the trainer's; unused by default)."""

    def respaced(self, num_steps):
        """Itself on all T steps; fewer (a number, or the kept steps as a list) are refused by default."""
        if num_steps == self.schedule.T:
            return self
        count = len(num_steps) if isinstance(num_steps, (list, tuple)) else num_steps
        raise DDPMLabError(f"{type(self).__name__} cannot be respaced; use the ddim or ode sampler for "
                           f"{count} steps")

    def score(self, x: torch.Tensor, t_c: float, alpha_bar: float, cond=None) -> torch.Tensor:
        """The score implied by the reverse mean, mu = (x_t + beta_t grad log q(x_t)) / sqrt(alpha_t)
        (Ho et al. eq. 11 with eps = -sqrt(1 - abar) grad log q), at the two neighbouring integer steps of
        t_c (held in [1, T]), linearly interpolated."""
        sched = self.schedule
        tc = min(max(float(t_c), 1.0), float(sched.T))
        lo = min(int(math.floor(tc)), sched.T - 1) if sched.T > 1 else 1
        w = tc - lo
        out = 0.0
        for step, weight in ((lo, 1.0 - w), (lo + 1, w)):
            if weight > 0 and step <= sched.T:
                mean = self.p_mean_variance(x, step_tensor(self, x.shape[0], step), cond).mean
                alpha, beta = float(sched.alphas[step]), float(sched.betas[step])
                out = out + weight * (math.sqrt(alpha) * mean - x) / beta
        return out

    def trajectory_step_nll(self, x0: torch.Tensor, noise: torch.Tensor, fused: bool | None = None):
        """For the whole-trajectory bound (Ho et al. eq. 3): q's chain x_0..x_T for ``noise`` (T, N, *dims)
        and per example sum_t [log sigma_t + (x_{t-1} - mu_t)^2 / (2 sigma_t^2)] (N,), through
        ``p_mean_variance`` on all T x N rows. Returns (that sum, x_T)."""
        if fused:
            raise DDPMLabError(f"{type(self).__name__} has no fused trajectory bound")
        traj = forward_trajectory_fast(self.schedule, x0, noise)  # (T + 1, N, *dims)
        T, N = traj.shape[0] - 1, traj.shape[1]
        rows = traj[1:].reshape((T * N,) + tuple(traj.shape[2:]))  # (T N, *dims): x_1..x_T
        t = torch.arange(1, T + 1, device=traj.device).repeat_interleave(N)
        p = self.p_mean_variance(rows, t)
        nll = 0.5 * p.log_variance + 0.5 * (traj[:-1].reshape(rows.shape) - p.mean).square() / p.variance
        return nll.reshape(T, N, -1).sum(dim=(0, 2)), traj[-1]


class AroundNetwork:
    """A model that wraps a network ``self.net``: keeping it (``wrap_network``), its ``dtype`` and
    ``device`` (its first parameter's), and its optional preconditioner ``self.precond`` (None, or one
    holding the data's moments: ``moments_set``, ``set_moments``) that the trainer feeds."""

    @property
    def needs_data_moments(self) -> bool:
        precond = getattr(self, "precond", None)  # an nn.Module attribute: no class-level default
        return precond is not None and not precond.moments_set

    def set_data_moments(self, mean: float, std: float) -> None:
        """The data's scalar mean and standard deviation, for preconditioning (no-op without it)."""
        precond = getattr(self, "precond", None)
        if precond is not None:
            precond.set_moments(mean, std)

    def wrap_network(self, net, net_kwargs: dict | None, data_shape) -> None:
        """Keep ``net`` (an ``nn.Module``), the keyword arguments that rebuild it, and one example's shape."""
        if not isinstance(net, torch.nn.Module):
            raise DDPMLabError(f"the network must be a torch.nn.Module, got {type(net).__name__}")
        self.net = net
        self.net_kwargs = dict(net_kwargs or {})
        self.arch_options = None  # set by a registered architecture's builder (``ddpmlab.models.registry``)
        self.data_shape = check_shape(data_shape)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters(), torch.empty(())).dtype

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters(), torch.empty(())).device

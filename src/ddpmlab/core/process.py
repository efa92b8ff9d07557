"""The base classes of each family's models (``ddpmlab.core.contract`` holds the Protocols they satisfy):

- ``ProcessModel``: what every family's model shares (where it computes, its data moments, its number of
  classes, and the methods each family gives its own meaning: ``velocity_field``, ``probe``, ``describe``,
  ``q_sample``, ``predict_x0``, ``time_label``);
- ``ReverseProcess``: the DDPM family's (``ReverseModel``'s defaults: a score implied by the reverse mean,
  no respacing, float64 on the CPU);
- ``VelocityProcess``: the flow family's (``VelocityModel``);
- ``AroundNetwork``: a model that wraps a network ``self.net``.

Time convention: see ``ddpmlab.core.schedule`` (paper steps t = 0..T, t = 0 the data) and
``ddpmlab.core.paths`` (continuous t in [0, 1], t = 1 the prior).
"""
from __future__ import annotations

import copy
import math

import torch

from ddpmlab.core.continuous import ContinuousSchedule, score_function
from ddpmlab.core.contract import step_tensor
from ddpmlab.core.diffusion import forward_trajectory_fast
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.core.validate import check_shape


class ProcessModel:
    """What every model of every family shares: its ``family`` (a name in ``ddpmlab.models.family.FAMILIES``,
    which holds everything that differs between families), where it computes, the data moments a
    preconditioner waits for, and the few methods each family's base class gives its own meaning:

    - ``velocity_field(cond, float64)``: v(x, t) at continuous t in [0, 1], differentiable in x (the ODE
      sampler's and the ODE likelihood's need; every family's models have one);
    - ``probe(x, cond)``: one no-grad call on a few rows (a network that cannot take them fails here);
    - ``describe()``: the ``[model]`` settings that rebuild the model (a run records them).
    """

    family = "ddpm"
    num_classes = 0  # classes of a class-conditional model (its null class is K); 0: unconditional

    @property
    def dtype(self) -> torch.dtype:
        return torch.float64

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def double(self):
        """A float64 version of the model (itself: the default computes in float64)."""
        return self

    def times(self, ts, what: str) -> list:
        """``ts`` (numbers, a list or a tensor) as a non-empty list of the family's times (``check_times``);
        ``what`` names the caller in the one-line refusal."""
        try:
            ts = torch.as_tensor(ts, dtype=torch.float64).reshape(-1).tolist()
        except (TypeError, ValueError, RuntimeError):
            raise DDPMLabError(f"the times must be numbers, got {ts!r}") from None
        if not ts:
            raise DDPMLabError(f"at least one time is needed for {what}")
        return self.check_times(ts)

    def describe(self) -> dict:
        raise DDPMLabError(f"a {type(self).__name__} cannot be saved as a run: wrap your network in "
                           "ddpmlab.DiffusionModel or ddpmlab.FlowModel")

    def q_log_prob(self, x: torch.Tensor, at) -> torch.Tensor:
        """log q(x_t) of an exact model (an oracle) at its family's time ``at``; others have none."""
        raise DDPMLabError(f"{type(self).__name__} has no exact density q(x_t): that needs an exact oracle")

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """x_t = alpha(t) x_0 + sigma(t) noise at the family's time t (``marginal_coefficients``)."""
        alpha, sigma = self.marginal_coefficients(t)
        return alpha * x0 + sigma * noise

    @property
    def needs_data_moments(self) -> bool:
        """Whether the model waits for the data's mean and standard deviation (``set_data_moments``)."""
        return False

    def set_data_moments(self, mean: float, std: float) -> None:
        """Receive the data's scalar mean and standard deviation (the trainer's; unused by default)."""


class ReverseProcess(ProcessModel):
    """The DDPM family's base: defaults of ``ReverseModel`` for models that are not ``nn.Module``s, or that
    lack a part of it (a score implied by the reverse mean, no respacing, float64 on the CPU)."""

    family = "ddpm"

    def probe(self, x: torch.Tensor, cond=None) -> None:
        self.p_mean_variance(x, torch.ones(x.shape[0], dtype=torch.long, device=x.device), cond)

    def check_times(self, ts: list) -> list:
        """``ts`` as paper steps: whole numbers in 1..T."""
        T = self.schedule.T
        if not all(float(t) == int(t) and 1 <= int(t) <= T for t in ts):
            raise DDPMLabError(f"a DDPM's steps are whole numbers in 1..{T}, got {ts}")
        return [int(t) for t in ts]

    def marginal_coefficients(self, t) -> tuple[float, float]:
        """(sqrt(abar_t), sqrt(1 - abar_t)) at paper step t: q(x_t | x_0) (Ho et al. eq. 4)."""
        abar = float(self.schedule.alphas_cumprod[int(t)])
        return math.sqrt(abar), math.sqrt(1.0 - abar)

    def ode_time(self, t) -> float:
        """The time s = t / T of ``velocity_field`` (the continuous schedule) at paper step t."""
        return float(t) / self.schedule.T

    def ode_knots(self) -> list[float]:
        """The times of ``velocity_field`` where its time derivative may jump: the continuous schedule's
        knots k / T (an adaptive solve restarts at them)."""
        return [k / self.schedule.T for k in range(self.schedule.T + 1)]

    def predict_x0(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """The model's x_0 prediction at paper step t (the contract's ``pred_x0``), float64 on the CPU."""
        step = step_tensor(self, x_t.shape[0], int(t))
        return self.p_mean_variance(x_t.to(self.device, self.dtype), step).pred_x0.double().cpu()

    def time_label(self, t) -> str:
        """Paper step t in words: its place in the chain and its alpha-bar."""
        return f"t = {int(t)} of {self.schedule.T} (alpha-bar {float(self.schedule.alphas_cumprod[int(t)]):.4f})"

    def time_text(self) -> str:
        return f"T = {self.schedule.T}"

    def schedule_spec(self) -> dict | None:
        """What recreates its schedule (``make_schedule``'s arguments), None when it was made otherwise."""
        return getattr(self.schedule, "spec", None)

    def prior_log_prob(self, x1: torch.Tensor) -> torch.Tensor:
        """log q(x_T) where the probability-flow ODE ends (s = 1 on the continuous schedule)."""
        return self.q_log_prob(x1, ContinuousSchedule(self.schedule).alpha_bar(1.0))

    def velocity_field(self, cond=None, float64: bool = True):
        """v(x, t) = -1/2 beta(t) (x + score(x, t)) on the VP path (Song et al. 2021, eq. 13), the score
        from ``score`` on a float64 copy (``float64`` is always so for a DDPM)."""
        cont = ContinuousSchedule(self.schedule)
        score = score_function(self, cont)

        def ddpm(x, t):
            return -0.5 * cont.beta(t) * (x + score(x, t, cond))

        return ddpm

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


class VelocityProcess(ProcessModel):
    """The flow family's base (``VelocityModel``): a velocity on a path; subclasses define ``velocity``."""

    family = "flow"

    def probe(self, x: torch.Tensor, cond=None) -> None:
        self.velocity(x, 0.5, cond)

    def check_times(self, ts: list) -> list:
        """``ts`` as times in (0, 1]."""
        if not all(0.0 < float(t) <= 1.0 for t in ts):
            raise DDPMLabError(f"a flow's times lie in (0, 1], got {ts}")
        return [float(t) for t in ts]

    def marginal_coefficients(self, t) -> tuple[float, float]:
        """(alpha(t), sigma(t)) of the model's path at time t."""
        return float(self.path.alpha(float(t))), float(self.path.sigma(float(t)))

    def ode_time(self, t) -> float:
        """The time of ``velocity_field`` at time t: t itself (a flow's velocity lives on its own time)."""
        return float(t)

    def ode_knots(self) -> list[float]:
        """The times of ``velocity_field`` where its time derivative may jump: none (a path is smooth in t)."""
        return []

    def predict_x0(self, x_t: torch.Tensor, t) -> torch.Tensor:
        """The x_0 the velocity implies: from x = alpha x_0 + sigma eps and v = alpha' x_0 + sigma' eps,
        x_0 = (sigma v - sigma' x) / (sigma alpha' - sigma' alpha) (x - t v on the linear path); float64
        on the CPU."""
        p, t = self.path, float(t)
        a, s, da, ds = (float(f(t)) for f in (p.alpha, p.sigma, p.d_alpha, p.d_sigma))
        v = self.velocity(x_t.to(self.device, self.dtype), t).double().cpu()
        return (s * v - ds * x_t.double().cpu()) / (s * da - ds * a)

    def time_label(self, t) -> str:
        """Time t in words, with the path's alpha(t) and sigma(t)."""
        alpha, sigma = self.marginal_coefficients(t)
        return f"t = {float(t):.3f} (alpha {alpha:.3f}, sigma {sigma:.3f})"

    def time_text(self) -> str:
        return "continuous t in [0, 1]"

    def schedule_spec(self) -> dict:
        """Nothing to recreate: a flow's time is continuous, it has no schedule."""
        return {}

    def prior_log_prob(self, x1: torch.Tensor) -> torch.Tensor:
        """log q(x_1) where the ODE ends (t = 1)."""
        return self.q_log_prob(x1, 1.0)

    def velocity_field(self, cond=None, float64: bool = True):
        """v(x, t) = ``velocity(x, t, cond)``; with ``float64`` evaluated on a float64 copy (the likelihood's
        and the adaptive solver's need), returned in x's dtype."""
        net = copy.deepcopy(self).double() if float64 else self

        def flow(x, t):
            dtype = torch.float64 if float64 else x.dtype
            return net.velocity(x.to(dtype), t, cond).to(x.dtype)

        return flow


class FlowMapProcess(VelocityProcess):
    """A few-step family's base (``FlowMapModel``): a map ``flow_map(x, t, s, cond)`` from time t to time s
    on a path, in one call; its instantaneous velocity (the map's limit as s -> t) is ``velocity``, so the
    ODE samplers and the likelihood take it too. Subclasses define both."""

    family = "meanflow"


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
    def num_classes(self) -> int:
        """The network's classes (its ``num_classes``; 0 when it declares none: unconditional)."""
        return int(getattr(self.net, "num_classes", 0) or 0)

    def network_description(self) -> dict:
        """What rebuilds the network: a registered architecture's options, or the network's class as
        ``package.module:Class`` with its ``net_kwargs`` (those given, else the ones a ddpmlab network
        records itself, its ``init_kwargs``)."""
        if self.arch_options is not None:
            return dict(self.arch_options)
        cls = type(self.net)
        kwargs = self.net_kwargs or getattr(self.net, "init_kwargs", {})
        return {"arch": f"{cls.__module__}:{cls.__qualname__}", "net_kwargs": dict(kwargs)}

    @property
    def dtype(self) -> torch.dtype:
        return next(self.net.parameters(), torch.empty(())).dtype

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters(), torch.empty(())).device

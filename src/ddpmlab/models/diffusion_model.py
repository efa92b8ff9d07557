"""``DiffusionModel``: your network plus its parameterisation, the reverse-process model that samplers,
objectives and metrics use (it satisfies ``ddpmlab.core.contract.ReverseModel``).

The network is called as ``net(x, tau)``, or ``net(x, tau, cond)`` when a condition is given: data
(B, *dims), network time tau = t / T (B,) in (0, 1], an optional per-example condition (B, ...). Its
output has the data's shape, with dimension 1 doubled for a learned variance (mean head first; see
``ddpmlab.core.parameterisation``). With ``precondition=True`` the network sees unit-variance input and
predicts the normalised residual around the data's Gaussian fit (``ddpmlab.models.preconditioning``).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ddpmlab.core.contract import PMeanVariance
from ddpmlab.core.process import AroundNetwork, ReverseProcess
from ddpmlab.core.mean_types import mean_types_with
from ddpmlab.core.parameterisation import GaussianDiffusion
from ddpmlab.core.schedule import NoiseSchedule
from ddpmlab.core.utils import DDPMLabError, extract
from ddpmlab.models import fast_path
from ddpmlab.models.preconditioning import GaussianPreconditioner


class DiffusionModel(AroundNetwork, nn.Module, ReverseProcess):
    """A network on a schedule, with a mean type and a variance type (improved-diffusion's two axes).

    >>> model = DiffusionModel(net, make_schedule("linear", 250), mean_type="epsilon", data_shape=(2,))

    ``data_moments=(mean, std)`` sets a preconditioned model's data moments up front; the ``Trainer``
    sets them from the training data otherwise. ``net_kwargs`` are the keyword arguments that rebuild
    your network (``type(net)(**net_kwargs)``), recorded with a saved run so that the command line can
    load it (``ddpmlab sample RUN --trust-code``).
    """

    def __init__(self, net: nn.Module, schedule: NoiseSchedule, mean_type: str = "epsilon",
                 var_type: str = "fixed_small", data_shape: tuple = (1,), precondition: bool = False,
                 data_moments: tuple[float, float] | None = None, net_kwargs: dict | None = None):
        super().__init__()
        self.wrap_network(net, net_kwargs, data_shape)
        if not isinstance(schedule, NoiseSchedule):
            raise DDPMLabError(f"schedule must be a NoiseSchedule, e.g. dl.make_schedule('linear', 250), got "
                               f"{type(schedule).__name__}")
        self.diffusion = GaussianDiffusion(schedule, mean_type, var_type)
        if precondition and not self.diffusion.mean_kind.supports_precondition:
            names = " | ".join(mean_types_with("supports_precondition"))
            raise DDPMLabError(f"precondition = true needs mean_type {names} (mean type {mean_type!r} has no "
                               "Gaussian-fit preconditioner)")
        self.precond = GaussianPreconditioner(self.diffusion.mean_kind) if precondition else None
        if data_moments is not None:
            self.set_data_moments(*data_moments)
        channels = self.data_shape[0]
        self._out_shape = (self.diffusion.output_channels(channels),) + self.data_shape[1:]

    # -- description ---------------------------------------------------------------------------------
    @property
    def schedule(self) -> NoiseSchedule:
        return self.diffusion.schedule

    def describe(self) -> dict:
        """The ``[model]`` settings that rebuild this model (``ddpmlab.models.family``)."""
        return {"mean_type": self.mean_type, "var_type": self.var_type, "precondition": self.precond is not None,
                **self.network_description()}

    @property
    def mean_type(self) -> str:
        return self.diffusion.mean_type

    @property
    def var_type(self) -> str:
        return self.diffusion.var_type

    # -- the network ---------------------------------------------------------------------------------
    def _net(self, x, tau, cond, at=None):
        """The network at network times tau (B,), or at the integer steps of ``at`` (``_at_steps``; tau
        None, unconditional), each step's time embedded once (``fast_path.call_net_at_steps``)."""
        if at is not None:
            out = fast_path.call_net_at_steps(self.net, x, at[0].to(x.device), self.time_grid(x.device), at[1])
        else:
            out = fast_path.call_net(self.net, x, tau) if cond is None else self.net(x, tau, cond)
        if tuple(out.shape[1:]) != self._out_shape or out.shape[0] != x.shape[0]:
            raise DDPMLabError(
                f"the network's output has shape {tuple(out.shape)}, but mean type {self.mean_type!r} with "
                f"variance type {self.var_type!r} on data {self.data_shape} needs {(x.shape[0],) + self._out_shape}")
        return out

    def net_out(self, x: torch.Tensor, tau: torch.Tensor, alpha_bar, cond=None) -> torch.Tensor:
        """The (preconditioned) network output at network time tau; ``alpha_bar`` is a per-example tensor
        broadcastable against x, or a float (used only when preconditioned)."""
        coef = None
        if self.precond is not None:
            self.precond.check_moments()
            coef = self.precond.coefficients(alpha_bar, x)
        return self._net_out(x, tau, coef, cond)

    def time_grid(self, device) -> torch.Tensor:
        """The network time of every step 0..T (T + 1,), kept for this schedule and device."""
        kept = self.__dict__.get("_kept_grid")
        if kept is None or kept[0] is not self.schedule or kept[1].device != torch.device(device):
            grid = self.schedule.model_time(torch.arange(self.schedule.T + 1)).to(device)
            self.__dict__["_kept_grid"] = kept = (self.schedule, grid)
        return kept[1]

    def _net_out(self, x, tau, coef, cond, at=None):
        if self.precond is None:
            return self._net(x, tau, cond, at)
        out = self._net(self.precond.scale_input(x, coef=coef), tau, cond, at)
        head, var_head = self.diffusion.split_output(out)
        head = self.precond.mean_head(head, x, coef=coef)
        return head if var_head is None else torch.cat([head, var_head], dim=1)

    def _coefficients(self, x_t: torch.Tensor, t: torch.Tensor, shared):
        """The preconditioner's coefficients at paper steps t (None without it): five floats when every
        row is at one step (``shared``, from ``_at_steps``), else gathered from its per-step table."""
        if self.precond is None:
            return None
        self.precond.check_moments()
        abar = self.schedule.alphas_cumprod
        if not fast_path.enabled():
            return self.precond.coefficients(extract(abar, t, x_t), x_t)
        if shared is not None:
            return self.precond.coefficients(float(abar[int(shared)]))
        return extract(self.precond.step_table(abar, x_t), t, x_t).split(1, dim=1)  # 5 x (B, 1, ...)

    def training_coefficients(self, t: torch.Tensor, like: torch.Tensor):
        """For paper steps t (B,): ((sqrt(abar_t), sqrt(1 - abar_t)), the preconditioner's five or None),
        each (B, 1, ...) in ``like``'s dtype: what ``q_sample`` (eq. 4) and ``regression_pair`` gather,
        taken from one table kept for this schedule and these moments (one gather in a training step).
        The numbers are theirs: the schedule's float64 values cast as ``extract`` casts them."""
        schedule = self.schedule
        pre = None
        if self.precond is not None:
            self.precond.check_moments()
            pre = self.precond.step_table(schedule.alphas_cumprod, like)  # kept while the moments stay
        kept = self.__dict__.get("_kept_training_table")
        if kept is None or kept[0] is not schedule or kept[1] is not pre or kept[2].dtype != like.dtype \
                or kept[2].device != like.device:
            q = torch.stack([schedule.sqrt_alphas_cumprod, schedule.sqrt_one_minus_alphas_cumprod], dim=1)
            table = torch.cat([q.to(like.dtype).to(like.device)] + ([pre] if pre is not None else []), dim=1)
            self.__dict__["_kept_training_table"] = kept = (schedule, pre, table)
        cols = extract(kept[2], t, like).split(1, dim=1)
        return cols[:2], (cols[2:] if pre is not None else None)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        """The model's raw output at integer paper steps t (B,): mean head (eps, x_0, v or mu) and, for a
        learned variance, the variance head concatenated along dimension 1."""
        tau, at = self._at_steps(x_t, t, cond)
        return self._net_out(x_t, tau, self._coefficients(x_t, t, at[1] if at else None), cond, at)

    def _at_steps(self, x_t, t, cond):
        """How the network meets paper steps t: (tau, None) with the network times of t, or, unconditional
        at integer steps (B,), (None, (t, the step all rows share or None)) for ``_net``."""
        t = torch.as_tensor(t)
        if cond is None and t.dim() == 1 and not t.dtype.is_floating_point:
            return None, (t, fast_path.shared_value(t) if fast_path.enabled() else None)
        return self.schedule.model_time(t).to(x_t.device), None

    # -- the contract --------------------------------------------------------------------------------
    def p_mean_variance(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> PMeanVariance:
        """p(x_{t-1} | x_t) with the implied x_0 and eps   (Ho et al. eq. 1, 7, 11)."""
        return self.diffusion.p_mean_variance(self.forward(x_t, t, cond), x_t, t)

    def eps_continuous(self, x: torch.Tensor, t: float, alpha_bar: float, cond=None) -> torch.Tensor:
        """The network's noise prediction at continuous step t (a float in [0, T]) where the schedule's
        alpha-bar is ``alpha_bar``: what the probability-flow ODE needs between the grid's steps."""
        if not self.diffusion.mean_kind.continuous_time:
            raise DDPMLabError(f"a model of mean type {self.mean_type!r} has no noise prediction between steps")
        tau = self.schedule.model_time(torch.full((x.shape[0],), float(t), dtype=torch.float64))
        head, _ = self.diffusion.split_output(self.net_out(x, tau.to(x.device), alpha_bar, cond))
        return self.diffusion.mean_kind.eps_continuous(x, head, alpha_bar)

    def score(self, x: torch.Tensor, t_c: float, alpha_bar: float, cond=None) -> torch.Tensor:
        """grad log q(x) = -eps / sqrt(1 - abar) at continuous step t_c held in [1, T] (no step below 1 was
        trained); a model without a noise prediction between steps (``previous_x``) has the score its
        mean implies (``ReverseProcess.score``)."""
        if not self.diffusion.mean_kind.continuous_time:
            return super().score(x, t_c, alpha_bar, cond)
        T = self.schedule.T
        tc = min(max(float(t_c), 1.0), float(T))
        if tc != float(t_c):  # held at the trained range: use that step's own alpha-bar
            alpha_bar = float(self.schedule.alphas_cumprod[int(tc)])
        return -self.eps_continuous(x, tc, alpha_bar, cond) / math.sqrt(1.0 - alpha_bar)

    def respaced(self, num_steps: int) -> "DiffusionModel":
        """The same network on ``num_steps`` evenly kept steps (new betas from the kept alpha-bars)."""
        sched = self.schedule.spaced(num_steps)
        if sched is self.schedule:
            return self
        if not self.diffusion.mean_kind.continuous_time:
            raise DDPMLabError(f"a model of mean type {self.mean_type!r} cannot be respaced; use ddim or ode")
        clone = DiffusionModel(self.net, sched, self.mean_type, self.var_type, self.data_shape)
        clone.precond = self.precond  # the same network and moments on the kept steps
        return clone

    # -- what the objectives use ---------------------------------------------------------------------
    def split_output(self, out: torch.Tensor):
        """(mean head, variance head or None) of a raw output."""
        return self.diffusion.split_output(out)

    def mean_target(self, x0, x_t, t, noise):
        """What the mean head should output for the simple loss (eq. 14's target for each mean type)."""
        return self.diffusion.mean_target(x0, x_t, t, noise)

    def regression_pair(self, x0, x_t, t, noise, coef=None):
        """(input, target): the simple loss as a regression of the network's own output, what the network
        sees at paper steps t (B,) and what its mean head (the first channels of its output) should
        output. Without preconditioning: x_t and the mean type's target (eq. 14's); with it: c / r and the
        normalised residual (target - k_x x_t - b_x) / c_out (``GaussianPreconditioner``), the
        coefficients ``coef`` gathered from the step table when not given (``_coefficients``)."""
        target = self.mean_target(x0, x_t, t, noise)
        if self.precond is None:
            return x_t, target
        coef = self._coefficients(x_t, t, None) if coef is None else coef
        return self.precond.scale_input(x_t, coef=coef), self.precond.residual_target(target, x_t, coef=coef)

    def simple_error(self, x0, x_t, t, noise, cond=None, keep_output: bool = False):
        """(error, raw output or None): the mean head's target (eq. 14's, for the mean type) minus its
        prediction, and the output itself when ``keep_output``. A preconditioned model's error is divided
        by the residual scale c_out (Karras et al. 2022's loss weight 1 / c_out^2): with the head
        k_x x_t + b_x + c_out F, that is (target - k_x x_t - b_x) / c_out - F, the error of the network's
        own normalised output, with the gradient reaching F alone (``regression_pair``)."""
        if self.precond is None:
            _, target = self.regression_pair(x0, x_t, t, noise)
            out = self(x_t, t, cond)
            return target - self.split_output(out)[0], (out if keep_output else None)
        tau, at = self._at_steps(x_t, t, cond)
        coef = self._coefficients(x_t, t, at[1] if at else None)
        x_in, target = self.regression_pair(x0, x_t, t, noise, coef)
        F, var_head = self.split_output(self._net(x_in, tau, cond, at))
        err = target - F
        if not keep_output:
            return err, None
        head = self.precond.mean_head(F, x_t, coef=coef)
        return err, (head if var_head is None else torch.cat([head, var_head], dim=1))

    def p_mean_variance_from_output(self, out, x_t, t) -> PMeanVariance:
        return self.diffusion.p_mean_variance(out, x_t, t)

"""A network's output turned into the reverse step p(x_{t-1} | x_t), on two axes (improved-diffusion's
ModelMeanType x ModelVarType):

mean type (what the mean head predicts)      variance type
- ``previous_x``: mu directly (the seed)        - ``fixed_small``: beta-tilde_t (Ho et al. sec. 3.2)
- ``x0``: x_0, mu from the posterior (eq. 7)    - ``fixed_large``: beta_t
- ``epsilon``: the noise (eq. 11)               - ``learned``: log sigma^2 from a second head
- ``v``: sqrt(abar) eps - sqrt(1-abar) x_0      - ``learned_range``: log sigma^2 = f log beta_t
  (Salimans & Ho 2022)                            + (1 - f) log beta-tilde_t (Nichol & Dhariwal eq. 15)

Learned variances double the output along dimension 1: (B, 2D) for flat data, (B, 2C, H, W) for images.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ddpmlab.core.diffusion import q_posterior_mean_variance
from ddpmlab.models.preconditioning import GaussianPreconditioner
from ddpmlab.core.schedule import NoiseSchedule
from ddpmlab.core.utils import DDPMLabError, extract

MEAN_TYPES = ("previous_x", "x0", "epsilon", "v")
VAR_TYPES = ("fixed_small", "fixed_large", "learned", "learned_range")


def predict_x0_from_eps(schedule: NoiseSchedule, x_t, t, eps):
    """x_0 = (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t)   (inverting eq. 4)."""
    return extract(schedule.sqrt_recip_alphas_cumprod, t, x_t) * x_t - extract(
        schedule.sqrt_recipm1_alphas_cumprod, t, x_t) * eps


def predict_eps_from_x0(schedule: NoiseSchedule, x_t, t, x0):
    """eps = (x_t - sqrt(abar_t) x_0) / sqrt(1 - abar_t)."""
    return (extract(schedule.sqrt_recip_alphas_cumprod, t, x_t) * x_t - x0) / extract(
        schedule.sqrt_recipm1_alphas_cumprod, t, x_t)


def predict_x0_from_v(schedule: NoiseSchedule, x_t, t, v):
    """x_0 = sqrt(abar_t) x_t - sqrt(1 - abar_t) v."""
    return extract(schedule.sqrt_alphas_cumprod, t, x_t) * x_t - extract(
        schedule.sqrt_one_minus_alphas_cumprod, t, x_t) * v


def v_target(schedule: NoiseSchedule, x0, t, eps):
    """v = sqrt(abar_t) eps - sqrt(1 - abar_t) x_0."""
    return extract(schedule.sqrt_alphas_cumprod, t, x0) * eps - extract(
        schedule.sqrt_one_minus_alphas_cumprod, t, x0) * x0


def predict_x0_from_posterior_mean(schedule: NoiseSchedule, x_t, t, mean):
    """Invert mu = coef1_t x_0 + coef2_t x_t (eq. 7): the x_0 a reverse mean implies."""
    return (mean - extract(schedule.posterior_mean_coef2, t, x_t) * x_t) / extract(
        schedule.posterior_mean_coef1, t, x_t)


class GaussianDiffusion:
    """Reverse-step parameterisation for one schedule, one mean type and one variance type."""

    def __init__(self, schedule: NoiseSchedule, mean_type: str = "epsilon", var_type: str = "fixed_small"):
        if mean_type not in MEAN_TYPES:
            raise DDPMLabError(f"unknown mean type {mean_type!r}; choose one of {', '.join(MEAN_TYPES)}")
        if var_type not in VAR_TYPES:
            raise DDPMLabError(f"unknown variance type {var_type!r}; choose one of {', '.join(VAR_TYPES)}")
        self.schedule, self.mean_type, self.var_type = schedule, mean_type, var_type
        s = schedule
        # fixed_large uses beta_t, with beta-tilde_2 at t = 1 so that the decoder has a sane variance
        large = torch.cat([s.betas[:1], s.posterior_variance[2:3] if s.T >= 2 else s.betas[1:2], s.betas[2:]])
        self._fixed = {"fixed_small": s.posterior_log_variance_clipped, "fixed_large": torch.log(large.clamp_min(1e-300))}

    @property
    def learned_variance(self) -> bool:
        return self.var_type in ("learned", "learned_range")

    def output_channels(self, channels: int) -> int:
        """Network output channels (dimension 1) for data with ``channels`` channels."""
        return 2 * channels if self.learned_variance else channels

    def split_output(self, out: torch.Tensor):
        """(mean head, variance head or None)."""
        if not self.learned_variance:
            return out, None
        return torch.chunk(out, 2, dim=1)

    def log_variance(self, var_head, x_t, t):
        """log sigma_t^2 of p(x_{t-1} | x_t), shaped like x_t."""
        s = self.schedule
        if self.var_type == "learned":
            return var_head
        if self.var_type == "learned_range":
            frac = (var_head + 1) / 2
            return frac * extract(torch.log(s.betas.clamp_min(1e-300)), t, x_t) + (1 - frac) * extract(
                s.posterior_log_variance_clipped, t, x_t)
        return extract(self._fixed[self.var_type], t, x_t).expand_as(x_t)

    def pred_x0(self, mean_head, x_t, t):
        s = self.schedule
        if self.mean_type == "epsilon":
            return predict_x0_from_eps(s, x_t, t, mean_head)
        if self.mean_type == "x0":
            return mean_head
        if self.mean_type == "v":
            return predict_x0_from_v(s, x_t, t, mean_head)
        return predict_x0_from_posterior_mean(s, x_t, t, mean_head)

    def p_mean_variance(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> dict:
        """Mean, variance, log-variance of p(x_{t-1} | x_t) and the implied x_0 and eps   (eq. 1, 7, 11)."""
        mean_head, var_head = self.split_output(out)
        log_var = self.log_variance(var_head, x_t, t)
        pred_x0 = self.pred_x0(mean_head, x_t, t)
        if self.mean_type == "previous_x":
            mean = mean_head
        else:
            mean, _, _ = q_posterior_mean_variance(self.schedule, pred_x0, x_t, t)
        eps = mean_head if self.mean_type == "epsilon" else predict_eps_from_x0(self.schedule, x_t, t, pred_x0)
        return {"mean": mean, "variance": log_var.exp(), "log_variance": log_var, "pred_x0": pred_x0,
                "pred_eps": eps}

    def mean_target(self, x0, x_t, t, eps):
        """What the mean head should output for the simple loss."""
        if self.mean_type == "epsilon":
            return eps
        if self.mean_type == "x0":
            return x0
        if self.mean_type == "v":
            return v_target(self.schedule, x0, t, eps)
        return q_posterior_mean_variance(self.schedule, x0, x_t, t)[0]


class DiffusionModel(nn.Module):
    """A network plus its parameterisation: the reverse-process model samplers and evaluators use.

    ``net(x, tau)`` maps data (B, *dims) and network time tau (B,) in (0, 1] to the output described
    by ``GaussianDiffusion``; with ``precond`` (``ddpmlab.models.preconditioning``) the network sees the
    scaled input and predicts the normalised residual around the data's Gaussian fit instead.
    """

    def __init__(self, net: nn.Module, diffusion: GaussianDiffusion, data_shape: tuple,
                 precond: GaussianPreconditioner | None = None):
        super().__init__()
        self.net = net
        self.diffusion = diffusion
        self.data_shape = tuple(data_shape)
        self.precond = precond  # None: the network's output is the mean head itself

    @property
    def schedule(self) -> NoiseSchedule:
        return self.diffusion.schedule

    def net_out(self, x: torch.Tensor, tau: torch.Tensor, alpha_bar) -> torch.Tensor:
        """The network's output at network time tau, preconditioned when the model is (``alpha_bar``:
        a per-example tensor broadcastable against x, or a float; unused otherwise)."""
        if self.precond is None:
            return self.net(x, tau)
        out = self.net(self.precond.scale_input(x, alpha_bar), tau)
        head, var_head = self.diffusion.split_output(out)
        head = self.precond.mean_head(head, x, alpha_bar)
        return head if var_head is None else torch.cat([head, var_head], dim=1)

    def forward_out(self, x_t, t):
        alpha_bar = extract(self.schedule.alphas_cumprod, t, x_t) if self.precond is not None else None
        return self.net_out(x_t, self.schedule.model_time(t).to(x_t.device), alpha_bar)

    def p_mean_variance_full(self, x_t, t) -> dict:
        return self.diffusion.p_mean_variance(self.forward_out(x_t, t), x_t, t)

    def p_mean_variance(self, x_t, t):
        """Mean and variance of p(x_{t-1} | x_t)."""
        d = self.p_mean_variance_full(x_t, t)
        return d["mean"], d["variance"]

    def eps_continuous(self, x: torch.Tensor, t: float, alpha_bar: float) -> torch.Tensor:
        """The network's noise prediction at continuous step t (a float in [0, T]) where the schedule's
        alpha-bar is ``alpha_bar``: what the probability-flow ODE needs between the grid's steps."""
        if self.diffusion.mean_type == "previous_x":
            raise DDPMLabError("a model that predicts x_{t-1} has no noise prediction between steps")
        tau = self.schedule.model_time(torch.full((x.shape[0],), float(t), dtype=torch.float64))
        head, _ = self.diffusion.split_output(self.net_out(x, tau.to(x.device), alpha_bar))
        a, b = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
        if self.diffusion.mean_type == "epsilon":
            return head
        if self.diffusion.mean_type == "x0":
            return (x - a * head) / b
        return b * x + a * head  # v: eps = sqrt(1 - abar) x + sqrt(abar) v

    def predict_x0_eps(self, x_t, t):
        d = self.p_mean_variance_full(x_t, t)
        return d["pred_x0"], d["pred_eps"]

    def respaced(self, num_steps: int) -> "DiffusionModel":
        """The same network on ``num_steps`` evenly kept steps (new betas from the kept alpha-bars)."""
        sched = self.schedule.spaced(num_steps)
        if sched is self.schedule:
            return self
        if self.diffusion.mean_type == "previous_x":
            raise DDPMLabError("a model that predicts x_{t-1} directly cannot be respaced; use ddim or ode")
        return DiffusionModel(self.net, GaussianDiffusion(sched, self.diffusion.mean_type, self.diffusion.var_type),
                              self.data_shape, self.precond)


def model_predict_x0_eps(model, x_t, t):
    """x_0 and eps implied by any reverse model (``predict_x0_eps`` if it has one, else from its mean)."""
    if hasattr(model, "predict_x0_eps"):
        return model.predict_x0_eps(x_t, t)
    mean, _ = model.p_mean_variance(x_t, t)
    x0 = predict_x0_from_posterior_mean(model.schedule, x_t, t, mean)
    return x0, predict_eps_from_x0(model.schedule, x_t, t, x0)



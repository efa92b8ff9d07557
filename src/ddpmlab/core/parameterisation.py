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

import torch

from ddpmlab.core.contract import PMeanVariance
from ddpmlab.core.diffusion import q_posterior_mean_variance
from ddpmlab.core.registry import Registry
from ddpmlab.core.schedule import NoiseSchedule
from ddpmlab.core.utils import extract

MEAN_TYPES = Registry("mean type")  # name -> x_0 implied by the mean head: f(schedule, x_t, t, head)
VAR_TYPES = Registry("variance type")  # name -> log sigma^2: f(diffusion, var_head, x_t, t)
LEARNED_VAR_TYPES = ("learned", "learned_range")  # those with a variance head: twice the output channels


def output_channels(var_type: str, channels: int) -> int:
    """Network output channels (dimension 1) for data with ``channels`` channels under ``var_type``."""
    return 2 * channels if var_type in LEARNED_VAR_TYPES else channels


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


MEAN_TYPES.register("previous_x", predict_x0_from_posterior_mean)
MEAN_TYPES.register("x0", lambda schedule, x_t, t, head: head)
MEAN_TYPES.register("epsilon", predict_x0_from_eps)
MEAN_TYPES.register("v", predict_x0_from_v)


def _fixed_log_variance(diffusion, var_head, x_t, t):
    return extract(diffusion._fixed[diffusion.var_type], t, x_t).expand_as(x_t)


def _learned_range_log_variance(diffusion, var_head, x_t, t):
    """log sigma^2 = f log beta_t + (1 - f) log beta-tilde_t with f = (v + 1) / 2 (Nichol & Dhariwal eq. 15)."""
    s = diffusion.schedule
    frac = (var_head + 1) / 2
    return frac * extract(torch.log(s.betas.clamp_min(1e-300)), t, x_t) + (1 - frac) * extract(
        s.posterior_log_variance_clipped, t, x_t)


VAR_TYPES.register("fixed_small", _fixed_log_variance)
VAR_TYPES.register("fixed_large", _fixed_log_variance)
VAR_TYPES.register("learned", lambda diffusion, var_head, x_t, t: var_head)
VAR_TYPES.register("learned_range", _learned_range_log_variance)


def from_mean_variance(schedule: NoiseSchedule, x_t, t, mean, variance) -> PMeanVariance:
    """The contract's reverse step from a mean and variance alone (x_0 and eps implied by the mean)."""
    x0 = predict_x0_from_posterior_mean(schedule, x_t, t, mean)
    return PMeanVariance(mean, variance, variance.log(), x0, predict_eps_from_x0(schedule, x_t, t, x0))


class GaussianDiffusion:
    """Reverse-step parameterisation for one schedule, one mean type and one variance type."""

    def __init__(self, schedule: NoiseSchedule, mean_type: str = "epsilon", var_type: str = "fixed_small"):
        MEAN_TYPES.get(mean_type), VAR_TYPES.get(var_type)  # one-line errors for unknown names
        self.schedule, self.mean_type, self.var_type = schedule, mean_type, var_type
        s = schedule
        # fixed_large uses beta_t, with beta-tilde_2 at t = 1 so that the decoder has a sane variance
        large = torch.cat([s.betas[:1], s.posterior_variance[2:3] if s.T >= 2 else s.betas[1:2], s.betas[2:]])
        self._fixed = {"fixed_small": s.posterior_log_variance_clipped, "fixed_large": torch.log(large.clamp_min(1e-300))}

    @property
    def learned_variance(self) -> bool:
        return self.var_type in LEARNED_VAR_TYPES

    def output_channels(self, channels: int) -> int:
        """Network output channels (dimension 1) for data with ``channels`` channels."""
        return output_channels(self.var_type, channels)

    def split_output(self, out: torch.Tensor):
        """(mean head, variance head or None)."""
        if not self.learned_variance:
            return out, None
        return torch.chunk(out, 2, dim=1)

    def log_variance(self, var_head, x_t, t):
        """log sigma_t^2 of p(x_{t-1} | x_t), shaped like x_t."""
        return VAR_TYPES.get(self.var_type)(self, var_head, x_t, t)

    def pred_x0(self, mean_head, x_t, t):
        return MEAN_TYPES.get(self.mean_type)(self.schedule, x_t, t, mean_head)

    def p_mean_variance(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> PMeanVariance:
        """Mean, variance, log-variance of p(x_{t-1} | x_t) and the implied x_0 and eps   (eq. 1, 7, 11)."""
        mean_head, var_head = self.split_output(out)
        log_var = self.log_variance(var_head, x_t, t)
        pred_x0 = self.pred_x0(mean_head, x_t, t)
        if self.mean_type == "previous_x":
            mean = mean_head
        else:
            mean, _, _ = q_posterior_mean_variance(self.schedule, pred_x0, x_t, t)
        eps = mean_head if self.mean_type == "epsilon" else predict_eps_from_x0(self.schedule, x_t, t, pred_x0)
        return PMeanVariance(mean, log_var.exp(), log_var, pred_x0, eps)

    def mean_target(self, x0, x_t, t, eps):
        """What the mean head should output for the simple loss."""
        if self.mean_type == "epsilon":
            return eps
        if self.mean_type == "x0":
            return x0
        if self.mean_type == "v":
            return v_target(self.schedule, x0, t, eps)
        return q_posterior_mean_variance(self.schedule, x0, x_t, t)[0]

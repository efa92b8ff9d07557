"""A network's output turned into the reverse step p(x_{t-1} | x_t), on two axes (improved-diffusion's
ModelMeanType x ModelVarType), each a registry of objects that hold their own formulas:

mean type (``MEAN_TYPES``: the mean head predicts)  variance type (``VAR_TYPES``)
- ``previous_x``: mu directly (the seed)        - ``fixed_small``: beta-tilde_t (Ho et al. sec. 3.2)
- ``x0``: x_0, mu from the posterior (eq. 7)    - ``fixed_large``: beta_t
- ``epsilon``: the noise (eq. 11)               - ``learned``: log sigma^2 from a second head
- ``v``: sqrt(abar) eps - sqrt(1-abar) x_0      - ``learned_range``: log sigma^2 = f log beta_t
  (Salimans & Ho 2022)                            + (1 - f) log beta-tilde_t (Nichol & Dhariwal eq. 15)

A ``MeanType`` answers everything that depends on what the head predicts: the x_0 and eps it implies,
the reverse mean, the simple loss's target, the eps at any noise level (the probability-flow ODE's) and
the head's coefficients under Gaussian-fit preconditioning. A new mean type is one subclass and one
``MEAN_TYPES.register``; one whose head is affine in x_t and the noise needs only that affine map
(``AffineMeanType``). A ``VarType`` gives log sigma^2 and the network's output channels: learned
variances double the output along dimension 1, (B, 2D) for flat data, (B, 2C, H, W) for images.

Both are stateless registry objects (``ddpmlab.core.mean_types``, ``ddpmlab.core.var_types``), looked
up once by name (``GaussianDiffusion``, here); the name is what a run records. Throughout, t are paper
steps (B,), a = sqrt(abar_t) and s = sqrt(1 - abar_t), so that x_t = a x_0 + s eps (eq. 4).
"""
from __future__ import annotations

import torch

from ddpmlab.core.contract import PMeanVariance
from ddpmlab.core.mean_types import (MEAN_TYPES, MeanType, predict_eps_from_x0,
                                     predict_x0_from_posterior_mean)
from ddpmlab.core.schedule import NoiseSchedule
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.core.var_types import VAR_TYPES, VarType


def from_mean_variance(schedule: NoiseSchedule, x_t, t, mean, variance) -> PMeanVariance:
    """The contract's reverse step from a mean and variance alone (x_0 and eps implied by the mean)."""
    x0 = predict_x0_from_posterior_mean(schedule, x_t, t, mean)
    return PMeanVariance(mean, variance, variance.log(), x0, predict_eps_from_x0(schedule, x_t, t, x0))


class GaussianDiffusion:
    """Reverse-step parameterisation for one schedule, one mean type and one variance type, given by
    their registered names (``mean_type``, ``var_type``, what a run records) and looked up once
    (``mean_kind``, ``var_kind``, which hold the formulas)."""

    def __init__(self, schedule: NoiseSchedule, mean_type: str = "epsilon", var_type: str = "fixed_small"):
        self.mean_kind, self.var_kind = MEAN_TYPES.get(mean_type), VAR_TYPES.get(var_type)  # one-line errors
        for name, kind, cls in ((mean_type, self.mean_kind, MeanType), (var_type, self.var_kind, VarType)):
            if not isinstance(kind, cls):
                raise DDPMLabError(f"{name!r} is registered as a {type(kind).__name__}, not a dl.{cls.__name__}; "
                                   f"register an instance of a {cls.__name__} subclass")
        self.schedule, self.mean_type, self.var_type = schedule, mean_type, var_type
        self._fixed_log_variance = self.var_kind.fixed_log_variance(schedule)

    def output_channels(self, channels: int) -> int:
        """Network output channels (dimension 1) for data with ``channels`` channels."""
        return self.var_kind.output_channels(channels)

    def split_output(self, out: torch.Tensor):
        """(mean head, variance head or None)."""
        if not self.var_kind.learned:
            return out, None
        return torch.chunk(out, 2, dim=1)

    def log_variance(self, var_head, x_t, t):
        """log sigma_t^2 of p(x_{t-1} | x_t), shaped like x_t."""
        return self.var_kind.log_variance(self.schedule, var_head, x_t, t, self._fixed_log_variance)

    def p_mean_variance(self, out: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> PMeanVariance:
        """Mean, variance, log-variance of p(x_{t-1} | x_t) and the implied x_0 and eps   (eq. 1, 7, 11)."""
        mean_head, var_head = self.split_output(out)
        log_var = self.log_variance(var_head, x_t, t)
        kind, s = self.mean_kind, self.schedule
        pred_x0 = kind.pred_x0(s, x_t, t, mean_head)
        mean = kind.p_mean(s, x_t, t, mean_head, pred_x0)
        eps = kind.pred_eps(s, x_t, t, mean_head, pred_x0)
        return PMeanVariance(mean, log_var.exp(), log_var, pred_x0, eps)

    def mean_target(self, x0, x_t, t, eps):
        """What the mean head should output for the simple loss."""
        return self.mean_kind.target(self.schedule, x0, x_t, t, eps)

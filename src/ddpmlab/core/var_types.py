"""The variance of p(x_{t-1} | x_t) (the second axis of ``ddpmlab.core.parameterisation``'s table):
``VAR_TYPES`` maps a name to a ``VarType``, which gives log sigma^2 and the network's output channels.
"""
from __future__ import annotations

import torch

from ddpmlab.core.registry import Registry
from ddpmlab.core.schedule import NoiseSchedule
from ddpmlab.core.shared import Shared
from ddpmlab.core.utils import extract

VAR_TYPES = Registry("variance type")  # name -> VarType


# -- variance types -----------------------------------------------------------------------------------
class VarType(Shared):
    """The variance of p(x_{t-1} | x_t): fixed per step, or from a second head (``learned``)."""

    learned = False  # a variance head: the network outputs twice the data's channels

    def output_channels(self, channels: int) -> int:
        """Network output channels (dimension 1) for data with ``channels`` channels."""
        return 2 * channels if self.learned else channels

    def fixed_log_variance(self, schedule: NoiseSchedule):
        """log sigma_t^2 at every step (T + 1,), or None for a learned variance."""
        return None

    def log_variance(self, schedule: NoiseSchedule, var_head, x_t, t, fixed=None):
        """log sigma_t^2 of p(x_{t-1} | x_t), shaped like x_t; ``fixed`` is ``fixed_log_variance(schedule)``
        when the caller keeps it."""
        return extract(self.fixed_log_variance(schedule) if fixed is None else fixed, t, x_t).expand_as(x_t)


class FixedSmall(VarType):
    """beta-tilde_t, the posterior's variance (Ho et al. sec. 3.2), clipped at t = 1."""

    def fixed_log_variance(self, schedule):
        return schedule.posterior_log_variance_clipped


class FixedLarge(VarType):
    """beta_t, with beta-tilde_2 at t = 1 so that the decoder has a sane variance (improved-diffusion)."""

    def fixed_log_variance(self, s):
        large = torch.cat([s.betas[:1], s.posterior_variance[2:3] if s.T >= 2 else s.betas[1:2], s.betas[2:]])
        return torch.log(large.clamp_min(1e-300))


class Learned(VarType):
    """log sigma^2 is the variance head itself."""

    learned = True

    def log_variance(self, schedule, var_head, x_t, t, fixed=None):
        return var_head


class LearnedRange(VarType):
    """log sigma^2 = f log beta_t + (1 - f) log beta-tilde_t with f = (v + 1) / 2 for the variance head v
    (Nichol & Dhariwal eq. 15)."""

    learned = True

    def log_variance(self, schedule, var_head, x_t, t, fixed=None):
        frac = (var_head + 1) / 2
        return frac * extract(torch.log(schedule.betas.clamp_min(1e-300)), t, x_t) + (1 - frac) * extract(
            schedule.posterior_log_variance_clipped, t, x_t)


VAR_TYPES.register("fixed_small", FixedSmall())
VAR_TYPES.register("fixed_large", FixedLarge())
VAR_TYPES.register("learned", Learned())
VAR_TYPES.register("learned_range", LearnedRange())


def output_channels(var_type: str, channels: int) -> int:
    """Network output channels (dimension 1) for data with ``channels`` channels under ``var_type``."""
    return VAR_TYPES.get(var_type).output_channels(channels)

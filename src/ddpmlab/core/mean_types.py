"""What a model's mean head predicts (the first axis of ``ddpmlab.core.parameterisation``'s table):
``MEAN_TYPES`` maps a name to a ``MeanType``, which holds every formula that depends on the head, and
the closed-form conversions between x_0, eps and v that they share. Throughout, t are paper steps (B,),
a = sqrt(abar_t) and s = sqrt(1 - abar_t), so that x_t = a x_0 + s eps (eq. 4).
"""
from __future__ import annotations

import math

from ddpmlab.core.diffusion import q_posterior_mean_variance
from ddpmlab.core.registry import Registry
from ddpmlab.core.schedule import NoiseSchedule
from ddpmlab.core.shared import Shared
from ddpmlab.core.utils import extract

MEAN_TYPES = Registry("mean type")  # name -> MeanType


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


# -- mean types ---------------------------------------------------------------------------------------
class MeanType(Shared):
    """What a model's mean head predicts, and every formula that depends on it. Subclass it, fill in the
    methods your flags promise, and register one instance: ``MEAN_TYPES.register("name", MyType())``."""

    # the head means the same at every noise level, not only at the grid's steps: a noise prediction
    # between steps (``eps_continuous``: the probability-flow ODE, the score) and respaced grids
    continuous_time = False
    supports_precondition = False  # ``precondition`` gives the head's affine map (``models.preconditioning``)
    x0_divides_by_sqrt_abar = False  # x_0 is recovered as (...) / sqrt(abar): float32 loses it as abar_T -> 0

    def pred_x0(self, schedule: NoiseSchedule, x_t, t, head):
        """The x_0 that the head implies at steps t."""
        raise NotImplementedError

    def pred_eps(self, schedule: NoiseSchedule, x_t, t, head, x0=None):
        """The noise that the head implies; ``x0`` is its ``pred_x0`` when already computed."""
        return predict_eps_from_x0(schedule, x_t, t, self.pred_x0(schedule, x_t, t, head) if x0 is None else x0)

    def p_mean(self, schedule: NoiseSchedule, x_t, t, head, x0):
        """The mean of p(x_{t-1} | x_t): q's posterior mean at the implied x_0 ``x0`` (eq. 7)."""
        return q_posterior_mean_variance(schedule, x0, x_t, t)[0]

    def target(self, schedule: NoiseSchedule, x0, x_t, t, eps):
        """What the head should output for the simple loss (eq. 14's target), with x_t = a x_0 + s eps."""
        raise NotImplementedError

    def eps_continuous(self, x_t, head, alpha_bar: float):
        """The noise the head implies at noise level ``alpha_bar`` (a float), between the grid's steps."""
        raise NotImplementedError

    def precondition(self, a, s, m, S, r_inv):
        """(k_x, b_x, c_out) of the preconditioned head = k_x x_t + b_x + c_out F at a = sqrt(abar), s =
        sqrt(1 - abar) (floats or tensors), for data of scalar mean m and standard deviation S, with
        r^2 = a^2 S^2 + s^2: the head's Gaussian-fit answer and its residual scale."""
        raise NotImplementedError


class AffineMeanType(MeanType):
    """A head that is affine in x_t and the noise at each noise level: head = u x_t + w eps, with
    (u, w) = ``head_coefficients(a, s)`` (floats or tensors). Every formula follows from u and w:
    eps = (head - u x_t) / w, x_0 = (x_t - s eps) / a, the target u x_t + w eps, and, since under the
    Gaussian fit E[eps | x_t] = s c / r^2 with c = x_t - a m and a residual spread a S / r, the
    preconditioned head k_x = u + w s / r^2, b_x = -w s a m / r^2, c_out = |w| a S / r.
    (epsilon is (0, 1), x0 (1 / a, -s / a), v (-s / a, 1 / a).)"""

    continuous_time = supports_precondition = x0_divides_by_sqrt_abar = True

    def head_coefficients(self, a, s):
        """(u, w) with head = u x_t + w eps."""
        raise NotImplementedError

    def _at_steps(self, schedule: NoiseSchedule, t, x):
        return self.head_coefficients(extract(schedule.sqrt_alphas_cumprod, t, x),
                                      extract(schedule.sqrt_one_minus_alphas_cumprod, t, x))

    def pred_eps(self, schedule, x_t, t, head, x0=None):
        u, w = self._at_steps(schedule, t, x_t)
        return (head - u * x_t) / w

    def pred_x0(self, schedule, x_t, t, head):
        return predict_x0_from_eps(schedule, x_t, t, self.pred_eps(schedule, x_t, t, head))

    def target(self, schedule, x0, x_t, t, eps):
        u, w = self._at_steps(schedule, t, x_t)
        return u * x_t + w * eps

    def eps_continuous(self, x_t, head, alpha_bar: float):
        u, w = self.head_coefficients(math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar))
        return (head - u * x_t) / w

    def precondition(self, a, s, m, S, r_inv):
        u, w = self.head_coefficients(a, s)
        k_eps = w * s * r_inv * r_inv
        return u + k_eps, -k_eps * (a * m), abs(w) * a * S * r_inv


class PreviousX(MeanType):
    """The head is mu, the mean of p(x_{t-1} | x_t) itself (the seed's): it belongs to the step pair
    (t - 1, t), so it means nothing between the grid's steps or on a respaced grid."""

    def pred_x0(self, schedule, x_t, t, head):
        return predict_x0_from_posterior_mean(schedule, x_t, t, head)

    def p_mean(self, schedule, x_t, t, head, x0):
        return head

    def target(self, schedule, x0, x_t, t, eps):
        return q_posterior_mean_variance(schedule, x0, x_t, t)[0]


class X0(AffineMeanType):
    """The head is x_0: head = (x_t - s eps) / a."""

    x0_divides_by_sqrt_abar = False
    pred_eps = MeanType.pred_eps  # from x_0 by the schedule's tables

    def head_coefficients(self, a, s):
        return 1 / a, -s / a

    def pred_x0(self, schedule, x_t, t, head):
        return head

    def target(self, schedule, x0, x_t, t, eps):
        return x0

    def eps_continuous(self, x_t, head, alpha_bar: float):
        return (x_t - math.sqrt(alpha_bar) * head) / math.sqrt(1.0 - alpha_bar)

    def precondition(self, a, s, m, S, r_inv):
        k_x = a * S * S * (r_inv * r_inv)
        return k_x, m - k_x * (a * m), s * S * r_inv


class Epsilon(AffineMeanType):
    """The head is the noise eps (Ho et al. eq. 11)."""

    def head_coefficients(self, a, s):
        return 0.0, 1.0

    def pred_eps(self, schedule, x_t, t, head, x0=None):
        return head

    def pred_x0(self, schedule, x_t, t, head):
        return predict_x0_from_eps(schedule, x_t, t, head)

    def target(self, schedule, x0, x_t, t, eps):
        return eps

    def eps_continuous(self, x_t, head, alpha_bar: float):
        return head

    def precondition(self, a, s, m, S, r_inv):
        k_x = s * (r_inv * r_inv)
        return k_x, -k_x * (a * m), a * S * r_inv


class V(AffineMeanType):
    """The head is v = a eps - s x_0 = (eps - s x_t) / a (Salimans & Ho 2022)."""

    x0_divides_by_sqrt_abar = False
    pred_eps = MeanType.pred_eps  # from the implied x_0 by the schedule's tables

    def head_coefficients(self, a, s):
        return -s / a, 1 / a

    def pred_x0(self, schedule, x_t, t, head):
        return predict_x0_from_v(schedule, x_t, t, head)

    def target(self, schedule, x0, x_t, t, eps):
        return v_target(schedule, x0, t, eps)

    def eps_continuous(self, x_t, head, alpha_bar: float):
        return math.sqrt(1.0 - alpha_bar) * x_t + math.sqrt(alpha_bar) * head  # eps = s x_t + a v

    def precondition(self, a, s, m, S, r_inv):
        k_x = a * s * (1 - S * S) * (r_inv * r_inv)
        return k_x, -k_x * (a * m) - s * m, S * r_inv


MEAN_TYPES.register("previous_x", PreviousX())
MEAN_TYPES.register("x0", X0())
MEAN_TYPES.register("epsilon", Epsilon())
MEAN_TYPES.register("v", V())


def mean_types_with(flag: str) -> tuple[str, ...]:
    """The registered mean types whose ``flag`` (``supports_precondition``, ...) is set."""
    return tuple(name for name in MEAN_TYPES if getattr(MEAN_TYPES.get(name), flag))

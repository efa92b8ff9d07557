"""Preconditioning of the mean head by the data's best Gaussian fit (Karras et al. 2022, sec. 5 and
Table 1, written for the variance-preserving process).

With x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps and data of scalar mean m and standard deviation S, the
Gaussian fit gives q(x_t) variance r^2 = abar S^2 + 1 - abar and, with c = x_t - sqrt(abar) m,

    E[eps | x_t] = sqrt(1 - abar) c / r^2,      E[x_0 | x_t] = m + sqrt(abar) S^2 c / r^2.

The network sees c / r (unit variance at every step) and predicts the normalised residual F of its
target around that Gaussian answer:

    eps = sqrt(1 - abar) c / r^2 + (sqrt(abar) S / r) F
    x_0 = m + sqrt(abar) S^2 c / r^2 + (sqrt(1 - abar) S / r) F
    v   = sqrt(abar) eps_G - sqrt(1 - abar) x0_G + (S / r) F

(the scales are the residuals' standard deviations under the Gaussian fit). Each mean type holds its
own line of this table (``MeanType.precondition``, in ``ddpmlab.core.mean_types``); any head
affine in x_t and eps has one (``AffineMeanType``). A zero network is then the
exact reverse process of Gaussian data, and at high noise, where q(x_t) is nearly Gaussian, the eps a
sampler integrates is right by construction instead of through a learned identity map: what makes
the deterministic samplers (DDIM, the probability-flow ODE) accurate with few steps.

The simple loss of a preconditioned model is the squared error of F itself (the target's error divided
by the scale): Karras et al.'s loss weight lambda = 1 / c_out^2, which trains every step to the same
relative accuracy. Unweighted, the high-noise steps, where c_out is small, get almost no gradient, yet
the ODE amplifies their errors most.

Both maps are affine in x_t at each step: input = k_in x_t + b_in and head = k_x x_t + b_x + c_out F
(``coefficients``). A model evaluates them from a table of the five per step (``step_table``), one
gather a batch, or from five Python floats when every row is at one step.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ddpmlab.core.mean_types import MeanType
from ddpmlab.core.utils import DDPMLabError


class GaussianFit(nn.Module):
    """The data's scalar mean and standard deviation (buffers, saved with the weights), set once by
    ``set_moments`` (the trainer's) or by loading saved weights: what a preconditioner's maps use."""

    def __init__(self):
        super().__init__()
        self.register_buffer("data_mean", torch.zeros(()))
        self.register_buffer("data_std", torch.ones(()))
        self._moments_set = False

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "data_mean" in state_dict:
            self._moments_set = True

    @property
    def moments_set(self) -> bool:
        return self._moments_set

    def check_moments(self) -> None:
        if not self._moments_set:
            raise DDPMLabError("a preconditioned model needs the data's mean and standard deviation: pass "
                               "data_moments=(mean, std) to the model, or train it with ddpmlab.Trainer")

    @torch.no_grad()
    def set_moments(self, mean: float, std: float) -> None:
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise DDPMLabError(f"model.precondition needs data with a finite, positive spread; "
                               f"got mean {mean}, standard deviation {std}")
        self.data_mean.fill_(float(mean))
        self.data_std.fill_(float(std))
        self._moments_set = True


class GaussianPreconditioner(GaussianFit):
    """The maps above on the variance-preserving process, for a mean type that supports them
    (``mean_kind.supports_precondition``: eps, x_0, v or your own affine head).

    ``alpha_bar`` is a tensor broadcastable against x_t (per example) or a float (one step for all).
    ``coefficients`` are the maps' (k_in, b_in, k_x, b_x, c_out); the methods below take them too.
    """

    def __init__(self, mean_kind: MeanType):
        super().__init__()
        self.mean_kind = mean_kind
        self._table = None  # (key, table) of the last ``step_table``

    def coefficients(self, alpha_bar, like: torch.Tensor | None = None):
        """(k_in, b_in, k_x, b_x, c_out) at noise level ``alpha_bar``: Python floats for a float, else
        tensors shaped like it (in ``like``'s dtype and device).

        With a = sqrt(abar), s = sqrt(1 - abar), r^2 = abar S^2 + 1 - abar and c = x_t - a m:
        input c / r; the head's (k_x, b_x, c_out) from the mean type (``MeanType.precondition``), e.g.
        eps = s c / r^2 + (a S / r) F, x_0 = m + a S^2 c / r^2 + (s S / r) F,
        v = a s (1 - S^2) c / r^2 - s m + (S / r) F."""
        m, S = float(self.data_mean), float(self.data_std)
        if isinstance(alpha_bar, float):
            a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
            r_inv = 1.0 / math.sqrt(1.0 + alpha_bar * (S * S - 1.0))
        else:
            ab = torch.as_tensor(alpha_bar, dtype=like.dtype if like is not None else None,
                                 device=like.device if like is not None else None)
            a, s = ab.sqrt(), (1 - ab).sqrt()
            r_inv = (1 + ab * (S * S - 1)).rsqrt()
        k_x, b_x, c_out = self.mean_kind.precondition(a, s, m, S, r_inv)
        return r_inv, -r_inv * (a * m), k_x, b_x, c_out

    def step_table(self, alphas_cumprod: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """The coefficients at every step of a schedule, (T + 1, 5) in ``like``'s dtype and device:
        computed in float64 once for these moments and kept."""
        key = (alphas_cumprod, float(self.data_mean), float(self.data_std), like.dtype, like.device)
        if self._table is None or self._table[0][0] is not alphas_cumprod or self._table[0][1:] != key[1:]:
            coef = self.coefficients(alphas_cumprod.double())
            self._table = (key, torch.stack(coef, dim=1).to(like.dtype).to(like.device))
        return self._table[1]

    def _coefficients(self, x_t, alpha_bar, coef):
        return coef if coef is not None else self.coefficients(alpha_bar, x_t)

    def scale_input(self, x_t: torch.Tensor, alpha_bar=None, coef=None) -> torch.Tensor:
        """c / r: the network's input, unit variance at every step under the Gaussian fit."""
        k_in, b_in, *_ = self._coefficients(x_t, alpha_bar, coef)
        return affine(x_t, k_in, b_in)

    def residual_target(self, target: torch.Tensor, x_t: torch.Tensor, alpha_bar=None, coef=None) -> torch.Tensor:
        """(target - k_x x_t - b_x) / c_out: the normalised residual F that makes the mean head equal
        ``target`` (the mean type's). The simple loss is F's squared error against it."""
        _, _, k_x, b_x, c_out = self._coefficients(x_t, alpha_bar, coef)
        return (target - affine(x_t, k_x, b_x)) / c_out

    def mean_head(self, F: torch.Tensor, x_t: torch.Tensor, alpha_bar=None, coef=None) -> torch.Tensor:
        """The mean head's prediction (eps, x_0, v, ...) from the network's normalised residual F."""
        _, _, k_x, b_x, c_out = self._coefficients(x_t, alpha_bar, coef)
        if isinstance(c_out, torch.Tensor):
            return torch.addcmul(affine(x_t, k_x, b_x), F, c_out)
        return affine(x_t, k_x, b_x) + F * c_out


def affine(x: torch.Tensor, k, b) -> torch.Tensor:
    """k x + b, in one op for tensor coefficients."""
    return torch.addcmul(b, x, k) if isinstance(k, torch.Tensor) else x * k + b


class VelocityPreconditioner(GaussianFit):
    """The same preconditioning for a velocity model on a path x_t = alpha(t) x_0 + sigma(t) eps whose
    target is u = alpha' x_0 + sigma' eps (flow matching's eps - x_0 on the linear path). Under the
    Gaussian fit, with r^2 = alpha^2 S^2 + sigma^2 and c = x_t - alpha m,

        E[u | x_t] = alpha' m + (alpha' alpha S^2 + sigma' sigma) c / r^2,
        Var[u | x_t] = S^2 (alpha' sigma - sigma' alpha)^2 / r^2     (S^2 / r^2 on the linear path),

    so the network sees c / r and predicts F with u = E[u | x_t] + c_out F, c_out = S |alpha' sigma -
    sigma' alpha| / r: a zero network is the exact velocity field of Gaussian data. ``coefficients(t)``
    are (k_in, b_in, k_x, b_x, c_out) at times t (a tensor broadcastable against the data)."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def coefficients(self, t: torch.Tensor):
        m, S = float(self.data_mean), float(self.data_std)
        p = self.path
        a, s, da, ds = p.alpha(t), p.sigma(t), p.d_alpha(t), p.d_sigma(t)
        r_inv = (a * a * (S * S) + s * s).rsqrt()
        k_x = (da * a * (S * S) + ds * s) * r_inv * r_inv
        c_out = S * (da * s - ds * a).abs() * r_inv
        return r_inv, -r_inv * (a * m), k_x, da * m - k_x * (a * m), c_out

    def scale_input(self, x_t: torch.Tensor, coef) -> torch.Tensor:
        """c / r: the network's input, unit variance at every t under the Gaussian fit."""
        return affine(x_t, coef[0], coef[1])

    def velocity(self, F: torch.Tensor, x_t: torch.Tensor, coef) -> torch.Tensor:
        """E[u | x_t] under the fit plus c_out F."""
        return torch.addcmul(affine(x_t, coef[2], coef[3]), F, coef[4])

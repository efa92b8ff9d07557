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

(the scales are the residuals' standard deviations under the Gaussian fit). A zero network is then the
exact reverse process of Gaussian data, and at high noise, where q(x_t) is nearly Gaussian, the eps a
sampler integrates is right by construction instead of through a learned identity map: what makes
the deterministic samplers (DDIM, the probability-flow ODE) accurate with few steps.

The simple loss of a preconditioned model is the squared error of F itself (the target's error divided
by the scale): Karras et al.'s loss weight lambda = 1 / c_out^2, which trains every step to the same
relative accuracy. Unweighted, the high-noise steps, where c_out is small, get almost no gradient, yet
the ODE amplifies their errors most.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ddpmlab.core.utils import DDPMLabError

PRECONDITIONED_MEAN_TYPES = ("epsilon", "x0", "v")


class GaussianPreconditioner(nn.Module):
    """Scalar data mean and standard deviation (buffers, saved with the weights) and the maps above.

    ``alpha_bar`` is a tensor broadcastable against x_t (per example) or a float (one step for all).
    """

    def __init__(self, mean_type: str):
        super().__init__()
        if mean_type not in PRECONDITIONED_MEAN_TYPES:
            raise ValueError(f"preconditioning needs mean type {' | '.join(PRECONDITIONED_MEAN_TYPES)}, "
                             f"got {mean_type!r}")
        self.mean_type = mean_type
        self.register_buffer("data_mean", torch.zeros(()))
        self.register_buffer("data_std", torch.ones(()))
        self._moments_set = False  # set by ``set_moments`` or by loading saved weights

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if prefix + "data_mean" in state_dict:
            self._moments_set = True

    def check_moments(self) -> None:
        if not self._moments_set:
            raise DDPMLabError("a preconditioned model needs the data's mean and standard deviation: pass "
                               "data_moments=(mean, std) to DiffusionModel, or train it with ddpmlab.Trainer")

    @torch.no_grad()
    def set_moments(self, mean: float, std: float) -> None:
        if not (math.isfinite(mean) and math.isfinite(std) and std > 0):
            raise DDPMLabError(f"model.precondition needs data with a finite, positive spread; "
                               f"got mean {mean}, standard deviation {std}")
        self.data_mean.fill_(float(mean))
        self.data_std.fill_(float(std))
        self._moments_set = True

    def _terms(self, x_t: torch.Tensor, alpha_bar):
        """sqrt(abar), sqrt(1 - abar), S, m, 1 / r and c = x_t - sqrt(abar) m: Python floats where
        ``alpha_bar`` is a float (one step for every row: the per-step scalars once, each big op fused
        with its scalar), else tensors broadcastable against x_t."""
        m, S = float(self.data_mean), float(self.data_std)
        if isinstance(alpha_bar, float):
            a, s = math.sqrt(alpha_bar), math.sqrt(1.0 - alpha_bar)
            r_inv = 1.0 / math.sqrt(1.0 + alpha_bar * (S * S - 1.0))
        else:
            ab = torch.as_tensor(alpha_bar, dtype=x_t.dtype, device=x_t.device)
            a, s = ab.sqrt(), (1 - ab).sqrt()
            r_inv = (1 + ab * (S * S - 1)).rsqrt()  # r^2 = abar S^2 + 1 - abar
        return a, s, S, m, r_inv, x_t - a * m

    def scale_input(self, x_t: torch.Tensor, alpha_bar) -> torch.Tensor:
        """c / r: the network's input, unit variance at every step under the Gaussian fit."""
        *_, r_inv, c = self._terms(x_t, alpha_bar)
        return c * r_inv

    def residual_scale(self, x_t: torch.Tensor, alpha_bar) -> torch.Tensor:
        """c_out: how far a unit of F moves the mean head (sqrt(abar) S / r, sqrt(1 - abar) S / r or S / r)."""
        a, s, S, _, r_inv, _ = self._terms(x_t, alpha_bar)
        scale = {"epsilon": a * S, "x0": s * S, "v": S}[self.mean_type] * r_inv
        return scale.expand_as(x_t) if isinstance(scale, torch.Tensor) else torch.full_like(x_t, scale)

    def mean_head(self, F: torch.Tensor, x_t: torch.Tensor, alpha_bar) -> torch.Tensor:
        """The mean head's prediction (eps, x_0 or v) from the network's normalised residual F."""
        a, s, S, m, r_inv, c = self._terms(x_t, alpha_bar)
        r2_inv = r_inv * r_inv
        if self.mean_type == "epsilon":  # eps_G + (sqrt(abar) S / r) F
            return c * (s * r2_inv) + F * (a * S * r_inv)
        if self.mean_type == "x0":  # x0_G + (sqrt(1 - abar) S / r) F
            return c * (a * S * S * r2_inv) + F * (s * S * r_inv) + m
        # v = sqrt(abar) eps_G - sqrt(1 - abar) x0_G + (S / r) F, eps_G = sqrt(1 - abar) c / r^2 and
        # x0_G = m + sqrt(abar) S^2 c / r^2
        return c * (a * s * (1 - S * S) * r2_inv) + F * (S * r_inv) - s * m

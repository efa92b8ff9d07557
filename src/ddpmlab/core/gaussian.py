"""Gaussian likelihood helpers: pure functions that broadcast over any shape (Ho et al. 2020, eq. 5).

The bound's terms per example, in nats: ``prior_kl_nats`` (L_T) and ``step_term_nats`` (L_{t-1}, or the
decoder -log p(x_0 | x_1) at t = 1), for a reverse step given by its mean and log-variance.
"""
from __future__ import annotations

import math

import torch

from ddpmlab.core.diffusion import q_mean_variance, q_posterior_mean_variance
from ddpmlab.core.utils import sum_flat

LOG_2PI = math.log(2 * math.pi)


def normal_kl(mean1, logvar1, mean2, logvar2):
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)) elementwise, in nats."""
    return 0.5 * (logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2).square() * torch.exp(-logvar2) - 1.0)


def gaussian_log_likelihood(x, mean, log_variance):
    """log N(x; mean, e^log_variance) elementwise: a continuous density, in nats."""
    return -0.5 * (LOG_2PI + log_variance + (x - mean).square() * torch.exp(-log_variance))


def nats_to_bpd(nats, num_dims: int):
    """Nats per data point to bits per dimension."""
    return nats / (num_dims * math.log(2))


def prior_kl_nats(schedule, x0: torch.Tensor) -> torch.Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, I)) per example (B,), nats; no parameters."""
    mean_T, var_T = q_mean_variance(schedule, x0, torch.full((x0.shape[0],), schedule.T))
    return sum_flat(normal_kl(mean_T, var_T.log(), torch.zeros_like(mean_T), torch.zeros_like(var_T)))


def step_term_nats(schedule, x0, x_t, t, mean, log_variance) -> torch.Tensor:
    """One term of eq. 5 per example (B,), nats: KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t)) where
    t >= 2, the decoder -log p(x_0 | x_1) where t = 1; p given by its ``mean`` and ``log_variance``."""
    q_mean, _, q_logvar = q_posterior_mean_variance(schedule, x0, x_t, t)  # clipped log-variance: finite at t = 1
    kl = sum_flat(normal_kl(q_mean, q_logvar, mean, log_variance))
    decoder = -sum_flat(gaussian_log_likelihood(x0, mean, log_variance))
    return torch.where(t == 1, decoder, kl)

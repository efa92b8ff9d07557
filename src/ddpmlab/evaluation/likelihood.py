"""The variational bound as an evaluator, term by term, in nats per data point (Ho et al. 2020, eq. 5).

    L = KL(q(x_T | x_0) || p(x_T))                                      prior term   L_T
      + sum_{t=2}^T KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))       step terms   L_{t-1}
      - log p(x_0 | x_1)                                                decoder term L_0

with p(x_T) = N(0, I), q(x_{t-1} | x_t, x_0) the Gaussian posterior of eq. 6-7 and p(x_{t-1} | x_t)
the model's Gaussian reverse step (any model with ``p_mean_variance``: learned or fixed variance, or
the exact oracle). Each step term is the KL in closed form at one x_t ~ q(x_t | x_0) per step and
data point; the decoder is the continuous Gaussian density (no discretisation: the data are real
numbers). E[L] >= E[-log p(x_0)] >= the entropy of the data. Bits per dimension = nats / (D log 2).

Pure functions broadcast over any shape; per-example terms are summed over the data dimensions.
"""
from __future__ import annotations

import math

import torch

from ddpmlab.core.diffusion import q_mean_variance, q_posterior_mean_variance, q_sample
from ddpmlab.core.utils import sum_flat

LOG_2PI = math.log(2 * math.pi)
TERMS = ("prior_nats", "steps_nats", "decoder_nats")


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


def _model_dtype(model) -> torch.dtype:
    """The dtype a model's inputs should have: its parameters' (a network), else float64 (the oracle)."""
    params = getattr(model, "parameters", None)
    if callable(params):
        for p in params():
            return p.dtype
    return torch.float64


def _p_mean_logvar(model, x_t: torch.Tensor, t: torch.Tensor):
    """The model's p(x_{t-1} | x_t) as float64 mean and log-variance (its input in its own dtype)."""
    mean, variance = model.p_mean_variance(x_t.to(_model_dtype(model)), t)
    return mean.double(), variance.double().log()


@torch.no_grad()
def vlb_terms(model, x0: torch.Tensor, generator: torch.Generator | None = None,
              max_rows: int = 1 << 18) -> dict:
    """Per-example terms of the bound (eq. 5) for data x0 (B, *dims): a dict of (B,) float64 tensors
    ``prior_nats``, ``steps_nats`` (the sum over t = 2..T), ``decoder_nats`` and ``total_nats``.

    Steps are evaluated in chunks of whole steps, at most ``max_rows`` (step, example) rows at a time.
    """
    sched = model.schedule
    T, B = sched.T, x0.shape[0]
    x0 = x0.double()

    prior = prior_kl_nats(sched, x0)

    steps = torch.zeros(B, dtype=torch.float64)
    chunk = max(1, max_rows // B)
    for start in range(2, T + 1, chunk):
        ts = torch.arange(start, min(start + chunk, T + 1))  # (c,)
        t = ts.repeat_interleave(B)  # (c B,)
        x0_rep = x0.repeat((len(ts),) + (1,) * (x0.dim() - 1))  # (c B, *dims), example fastest
        x_t = q_sample(sched, x0_rep, t, torch.randn(x0_rep.shape, generator=generator, dtype=torch.float64))
        p_mean, p_logvar = _p_mean_logvar(model, x_t, t)
        kl = step_term_nats(sched, x0_rep, x_t, t, p_mean, p_logvar)  # (c B,)
        steps += kl.reshape(len(ts), B).sum(0)

    t1 = torch.ones(B, dtype=torch.long)
    x1 = q_sample(sched, x0, t1, torch.randn(x0.shape, generator=generator, dtype=torch.float64))
    p_mean, p_logvar = _p_mean_logvar(model, x1, t1)
    decoder = step_term_nats(sched, x0, x1, t1, p_mean, p_logvar)
    return {"prior_nats": prior, "steps_nats": steps, "decoder_nats": decoder,
            "total_nats": prior + steps + decoder}


def _mean_se(v: torch.Tensor) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")


@torch.no_grad()
def evaluate_bound(model, sample_x0, n: int, generator: torch.Generator | None = None,
                   batch: int = 10_000) -> dict:
    """The bound on ``n`` fresh data points from ``sample_x0(m, generator) -> (m, *dims)``: the mean and
    standard error of each term and of the total (nats per data point), and the total in bits per
    dimension. Keys: ``<term>`` and ``<term>_se`` for each term and ``total_nats``, plus ``total_bpd``,
    ``total_bpd_se`` and ``n``."""
    parts = {k: [] for k in TERMS + ("total_nats",)}
    done = 0
    while done < n:
        m = min(batch, n - done)
        terms = vlb_terms(model, sample_x0(m, generator), generator)
        for k in parts:
            parts[k].append(terms[k])
        done += m
    out = {}
    for k, vals in parts.items():
        out[k], out[k + "_se"] = _mean_se(torch.cat(vals))
    dims = math.prod(model.data_shape)
    out["total_bpd"] = nats_to_bpd(out["total_nats"], dims)
    out["total_bpd_se"] = nats_to_bpd(out["total_nats_se"], dims)
    out["n"] = int(n)
    return out

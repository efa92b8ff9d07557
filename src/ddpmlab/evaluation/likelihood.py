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

from ddpmlab.core.diffusion import q_sample, q_sample_steps
from ddpmlab.core.gaussian import nats_to_bpd, prior_kl_nats, step_term_nats

TERMS = ("prior_nats", "steps_nats", "decoder_nats")


def reverse_step(model, x_t: torch.Tensor, t: torch.Tensor):
    """The model's p(x_{t-1} | x_t) as float64 mean and log-variance (its input in its own dtype and device)."""
    p = model.p_mean_variance(x_t.to(model.device, model.dtype), t.to(model.device))
    return p.mean.double().cpu(), p.variance.double().cpu().log()


@torch.no_grad()
def vlb_terms_by_step(model, x0: torch.Tensor, generator: torch.Generator | None = None,
                      max_rows: int = 1 << 18) -> dict:
    """Per-example terms of eq. 5 for data x0 (B, *dims): ``prior_nats`` (B,) = L_T and ``step_nats``
    (T, B), row t - 1 holding the term of reverse step t (L_0 the decoder in row 0, L_{t-1} in row t - 1).
    One x_t ~ q(x_t | x_0) per step and example; steps in chunks of at most ``max_rows`` rows."""
    sched = model.schedule
    T, B = sched.T, x0.shape[0]
    x0 = x0.double()
    prior = prior_kl_nats(sched, x0)
    steps = torch.zeros(T, B, dtype=torch.float64)
    for ts, t, x0_rep, x_t in q_sample_steps(sched, x0, 2, max_rows, generator):
        steps[ts - 1] = step_term_nats(sched, x0_rep, x_t, t, *reverse_step(model, x_t, t)).reshape(len(ts), B)
    t1 = torch.ones(B, dtype=torch.long)
    x1 = q_sample(sched, x0, t1, torch.randn(x0.shape, generator=generator, dtype=torch.float64))
    steps[0] = step_term_nats(sched, x0, x1, t1, *reverse_step(model, x1, t1))
    return {"prior_nats": prior, "step_nats": steps}


@torch.no_grad()
def vlb_terms(model, x0: torch.Tensor, generator: torch.Generator | None = None,
              max_rows: int = 1 << 18) -> dict:
    """Per-example terms of the bound (eq. 5) for data x0 (B, *dims): a dict of (B,) float64 tensors
    ``prior_nats``, ``steps_nats`` (the sum over t = 2..T), ``decoder_nats`` and ``total_nats``
    (``vlb_terms_by_step`` summed over the steps)."""
    r = vlb_terms_by_step(model, x0, generator, max_rows)
    steps, decoder = r["step_nats"][1:].sum(0), r["step_nats"][0]
    return {"prior_nats": r["prior_nats"], "steps_nats": steps, "decoder_nats": decoder,
            "total_nats": r["prior_nats"] + steps + decoder}


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

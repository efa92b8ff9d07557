"""Where a model loses nats: its bound's excess over the exact reverse process, step by step.

The bound's term at paper step t (Ho et al. 2020, eq. 5; the decoder at t = 1) holds the model's reverse
step p(x_{t-1} | x_t) = N(mu, sigma^2) only through the cross-entropy -E log p(x_{t-1} | x_t) under
q(x_{t-1} | x_t, x_0); averaged over x_0 given x_t, that is the cross-entropy under q(x_{t-1} | x_t),
which depends on q(x_{t-1} | x_t) only through its mean m* and (diagonal) variance v*. The exact
reverse step of a Gaussian mixture (``MixtureOracle``) is the Gaussian with those moments, so, exactly,

    L_t(model) - L_t(oracle) = E_{x_t ~ q(x_t)} KL(N(m*, v*) || N(mu, sigma^2))                 (excess_t)
                             = E[(m* - mu)^2 / (2 sigma^2)] + E[(v* / sigma^2 - 1 - log(v* / sigma^2)) / 2]
                               (the mean's part)              (the variance's part)

summed over the data dimensions. Every KL is >= 0, so each estimate is too; summed over t = 1..T the
excess is the model's bound minus the oracle's (their prior terms L_T are equal). One x_t per step and
data point, as in ``ddpmlab.evaluation.likelihood.vlb_terms``; nothing assumes 1-D data.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ddpmlab.core.diffusion import q_sample_steps
from ddpmlab.core.utils import sum_flat
from ddpmlab.models.oracle import MixtureOracle


def _moments(model, x_t: torch.Tensor, t: torch.Tensor):
    """Mean and variance of a model's p(x_{t-1} | x_t) in float64 on the CPU (its input in its own dtype)."""
    p = model.p_mean_variance(x_t.to(model.device, model.dtype), t.to(model.device))
    return p.mean.double().cpu(), p.variance.double().cpu()


@torch.no_grad()
def excess_per_step(model, dist, x0: torch.Tensor, generator: torch.Generator | None = None,
                    max_rows: int = 1 << 18) -> dict:
    """The model's excess over the exact reverse process of ``dist`` at every step t = 1..T, for data x0
    (B, *dims): per-example tensors (T, B) ``excess_nats``, ``mean_nats`` and ``variance_nats``
    (index t - 1 holds step t), in nats. Steps are evaluated in chunks of at most ``max_rows`` rows."""
    sched = model.schedule
    oracle = MixtureOracle(dist, sched, model.data_shape)
    T, B = sched.T, x0.shape[0]
    x0 = x0.double().reshape((B,) + tuple(model.data_shape))
    mean_part = torch.empty(T, B, dtype=torch.float64)
    var_part = torch.empty(T, B, dtype=torch.float64)
    for ts, t, x0_rep, x_t in q_sample_steps(sched, x0, 1, max_rows, generator):
        exact_mean, exact_var = _moments(oracle, x_t, t)
        mean, var = _moments(model, x_t, t)
        ratio = exact_var / var
        rows = ts - 1
        mean_part[rows] = sum_flat((exact_mean - mean).square() / (2 * var)).reshape(len(ts), B)
        var_part[rows] = sum_flat(0.5 * (ratio - 1 - ratio.log())).reshape(len(ts), B)
    return {"excess_nats": mean_part + var_part, "mean_nats": mean_part, "variance_nats": var_part}


def smallest_range(per_step, share: float) -> tuple[int, int]:
    """The shortest run of steps (a, b), 1 <= a <= b <= T, holding at least ``share`` of the sum of the
    non-negative ``per_step`` values (index t - 1 holds step t); the earliest such run on ties."""
    v = np.clip(np.asarray(per_step, dtype=np.float64), 0.0, None)
    c = np.concatenate([[0.0], np.cumsum(v)])  # c[b] - c[a - 1] = sum over steps a..b
    target = share * c[-1]
    best = (1, len(v))
    for a in range(1, len(v) + 1):
        b = int(np.searchsorted(c, c[a - 1] + target * (1 - 1e-12), side="left"))
        if b > len(v):
            break
        if b - a < best[1] - best[0]:
            best = (a, max(a, b))
    return best


def diagnose(model, dist, n: int = 2000, generator: torch.Generator | None = None, share: float = 0.75) -> dict:
    """Where ``model`` loses nats against the exact reverse process, on ``n`` fresh data points of ``dist``.

    JSON-ready: ``excess_nats`` (+ ``_se``: the bound's excess over the oracle's, nats per data point),
    ``mean_share`` (the part from the reverse mean), ``range`` (the shortest run of steps [a, b] holding
    ``share`` of the excess; ``range_share`` is what it holds), ``num_steps``, and ``per_step``: lists
    ``excess_nats``, ``mean_nats`` and ``variance_nats`` for t = 1..T.
    """
    x0 = dist.sample(n, generator, dtype=torch.float64)
    parts = excess_per_step(model, dist, x0, generator)
    per_example = parts["excess_nats"].sum(0)  # (B,)
    per_step = {k: v.mean(1) for k, v in parts.items()}  # (T,)
    total = float(per_example.mean())
    a, b = smallest_range(per_step["excess_nats"].numpy(), share)
    held = float(per_step["excess_nats"][a - 1:b].sum())
    return {
        "excess_nats": total,
        "excess_nats_se": float(per_example.std() / math.sqrt(n)),
        "mean_share": float(per_step["mean_nats"].sum()) / total if total > 0 else None,
        "range": [a, b], "range_share": held / total if total > 0 else None, "share": share,
        "num_steps": model.schedule.T, "n": int(n),
        "per_step": {k: [round(float(x), 7) for x in v] for k, v in per_step.items()},
    }

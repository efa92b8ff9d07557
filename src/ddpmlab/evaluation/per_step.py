"""The bound of Ho et al. (2020, eq. 5) term by term, L_0 .. L_T, and the noise-prediction error at each
step: where a model loses its nats.

    L_T     = KL(q(x_T | x_0) || N(0, I))                        the prior (no parameters)
    L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p(x_{t-1} | x_t))      reverse step t = 2..T
    L_0     = -log p(x_0 | x_1)                                   reverse step t = 1 (the decoder)

``likelihood.vlb_terms_by_step`` draws exactly the random numbers ``likelihood.vlb_terms`` draws, in order,
so with the same generator its terms sum, example by example, to ``vlb_terms``' totals, and
``evaluate_bound_by_step`` returns ``likelihood.evaluate_bound``'s numbers plus the mean of each term.

The model is reached through two functions only (``likelihood.reverse_step`` and ``predict_eps``).
"""
from __future__ import annotations

import math

import torch

from ddpmlab.core.diffusion import q_sample
from ddpmlab.core.gaussian import nats_to_bpd
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.evaluation.likelihood import vlb_terms_by_step


def predict_eps(model, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The noise the model predicts in x_t (the contract's ``pred_eps``), float64 on the CPU."""
    return model.p_mean_variance(x_t.to(model.device, model.dtype), t.to(model.device)).pred_eps.double().cpu()


def _mean_se(v: torch.Tensor) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")


@torch.no_grad()
def evaluate_bound_by_step(model, sample_x0, n: int, generator: torch.Generator | None = None,
                           batch: int = 10_000) -> dict:
    """``likelihood.evaluate_bound``'s result (the same numbers for the same generator) plus the mean and
    standard error of every term: ``terms_nats[k]`` = E[L_k] for k = 0..T (so ``sum(terms_nats)`` is
    ``total_nats``) and ``terms_nats_se``."""
    prior, steps = [], []
    done = 0
    while done < n:
        m = min(batch, n - done)
        r = vlb_terms_by_step(model, sample_x0(m, generator), generator)
        prior.append(r["prior_nats"])
        steps.append(r["step_nats"])
        done += m
    prior, steps = torch.cat(prior), torch.cat(steps, 1)  # (n,), (T, n)
    per_example = {"prior_nats": prior, "steps_nats": steps[1:].sum(0), "decoder_nats": steps[0]}
    per_example["total_nats"] = prior + per_example["steps_nats"] + per_example["decoder_nats"]
    out = {}
    for k, v in per_example.items():
        out[k], out[k + "_se"] = _mean_se(v)
    dims = math.prod(model.data_shape)
    out["total_bpd"] = nats_to_bpd(out["total_nats"], dims)
    out["total_bpd_se"] = nats_to_bpd(out["total_nats_se"], dims)
    out["n"] = int(n)
    terms = torch.cat([steps, prior[None]])  # (T + 1, n): L_0 .. L_T
    out["terms_nats"] = terms.mean(1).tolist()
    out["terms_nats_se"] = (terms.std(1) / math.sqrt(n)).tolist() if n > 1 else [float("nan")] * len(terms)
    return out


@torch.no_grad()
def eps_error_by_step(model, oracle, x0: torch.Tensor, generator: torch.Generator | None = None,
                      max_rows: int = 1 << 16) -> dict:
    """The noise-prediction error at each step t = 1..T, mean squared per dimension over x_t ~ q(x_t | x_0)
    for the data x0 (B, *dims), one draw per step and example (lists of length T, index t - 1):

    - ``model_vs_exact``: E||eps_theta(x_t, t) - E[eps | x_t]||^2 / D, the model against the exact
      ``oracle.eps`` (0 for a perfect model);
    - ``model_vs_noise``: E||eps_theta(x_t, t) - eps||^2 / D, the simple loss at step t (Ho et al. eq. 14);
    - ``exact_vs_noise``: E||E[eps | x_t] - eps||^2 / D, the same loss for the exact answer: its floor.
      The first two differ by the third, up to Monte-Carlo error (E[eps | x_t] is the projection).
    """
    if not hasattr(oracle, "eps"):
        raise DDPMLabError("the noise-prediction error needs an exact oracle (Gaussian-mixture data)")
    sched = model.schedule
    T, B = sched.T, x0.shape[0]
    x0 = x0.double()
    dims = math.prod(x0.shape[1:])
    out = {k: torch.zeros(T, dtype=torch.float64) for k in ("model_vs_exact", "model_vs_noise", "exact_vs_noise")}
    chunk = max(1, max_rows // B)
    for start in range(1, T + 1, chunk):
        ts = torch.arange(start, min(start + chunk, T + 1))
        t = ts.repeat_interleave(B)
        x0_rep = x0.repeat((len(ts),) + (1,) * (x0.dim() - 1))  # (c B, *dims)
        eps = torch.randn(x0_rep.shape, generator=generator, dtype=torch.float64)
        x_t = q_sample(sched, x0_rep, t, eps)
        e_model, e_exact = predict_eps(model, x_t, t), oracle.eps(x_t, t).double()
        for key, (a, b) in {"model_vs_exact": (e_model, e_exact), "model_vs_noise": (e_model, eps),
                            "exact_vs_noise": (e_exact, eps)}.items():
            err = (a - b).square().reshape(len(ts), B, -1).sum(-1) / dims  # (c, B)
            out[key][ts - 1] = err.mean(1)
    return {k: v.tolist() for k, v in out.items()} | {"n": int(B)}

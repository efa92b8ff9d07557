"""The flow-map error of a few-step model (issue 25): how far its map f(x_t, t -> 0) lands from the exact
probability-flow map Phi_{t -> 0} of Gaussian-mixture data (``ddpmlab.models.flow_map``), per time t,

    E || f(x_t, t -> 0) - Phi_{t -> 0}(x_t) ||^2,   x_t = alpha(t) x_0 + sigma(t) eps,

the squared Euclidean distance over the whole example, on x_t drawn from the forward process of data x_0
(held-out or true samples) at the oracle's family time t (a DDPM's paper steps, a flow's t in (0, 1]).
It is zero for the exact map itself; beside the per-step L_t it says where in time a few-step model's
map goes wrong.
"""
from __future__ import annotations

import math

import torch

from ddpmlab.core.utils import DDPMLabError, NonFiniteError
from ddpmlab.core.validate import check_examples, check_generator
from ddpmlab.models.flow_map import exact_flow_map


def _mapped(model_map, x_t: torch.Tensor, t) -> torch.Tensor:
    """f(x_t, t -> 0) of the callable f(x, t, s), float64 on the CPU."""
    out = model_map(x_t, t, 0)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(x_t.shape):
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise DDPMLabError(f"the model's map must return a tensor shaped like x_t {tuple(x_t.shape)}, got {got}")
    out = out.detach().double().cpu()
    if not bool(torch.isfinite(out).all()):
        raise NonFiniteError(f"the model's map gave NaN or infinite values at t = {t}")
    return out


@torch.no_grad()
def flow_map_error(model_map, oracle, x0, ts, generator: torch.Generator | None = None,
                   method: str | None = None) -> dict:
    """Per time t of ``ts``, the mean over examples of ||f(x_t, t -> 0) - Phi_{t -> 0}(x_t)||^2 with its
    standard error, on x_t = ``oracle.q_sample(x0, t, eps)``, one fresh eps per example and t.

    ``model_map``: a callable f(x, t, s) giving the state at time s, shaped like x, at the oracle's family
    time (a ``FlowMapModel``'s ``flow_map``; ``ExactFlowMap(oracle).flow_map`` scores zero). ``oracle``: the
    exact oracle of the data's Gaussian mixture on the model's family (``family_of(model).oracle(model,
    dist)``). ``x0`` (n, *data_shape). ``method``: the exact map's (``exact_flow_map``: None for quantiles
    in 1-D, rk45 otherwise).
    Returns ``t`` (the times), ``error`` and ``error_se`` (lists indexed like ``t``) and ``n``.
    """
    if not callable(model_map):
        raise DDPMLabError(f"the model's map must be a callable f(x, t, s) (a FlowMapModel's flow_map), got "
                           f"{type(model_map).__name__}")
    ts = oracle.times(ts, "the flow-map error")
    x0 = check_examples(x0, "the data x0", tuple(oracle.data_shape), dtype=torch.float64, min_rows=2).cpu()
    generator = check_generator(generator)
    n = x0.shape[0]
    out = {"t": ts, "error": [], "error_se": [], "n": n}
    for t in ts:
        eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        x_t = oracle.q_sample(x0, t, eps)
        exact = exact_flow_map(oracle, x_t, t, 0, method)
        err = (_mapped(model_map, x_t, t) - exact).square().reshape(n, -1).sum(1)  # (n,)
        out["error"].append(float(err.mean()))
        out["error_se"].append(float(err.std() / math.sqrt(n)))
    return out

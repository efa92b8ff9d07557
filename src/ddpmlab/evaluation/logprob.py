"""``log_prob(model, x)``: log p(x) of any model, per example, in nats.

Two estimates:

- ``method="ode"`` (every model: a DDPM, a flow, the exact oracles): the probability-flow ODE's
  likelihood (Song et al. 2021, sec. 4.3 and app. D.2; ``ddpmlab.evaluation.ode.ode_log_likelihood``),

      log p(x) = log N(x(1); 0, I) + int_0^1 div v(x(s), s) ds,   x(0) = x,

  the exact density of the deterministic generative model that starts from N(0, I) and integrates the
  model's velocity field v (a DDPM's probability-flow drift, a flow's prediction) back to s = 0, up to the
  solver's tolerance. The divergence is exact (one backward pass per dimension) for data of at most
  ``EXACT_TRACE_MAX_DIMS`` dimensions and Hutchinson's estimate above (``divergence="auto"``): one
  Rademacher probe v per example, fixed along the path, v^T (dv/dx) v. That estimate is unbiased for each
  example, so the standard error of a mean over examples, std / sqrt(N), already holds the probe's
  noise. In one dimension the probe is exact.
- ``method="bound"`` (a DDPM): minus the variational bound of Ho et al. (2020, eq. 5) per example
  (``ddpmlab.evaluation.likelihood.vlb_terms``), with one x_t ~ q(x_t | x_0) per step: a stochastic
  lower bound, E[-L(x)] <= log p(x), on the density of the model's *discrete* ancestral sampler, not the
  ODE's. A flow has no discrete chain: refused in one line.

Units: nats per example. A model takes x in its own space. A finished run (``dl.load_run``) takes x in
the units of its data and gives their density: for a run trained on standardised data (x = z * scale +
shift) log p(x) = log p_model(z) - sum log scale.

The prior term. With a finite T the forward process ends at q(x_T), not at N(0, I), so even the exact
oracle of the data q has an ODE density other than q: point by point

    log p(x) = log q(x) + log N(x_T; 0, I) - log q(x_T),

x_T the end of x's path, whose mean over q is -KL(q(x_T) || N(0, I)) (the bound's prior term L_T, the
same for the ODE). On the default schedule and the seed's mixture that mean is 3e-5 nats, but a single
point can be off by 1e-2 nats or more. ``prior="exact"`` (the oracles, which know q(x_T)) integrates to
the true q(x_T) instead, and gives log q(x) up to the solver's tolerance.
"""
from __future__ import annotations

import math

import torch

from ddpmlab.core.process import ProcessModel
from ddpmlab.core.utils import DDPMLabError, NonFiniteError
from ddpmlab.core.validate import check_count, check_examples, check_generator, diagnosed
from ddpmlab.evaluation.finished import data_log_scale, run_data, to_model_space
from ddpmlab.evaluation.likelihood import vlb_terms
from ddpmlab.evaluation.ode import ode_log_likelihood
from ddpmlab.models.family import family_of

METHODS = ("ode", "bound")
DIVERGENCES = ("auto", "exact", "hutchinson")
EXACT_TRACE_MAX_DIMS = 16  # "auto": exact divergence (D backward passes per step) up to here, Hutchinson above


def log_prob(model, x, *, method: str = "ode", divergence: str = "auto", prior="normal", cond=None,
             generator: torch.Generator | None = None, rtol: float = 1e-5, atol: float = 1e-5,
             chunk: int = 1024, max_nfe: int | None = 10_000, threads: int | None = 1) -> torch.Tensor:
    """log p(x) in nats for each example of x (N, *dims): a float64 tensor (N,). See the module's text.

    ``model``: any model of the contract, or a finished run (``dl.load_run``; x then in data units).
    ``method``: "ode" (the probability-flow likelihood) or "bound" (minus the variational bound, a lower
    bound; a DDPM only). ``divergence`` (ode): "exact", "hutchinson", or "auto" (exact for at most
    ``EXACT_TRACE_MAX_DIMS`` dimensions). ``prior`` (ode): "normal" (N(0, I), the model's own density),
    "exact" (an oracle's q(x_T)) or a callable log-density of x_T. ``cond``: a conditional model's
    condition, one per example or one for all (ode). ``generator``: the probes' and the bound's random
    draws. ``rtol`` / ``atol``: the ODE solver's tolerances per example (1e-5: about 1e-4 nats).
    ``chunk``: examples integrated (or bounded) together; ``max_nfe``: the most velocity evaluations per
    chunk before the ODE gives up in one line (a poor model's flow can run away); ``threads``: torch's
    intra-op threads for the ODE (None: as set).
    """
    model, to_model, log_det = _model_and_units(model)
    if method not in METHODS:
        raise DDPMLabError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    family = family_of(model)
    if method == "bound" and "bound" not in family.exact_terms:
        raise DDPMLabError(f"method='bound' needs a family with a discrete bound; a {family.name} model has none: "
                           "use method='ode'")
    chunk = check_count(chunk, "chunk")
    generator = check_generator(generator)
    x = to_model(check_examples(x, "x", tuple(model.data_shape), torch.float64))
    n = x.shape[0]
    if cond is not None:
        if method == "bound":
            raise DDPMLabError("the bound takes no condition; use method='ode' for a conditional model")
        cond = torch.as_tensor(cond)
        if cond.dim() > 0 and cond.shape[0] != n:
            raise DDPMLabError(f"cond has shape {tuple(cond.shape)}; pass one condition per example, ({n}, ...), "
                               "or one for all")
    divergence = resolve_divergence(divergence, model.data_shape)
    out = torch.empty(n, dtype=torch.float64)
    for i in range(0, n, chunk):
        rows = slice(i, i + chunk)
        part = cond[rows] if cond is not None and cond.dim() > 0 else cond
        with diagnosed(model, x[rows].to(model.dtype), part):  # a model that cannot take x: one line
            if method == "bound":
                out[rows] = -vlb_terms(model, x[rows], generator)["total_nats"]
            else:
                r = ode_log_likelihood(model, x[rows], prior=prior, divergence=divergence, generator=generator,
                                       rtol=rtol, atol=atol, max_nfe=max_nfe, threads=threads,
                                       velocity=_finite(model.velocity_field(part)))
                out[rows] = r["log_likelihood"]
    return out - log_det


def _finite(velocity):
    """``velocity`` that raises ``NonFiniteError`` where its value is NaN or infinite (a model with NaN
    weights, a flow run far away): the solver would otherwise step on NaN times."""
    def checked(x, t):
        v = velocity(x, t)
        if not bool(torch.isfinite(v).all()):
            raise NonFiniteError(f"the model's velocity field is NaN or infinite at t = {t:.4g} (NaN weights, or "
                                 "a flow carried to where the network overflows)")
        return v

    return checked


def resolve_divergence(divergence: str, data_shape) -> str:
    """"exact" or "hutchinson": ``divergence``, or for "auto" exact up to ``EXACT_TRACE_MAX_DIMS`` dimensions."""
    if divergence not in DIVERGENCES:
        raise DDPMLabError(f"divergence must be one of {', '.join(DIVERGENCES)}, got {divergence!r}")
    if divergence != "auto":
        return divergence
    return "exact" if math.prod(data_shape) <= EXACT_TRACE_MAX_DIMS else "hutchinson"


def _model_and_units(model):
    """(the model, data units -> its space, log |det| of its space -> data units) for a model or a run."""
    if isinstance(model, ProcessModel):
        return model, lambda x: x, 0.0
    run = model  # a finished run (dl.load_run)
    return run.model, lambda x: to_model_space(run, x), data_log_scale(run)


def exact_log_prob(run, x: torch.Tensor) -> torch.Tensor | None:
    """log q(x) (N,) float64 of a finished run's data distribution at x (data units), where it is known in
    closed form (a Gaussian mixture such as the seed's, the checkerboard); None where it is not (a file,
    moons, digits, a distribution the run does not record)."""
    try:
        kind, dist = run_data(run)
    except DDPMLabError:  # standardised or unknown data: no closed form in data units
        return None
    if kind not in ("mixture", "distribution") or not callable(getattr(dist, "log_prob", None)):
        return None
    return dist.log_prob(x.double().reshape(x.shape[0], -1))

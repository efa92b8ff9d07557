"""Log-likelihood by the probability-flow ODE: the continuous-time view (Song et al. 2021, sec. 4.3
and appendix D.2; score_sde ``likelihood.py``).

The discrete schedule becomes continuous in s in [0, 1]: log alpha-bar(s) interpolates log abar_t at
s = t / T (``ContinuousSchedule``), beta(s) = -d log abar / ds, so the marginal at s = t / T is exactly
q(x_t). The VP SDE with this beta has the probability-flow ODE (Song et al. eq. 13 for the VP SDE)

    dx/ds = f(x, s) = -1/2 beta(s) (x + grad_x log q_s(x)),

and the instantaneous change of variables gives log p_0(x(0)) = log p_1(x(1)) + int_0^1 div f ds
(Chen et al. 2018). The score is the model's contract method ``score(x, t_c, alpha_bar, cond)`` at the
continuous step t_c = s T (``ddpmlab.core.continuous.score_function``): exact for an oracle, from a
network's noise prediction at continuous time, or implied by a predicted mean: mu = (x_t + beta_t grad
log q(x_t)) / sqrt(alpha_t) (Tweedie; Ho et al. eq. 11 with eps = -sqrt(1 - abar_t) grad log q), so
score = (sqrt(alpha_t) mu - x_t) / beta_t. The divergence is exact by autograd (one backward pass per
dimension; the default for d <= 2) or Hutchinson's estimate with one Rademacher probe per example, fixed
along the path. A flow model (``ddpmlab.models.flow_model``) enters the same way: its velocity on the
linear path replaces the drift (the model's ``velocity_field``). scipy's ``solve_ivp`` integrates
in float64; a trained network is evaluated in a float64 copy.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ddpmlab.core.gaussian import nats_to_bpd
from ddpmlab.core.threads import intra_op_threads
from ddpmlab.core.utils import DDPMLabError

LOG_2PI = math.log(2 * math.pi)


class _TooManyEvaluations(Exception):
    pass


def _drift_and_divergence(velocity, x, s, probe):
    """f(x, s) (B, *dims) and its divergence (B,): exact when ``probe`` is None, else v^T (df/dx) v."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        f = velocity(x, s)
        flat_f = f.reshape(x.shape[0], -1)  # (B, D)
        if probe is None:
            div = torch.zeros(x.shape[0], dtype=x.dtype)
            for i in range(flat_f.shape[1]):  # rows are independent, so the sum's gradient is per-row
                g = torch.autograd.grad(flat_f[:, i].sum(), x, retain_graph=True)[0]
                div += g.reshape(x.shape[0], -1)[:, i]
        else:
            g = torch.autograd.grad((f * probe).sum(), x)[0]
            div = (g * probe).reshape(x.shape[0], -1).sum(1)
    return f.detach(), div.detach()


def _log_prior(prior, model, x1: torch.Tensor) -> torch.Tensor:
    if prior == "normal":
        flat = x1.reshape(x1.shape[0], -1)
        return -0.5 * (flat.square().sum(1) + flat.shape[1] * LOG_2PI)
    if prior == "exact":
        if model is None:
            raise DDPMLabError("the exact prior q(x_T) needs the oracle (a model with q_log_prob)")
        return model.prior_log_prob(x1)  # an exact oracle's q at the ODE's end
    if callable(prior):
        return prior(x1)
    raise DDPMLabError(f"prior must be 'normal', 'exact' or a log-density, got {prior!r}")


def ode_log_likelihood(model, x0: torch.Tensor, prior="normal", divergence: str | None = None,
                       generator: torch.Generator | None = None, rtol: float = 1e-6, atol: float = 1e-6,
                       method: str = "RK45", max_nfe: int | None = None, threads: int | None = 1,
                       velocity=None) -> dict:
    """log p(x_0) under the probability-flow ODE for each example of x0 (B, *dims), in nats.

    The ODE is dx/dt = v(x, t) from t = 0 (the data) to 1 (the prior), v the model's velocity field
    (its ``velocity_field``: a DDPM's probability-flow drift, a flow's prediction), or
    ``velocity`` (a callable v(x, t), differentiable in x) given instead; ``model`` may then be None.

    ``prior``: "normal" (N(0, I), what sampling starts from), "exact" (the oracle's q(x_T)) or a
    callable log-density. ``divergence``: "exact", "hutchinson", or None (exact for d <= 2).
    ``max_nfe`` bounds the work: past it the integration stops with a ``DDPMLabError``. ``threads``:
    torch's intra-op threads while integrating (see ``intra_op_threads``).
    Returns ``log_likelihood`` (B,) float64, ``nll_nats`` and ``nll_nats_se`` (mean and standard error
    over the batch), ``nll_nats_median`` (robust where a poor model's flow diverges for a few points),
    ``nll_bpd``, ``prior_log_prob`` (B,), ``x_T`` and ``nfe`` (function evaluations).
    All examples are integrated as one system, so the solver's step fits the hardest one; ``rtol`` and
    ``atol`` hold for every example's local error.
    """
    x0 = x0.detach().double()
    B, dims = x0.shape[0], math.prod(x0.shape[1:])
    divergence = divergence or ("exact" if dims <= 2 else "hutchinson")
    if divergence not in ("exact", "hutchinson"):
        raise DDPMLabError(f"divergence must be 'exact' or 'hutchinson', got {divergence!r}")
    probe = None
    if divergence == "hutchinson":
        probe = torch.randint(0, 2, x0.shape, generator=generator).double() * 2 - 1
    if velocity is None:
        velocity = model.velocity_field()
    nfe = 0

    def rhs(s, y):
        nonlocal nfe
        nfe += 1
        if max_nfe is not None and nfe > max_nfe:
            raise _TooManyEvaluations
        x = torch.from_numpy(y[: B * dims]).reshape(x0.shape)
        f, div = _drift_and_divergence(velocity, x, s, probe)
        return np.concatenate([f.reshape(-1).numpy(), div.numpy()])

    from scipy.integrate import solve_ivp  # imported where used: `import ddpmlab` stays fast

    y0 = np.concatenate([x0.reshape(-1).numpy(), np.zeros(B)])
    # solve_ivp bounds the RMS of the local errors over all B (d + 1) components; dividing the
    # tolerances by sqrt(B (d + 1)) bounds every component's, so each example gets rtol and atol.
    k = math.sqrt(y0.size)
    try:
        with intra_op_threads(threads):
            sol = solve_ivp(rhs, (0.0, 1.0), y0, method=method, rtol=rtol / k, atol=atol / k)
    except _TooManyEvaluations:
        raise DDPMLabError(f"probability-flow ODE: no solution within {max_nfe} evaluations "
                           "(the model's flow is far from a diffusion's)") from None
    if not sol.success:
        raise DDPMLabError(f"probability-flow ODE integration failed: {sol.message}")
    y1 = torch.from_numpy(sol.y[:, -1].copy())
    x_T = y1[: B * dims].reshape(x0.shape)
    log_prior = _log_prior(prior, model, x_T).double()
    ll = log_prior + y1[B * dims:]
    nll = -ll
    se = float(nll.std() / math.sqrt(B)) if B > 1 else float("nan")
    return {"log_likelihood": ll, "nll_nats": float(nll.mean()), "nll_nats_se": se,
            "nll_nats_median": float(nll.median()), "nll_bpd": nats_to_bpd(float(nll.mean()), dims),
            "prior_log_prob": log_prior, "x_T": x_T, "nfe": nfe}

"""Log-likelihood by the probability-flow ODE: the continuous-time view (Song et al. 2021, sec. 4.3
and appendix D.2; score_sde ``likelihood.py``).

The discrete schedule becomes continuous in s in [0, 1]: log alpha-bar(s) interpolates log abar_t at
s = t / T (``ContinuousSchedule``), beta(s) = -d log abar / ds, so the marginal at s = t / T is exactly
q(x_t). The VP SDE with this beta has the probability-flow ODE (Song et al. eq. 13 for the VP SDE)

    dx/ds = f(x, s) = -1/2 beta(s) (x + grad_x log q_s(x)),

and the instantaneous change of variables gives log p_0(x(0)) = log p_1(x(1)) + int_0^1 div f ds
(Chen et al. 2018). The score comes from the oracle exactly (``score(x, alpha_bar)``) or from a model's
predicted mean: mu = (x_t + beta_t grad log q(x_t)) / sqrt(alpha_t) (Tweedie; Ho et al. eq. 11 with
eps = -sqrt(1 - abar_t) grad log q), so score = (sqrt(alpha_t) mu - x_t) / beta_t, or from its noise
prediction at continuous time (see ``score_function``). The divergence is exact by autograd (one backward
pass per dimension; the default for d <= 2) or Hutchinson's estimate with one Rademacher probe per
example, fixed along the path. scipy's ``solve_ivp`` integrates in float64; a trained network is
evaluated in a float64 copy.
"""
from __future__ import annotations

import contextlib
import copy
import math

import numpy as np
import torch
from scipy.integrate import solve_ivp
from scipy.interpolate import PchipInterpolator

from ddpmlab.evaluation.likelihood import nats_to_bpd
from ddpmlab.models.seed import SeedReverse
from ddpmlab.core.utils import DDPMLabError

LOG_2PI = math.log(2 * math.pi)


@contextlib.contextmanager
def intra_op_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (None: unchanged), restoring the setting after.

    Evaluation works on small tensors (a few thousand numbers per operation): extra threads only add
    synchronisation, which on a busy 2-core machine was measured to cost 10 to 40 times the work itself.
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _TooManyEvaluations(Exception):
    pass


class ContinuousSchedule:
    """log alpha-bar(s): the monotone cubic (PCHIP) interpolant through (t / T, log abar_t), so the
    marginal at s = t / T is exactly q(x_t) and beta(s) = -d log abar / ds is continuous (a
    piecewise-constant beta would put T jumps in the ODE's right-hand side, which adaptive solvers
    handle badly). PCHIP keeps log abar decreasing, so beta(s) >= 0, and reproduces a constant schedule's
    linear log abar exactly (beta(s) = -T log(1 - beta) there)."""

    def __init__(self, schedule):
        self.T = schedule.T
        grid = np.arange(self.T + 1) / self.T
        self._log_alpha_bar = PchipInterpolator(grid, schedule.alphas_cumprod.log().numpy())
        self._beta = self._log_alpha_bar.derivative()
        self.alphas = schedule.alphas.numpy()
        self.betas = schedule.betas.numpy()

    def alpha_bar(self, s: float) -> float:
        return float(np.exp(self._log_alpha_bar(s)))

    def beta(self, s: float) -> float:
        return float(-self._beta(s))

    def step_alpha_beta(self, s: float) -> tuple[float, float]:
        """alpha_t and beta_t at continuous step s T, linear in t between steps (held at step 1 below it)."""
        tc = min(max(s * self.T, 1.0), float(self.T))
        grid = np.arange(self.T + 1)
        return float(np.interp(tc, grid, self.alphas)), float(np.interp(tc, grid, self.betas))


def score_function(model, cont: ContinuousSchedule):
    """score(x, s): grad_x log q_s(x) for x (B, *dims) at continuous time s in [0, 1], computed in float64
    and returned in x's dtype; differentiable in x.

    The oracle's is exact. A trained model's comes, at continuous step t_c = s T held in [1, T] (no
    network was trained below step 1, so [0, 1 / T] uses step 1's score), from
    - ``eps_continuous(x, t_c, abar)`` where the model has it: score = -eps / sqrt(1 - abar);
    - the seed's networks, which take continuous time: its mean at t_c, with alpha, beta interpolated;
    - any other model: the mean-implied scores of the two neighbouring steps, linearly interpolated.
    """
    if hasattr(model, "score"):  # the exact oracle
        return lambda x, s: model.score(x.to(torch.float64), cont.alpha_bar(s)).to(x.dtype)
    net = copy.deepcopy(model).double() if isinstance(model, torch.nn.Module) else model
    score64 = _trained_score(model, net, cont)
    return lambda x, s: score64(x.to(torch.float64), s).to(x.dtype)


def _trained_score(model, net, cont: ContinuousSchedule):
    """The float64 score of a trained model (``net``: its float64 copy); see ``score_function``."""

    def clamp(s):
        return min(max(s * cont.T, 1.0), float(cont.T))

    def from_mean(x, t, alpha, beta):  # mu = (x + beta grad log q) / sqrt(alpha), solved for the score
        mean, _ = net.p_mean_variance(x, t)
        return (math.sqrt(alpha) * mean - x) / beta

    if getattr(model, "diffusion", None) is not None and model.diffusion.mean_type != "previous_x" \
            and hasattr(model, "eps_continuous"):
        def score(x, s):
            tc = clamp(s)
            abar = cont.alpha_bar(tc / cont.T)
            return -net.eps_continuous(x, tc, abar) / math.sqrt(1.0 - abar)
    elif isinstance(model, SeedReverse):
        def score(x, s):
            tc = clamp(s)
            alpha, beta = cont.step_alpha_beta(tc / cont.T)
            return from_mean(x, torch.full((x.shape[0],), tc, dtype=torch.float64), alpha, beta)
    else:
        def score(x, s):
            tc = clamp(s)
            lo = min(int(math.floor(tc)), cont.T - 1) if cont.T > 1 else 1
            w = tc - lo
            out = 0.0
            for step, weight in ((lo, 1.0 - w), (lo + 1, w)):
                if weight > 0 and step <= cont.T:
                    t = torch.full((x.shape[0],), step, dtype=torch.long)
                    out = out + weight * from_mean(x, t, float(cont.alphas[step]), float(cont.betas[step]))
            return out
    return score


def _drift_and_divergence(score, cont, x, s, probe):
    """f(x, s) (B, *dims) and its divergence (B,): exact when ``probe`` is None, else v^T (df/dx) v."""
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        f = -0.5 * cont.beta(s) * (x + score(x, s))
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


def _log_prior(prior, model, x1: torch.Tensor, cont: ContinuousSchedule) -> torch.Tensor:
    if prior == "normal":
        flat = x1.reshape(x1.shape[0], -1)
        return -0.5 * (flat.square().sum(1) + flat.shape[1] * LOG_2PI)
    if prior == "exact":
        if not hasattr(model, "q_log_prob"):
            raise DDPMLabError("the exact prior q(x_T) needs the oracle (a model with q_log_prob)")
        return model.q_log_prob(x1, cont.alpha_bar(1.0))
    if callable(prior):
        return prior(x1)
    raise DDPMLabError(f"prior must be 'normal', 'exact' or a log-density, got {prior!r}")


def ode_log_likelihood(model, x0: torch.Tensor, prior="normal", divergence: str | None = None,
                       generator: torch.Generator | None = None, rtol: float = 1e-6, atol: float = 1e-6,
                       method: str = "RK45", max_nfe: int | None = None, threads: int | None = 1) -> dict:
    """log p(x_0) under the probability-flow ODE for each example of x0 (B, *dims), in nats.

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
    cont = ContinuousSchedule(model.schedule)
    score = score_function(model, cont)
    nfe = 0

    def rhs(s, y):
        nonlocal nfe
        nfe += 1
        if max_nfe is not None and nfe > max_nfe:
            raise _TooManyEvaluations
        x = torch.from_numpy(y[: B * dims]).reshape(x0.shape)
        f, div = _drift_and_divergence(score, cont, x, s, probe)
        return np.concatenate([f.reshape(-1).numpy(), div.numpy()])

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
    log_prior = _log_prior(prior, model, x_T, cont).double()
    ll = log_prior + y1[B * dims:]
    nll = -ll
    se = float(nll.std() / math.sqrt(B)) if B > 1 else float("nan")
    return {"log_likelihood": ll, "nll_nats": float(nll.mean()), "nll_nats_se": se,
            "nll_nats_median": float(nll.median()), "nll_bpd": nats_to_bpd(float(nll.mean()), dims),
            "prior_log_prob": log_prior, "x_T": x_T, "nfe": nfe}

"""The flow-matching objective (Lipman et al. 2023, eq. 23, conditional OT path; Liu et al. 2023, eq. 1):

    L(theta) = E_{t, x_0, eps} || v_theta(x_t, t) - u ||^2,   x_t = alpha(t) x_0 + sigma(t) eps,

per example the mean over dimensions, with t drawn from a time density: ``uniform`` on (0, 1), or
``logit_normal`` (t = sigmoid(m + s n), n ~ N(0, 1); Esser et al. 2024, eq. 19), which puts more draws
in the middle of the path. The minimiser is the exact velocity E[u | x_t] (``FlowMixtureOracle``).

The regression target u, ``target``:

- ``conditional``: the conditional velocity alpha' x_0 + sigma' eps (eps - x_0 on the linear path).
  Unbiased, but near the prior (t -> 1) it varies with the unseen x_0 over the whole data's spread.
- ``stable``: the stable target field (Xu et al. 2023, eq. 5), the posterior mean of the conditional
  velocity over a reference batch {x_0^j} that holds the example's own x_0,

      u = sum_j w_j (alpha' x_0^j + sigma' (x_t - alpha x_0^j) / sigma),
      w_j proportional to N(x_t; alpha x_0^j, sigma^2 I),

  the exact E[u | x_t] of the reference batch's empirical distribution. Near the data the example's own
  term has all the weight (the conditional target); near the prior the target averages over the batch,
  so its variance falls by up to the reference size, at a bias of order 1 / reference size. The
  reference batch is the first ``reference_batch`` examples of the batch (0: all of it); with class
  labels only examples of the row's class count (all of them for the null class).
"""
from __future__ import annotations

import math

import torch

from ddpmlab.core.process import VelocityProcess
from ddpmlab.core.utils import DDPMLabError, mean_flat
from ddpmlab.models.family import family_of
from ddpmlab.models.guidance import num_classes_of

TIME_SAMPLINGS = ("uniform", "logit_normal")
TARGETS = ("conditional", "stable")


def draw_times(n: int, kind: str, generator=None, loc: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """``n`` times in (0, 1) from the density ``kind`` (float64)."""
    if kind == "uniform":
        return torch.rand(n, generator=generator, dtype=torch.float64)
    if kind == "logit_normal":
        return torch.sigmoid(loc + scale * torch.randn(n, generator=generator, dtype=torch.float64))
    raise DDPMLabError(f"time sampling must be one of {', '.join(TIME_SAMPLINGS)}, got {kind!r}")


SIGMA_MIN = 1e-10  # sigma is clamped here to keep 1 / sigma^2 finite: the own row has all the weight
LOG_TINY = -80.0
BLOCK_ENTRIES = 2 ** 16  # entries of a block of the (B, 1 + r) matrices: 512 kB in float64


def _matrices(workspace: dict | None, shape: tuple, device):
    """The logits (float64) and weights (float32) matrices, kept in ``workspace`` when given."""
    key = (shape, device)
    if workspace is not None and workspace.get("key") == key:
        return workspace["logits"], workspace["weights"]
    logits = torch.empty(shape, dtype=torch.float64, device=device)
    w = torch.empty(shape, dtype=torch.float32, device=device)
    if workspace is not None:
        workspace.update(key=key, logits=logits, weights=w)
    return logits, w


@torch.no_grad()
def stable_target(path, x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor, reference_batch: int = 0,
                  cond: torch.Tensor | None = None, null_class: int | None = None,
                  workspace: dict | None = None) -> torch.Tensor:
    """The stable target field (module docstring) of the rows x_t = alpha(t) x_0 + sigma(t) eps, t (B,),
    against the first ``reference_batch`` rows of x0 (0: all), in float64. Shaped like x0, in its dtype.
    ``workspace``: a dict that keeps the (B, 1 + r) matrices from call to call (a fresh pair of a few
    MB each batch costs more in page faults than the arithmetic on them)."""
    n = x0.shape[0]
    r = n if reference_batch <= 0 else min(int(reference_batch), n)
    tb = t.to(x0.device, torch.float64).reshape(n, 1)
    a, da, ds = path.alpha(tb), path.d_alpha(tb), path.d_sigma(tb)  # (B, 1)
    s = path.sigma(tb).clamp_min(SIGMA_MIN)
    own0, own_eps = x0.reshape(n, -1).double(), eps.reshape(n, -1).double()
    x_t = a * own0 + s * own_eps
    inv = 1.0 / s.square()
    # Column 0 the own row, column 1 + j reference j: log N(x_t; alpha x_0^j, sigma^2 I) less the row's
    # constant -|x_t|^2 / (2 sigma^2), that is (alpha x_t . x_0^j - alpha^2 |x_0^j|^2 / 2) / sigma^2, and
    # for the own row -|eps|^2 / 2 + |x_t|^2 / (2 sigma^2); one product [x_t, b, c] [x_0^j, q_j, o_j]^T.
    ref = own0[:r]
    rows = torch.cat([x_t * (a * inv), a.square() * inv / -2,
                      x_t.square().sum(1, keepdim=True) * (inv / 2) - own_eps.square().sum(1, keepdim=True) / 2], 1)
    cols = torch.zeros(r + 1, rows.shape[1], dtype=torch.float64, device=x0.device)
    cols[0, -1] = 1.0
    cols[1:, :-2], cols[1:, -2] = ref, ref.square().sum(1)
    # rows in blocks whose matrices stay in the cache through the passes of the softmax
    block = max(16, BLOCK_ENTRIES // (r + 1))
    logits, w = _matrices(workspace, (min(block, n), r + 1), x0.device)
    ref32 = ref.float()
    w_own, rest = torch.empty_like(tb), torch.empty_like(tb)
    mean_ref = torch.empty(n, ref.shape[1], dtype=torch.float64, device=x0.device)
    c = None if cond is None else cond.reshape(n)
    for i0 in range(0, n, block):
        i1 = min(i0 + block, n)
        lg, wb = logits[:i1 - i0], w[:i1 - i0]
        torch.mm(rows[i0:i1], cols.T, out=lg)
        # the excluded references: the own x_0 (it enters once, as column 0) and, with labels, other classes
        dup = max(0, min(i1, r) - i0)  # rows of the block whose own x_0 is also reference i0 + k
        other = None if c is None else (c[i0:i1, None] != c[None, :r]) & (c[i0:i1, None] != null_class)
        lg[:, 1 + i0:].diagonal()[:dup].fill_(-math.inf)
        if other is not None:
            lg[:, 1:].masked_fill_(other, -math.inf)
        # softmax over the row in float32 once its top is off: weights below e^-80 (1e-35) are e^-80, which
        # spares exp the slow denormal range; the excluded references are zeroed after
        torch.sub(lg, lg.amax(1, keepdim=True), out=wb).clamp_min_(LOG_TINY).exp_()
        w_ref = wb[:, 1:]
        w_ref[:, i0:].diagonal()[:dup].zero_()
        if other is not None:
            w_ref.masked_fill_(other, 0.0)
        w_rest = w_ref.sum(1, keepdim=True).double()
        z = wb[:, :1].double() + w_rest
        w_own[i0:i1], rest[i0:i1] = wb[:, :1].double() / z, w_rest / z
        mean_ref[i0:i1] = (w_ref @ ref32).double() / z  # sum_j w_j x_0^j
    # u = w_own u_own + sum_j w_j (alpha' x_0^j + sigma' (x_t - alpha x_0^j) / sigma)
    u = w_own * (da * own0 + ds * own_eps) + da * mean_ref + (ds / s) * (rest * x_t - a * mean_ref)
    return u.reshape(x0.shape).to(x0.dtype)


class FlowMatching:
    """Per example: ||v_theta(x_t, t) - u||^2 averaged over dimensions, t from ``time_sampling``, u the
    ``target`` (``conditional`` or ``stable``, over ``reference_batch`` rows; module docstring)."""

    contract = VelocityProcess  # it trains the flow family's models (``Family.serves``)

    def __init__(self, time_sampling: str = "uniform", loc: float = 0.0, scale: float = 1.0,
                 target: str = "conditional", reference_batch: int = 0):
        if time_sampling not in TIME_SAMPLINGS:
            raise DDPMLabError(f"time sampling must be one of {', '.join(TIME_SAMPLINGS)}, got {time_sampling!r}")
        if target not in TARGETS:
            raise DDPMLabError(f"the flow-matching target must be one of {', '.join(TARGETS)}, got {target!r}")
        if int(reference_batch) < 0:
            raise DDPMLabError(f"the reference batch must be >= 0 (0: the whole batch), got {reference_batch}")
        self.time_sampling, self.loc, self.scale = time_sampling, loc, scale
        self.target, self.reference_batch = target, int(reference_batch)
        self._workspace = {}  # the stable target's matrices, kept between batches

    def bind(self, model) -> None:
        family_of(model).check(self, "objective", "flow_matching")

    def __call__(self, model, x0, generator=None, cond=None):
        self.bind(model)
        n = x0.shape[0]
        t = draw_times(n, self.time_sampling, generator, self.loc, self.scale)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        tb = t.to(x0.device, x0.dtype).reshape((n,) + (1,) * (x0.dim() - 1))
        path = model.path
        x_t = path.alpha(tb) * x0 + path.sigma(tb) * eps
        if self.target == "stable":
            target = stable_target(path, x0, eps, t, self.reference_batch, cond, num_classes_of(model),
                                   self._workspace)
        else:
            target = path.velocity(x0, eps, tb)
        return mean_flat((model.velocity(x_t, t.to(x0.device), cond) - target) ** 2)

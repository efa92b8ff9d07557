"""The shortcut-model objective (Frans et al. 2024, "One Step Diffusion via Shortcut Models", eq. 5 and
Algorithm 1): a model u(x_t, t, d) that also takes the step size d, trained by flow matching at d = 0 and
by self-consistency across step sizes,

    u(x_t, t, 2d) = (u(x_t, t, d) + u(x', t - d, d)) / 2,    x' = x_t - d u(x_t, t, d),

the right-hand side under stop-gradient (the target): one step of size 2d is two steps of size d.

Here on the linear path x_t = (1 - t) x_0 + t eps, t = 1 the prior (ddpmlab's direction; Frans et al. run
t from noise 0 to data 1, hence the minus signs), the shortcut is the flow-map family's average velocity:
u(x, t, d) = ``average_velocity(x, r = t - d, t)`` of a ``MeanFlowModel``, so ``flow_map(x, t, t - d)`` is
one shortcut step and the ``flow_map`` sampler samples in K steps of d = 1 / K.

Step sizes are powers of two (Frans et al. sec. 3.2): with ``max_steps`` M (a power of two) the
self-consistency's 2d is one of 1, 1/2, ..., 1/M, each equally likely, and t a multiple of 2d in [2d, 1]
(the times a 1 / (2d)-step sampler visits), uniform; the finest level's half step d = 1 / (2M) is queried
at d = 0 (the instantaneous velocity, which flow matching trains). A fraction ``bootstrap`` of each batch
(Frans et al.: 1/4) takes the self-consistency target, the rest flow matching at d = 0, t uniform in (0, 1),
target eps - x_0. The per-example loss is the squared error per dimension.
"""
from __future__ import annotations

import math

import torch

from ddpmlab.core.process import FlowMapProcess
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.family import family_of
from ddpmlab.objectives.flow_matching import draw_times


class Shortcut:
    """``max_steps``: M, the finest step 1 / M (a power of two; Frans et al. use 128); ``bootstrap``: the
    fraction of each batch trained by self-consistency."""

    contract = FlowMapProcess  # it trains a few-step family's models (``Family.serves``)

    def __init__(self, max_steps: int = 128, bootstrap: float = 0.25):
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1 \
                or max_steps & (max_steps - 1):
            raise DDPMLabError(f"the shortcut's max_steps must be a power of two (1, 2, 4, ...), got {max_steps!r}")
        if not 0.0 <= bootstrap <= 1.0:
            raise DDPMLabError(f"the shortcut's bootstrap fraction must lie in [0, 1], got {bootstrap}")
        self.max_steps, self.bootstrap = max_steps, float(bootstrap)

    def draws(self, n: int, generator=None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(t, d, consistent) (n,) float64, float64, bool: the first round(bootstrap n) rows take
        self-consistency at step 2d (their ``d`` is the half step, 0 at the finest level), the rest flow
        matching (d = 0, t uniform)."""
        k = round(self.bootstrap * n)
        levels = int(math.log2(self.max_steps)) + 1  # 2d = 2^-j, j = 0..log2 M
        two_d = 2.0 ** -torch.randint(0, levels, (k,), generator=generator).to(torch.float64)
        slots = torch.rand(k, generator=generator, dtype=torch.float64)
        t_sc = two_d * (1 + torch.floor(slots / two_d))  # uniform over the multiples of 2d in [2d, 1]
        t_sc = torch.minimum(t_sc, torch.ones_like(t_sc))
        d_sc = torch.where(two_d * self.max_steps <= 1, torch.zeros_like(two_d), two_d / 2)
        t_fm = draw_times(n - k, "uniform", generator)
        t = torch.cat([t_sc, t_fm])
        d = torch.cat([d_sc, torch.zeros(n - k, dtype=torch.float64)])
        consistent = torch.arange(n) < k
        return t, d, consistent

    @staticmethod
    def step_of(d: torch.Tensor, consistent: torch.Tensor, max_steps: int) -> torch.Tensor:
        """The step size the model is trained at: 2d for self-consistency (1 / M at the finest level, whose
        half step is queried at 0), 0 for flow matching."""
        return torch.where(consistent, torch.where(d == 0, torch.full_like(d, 1.0 / max_steps), 2 * d),
                           torch.zeros_like(d))

    @staticmethod
    def consistency_target(model, x: torch.Tensor, t, d, cond=None) -> torch.Tensor:
        """(u(x, t, d) + u(x', t - d, d)) / 2 with x' = x - d u(x, t, d), without gradients (t, d floats or
        (B,) tensors). At the finest level's half step d = 0 it is the velocity at t: u(x, t, 1 / M) learns
        one Euler step."""
        with torch.no_grad():
            t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
            d = torch.as_tensor(d, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])
            first = model.average_velocity(x, t - d, t, cond)
            x_mid = x - d.reshape((-1,) + (1,) * (x.dim() - 1)) * first
            second = model.average_velocity(x_mid, t - 2 * d, t - d, cond)
        return (first + second) / 2

    def __call__(self, model, x0, generator=None, cond=None):
        family_of(model).check(self, "objective", "shortcut")
        n = x0.shape[0]
        t, d, consistent = self.draws(n, generator)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        t, d, consistent = t.to(x0.device, x0.dtype), d.to(x0.device, x0.dtype), consistent.to(x0.device)
        view = (n,) + (1,) * (x0.dim() - 1)
        x_t = (1 - t.reshape(view)) * x0 + t.reshape(view) * eps
        target = (eps - x0).clone()  # flow matching: the conditional velocity at d = 0
        rows = consistent.nonzero().reshape(-1)
        if rows.numel():
            c = None if cond is None else cond[rows]
            target[rows] = self.consistency_target(model, x_t[rows], t[rows], d[rows], c)
        step = self.step_of(d, consistent, self.max_steps)
        u = model.average_velocity(x_t, t - step, t, cond)
        return (u - target.detach()).reshape(n, -1).square().mean(1)

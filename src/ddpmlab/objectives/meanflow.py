"""The MeanFlow objective (Geng et al. 2025, Algorithm 1): regress the average velocity u(z_t, r, t) on
the MeanFlow identity (eq. 6)

    u(z_t, r, t) = v(z_t, t) - (t - r) d/dt u(z_t, r, t),
    d/dt u = v . grad_z u + d_t u                          (eq. 8: a Jacobian-vector product),

with z_t = (1 - t) x_0 + t eps, the conditional velocity v = eps - x_0 standing for v(z_t, t) (as in flow
matching), and the right-hand side under stop-gradient (the target). The JVP of the network in
(z, t) along (v, 1) comes from forward-mode AD (``torch.autograd.forward_ad``: dual numbers) in the same
forward pass that backward-mode AD then differentiates. Times: two draws from the
logit-normal density (loc -0.4, scale 1, Geng et al. Table 1), t the larger; with probability
1 - ``ratio`` r = t, where the identity is flow matching. The per-example loss is the adaptive weighting
(eq. 9 and sec. 4.3) sg(w) ||u - u_tgt||^2 with w = 1 / (||u - u_tgt||^2 + c)^p, ``p`` = 1 by default (0:
the plain squared error), per dimension.
"""
from __future__ import annotations

import warnings

import torch
import torch.autograd.forward_ad as fwad

from ddpmlab.core.process import FlowMapProcess
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.family import family_of
from ddpmlab.objectives.flow_matching import draw_times


class MeanFlow:
    """``ratio``: the fraction of draws with r < t (Geng et al. use 25 %); ``p``, ``c``: the adaptive
    weight; ``loc``, ``scale``: the logit-normal time density."""

    contract = FlowMapProcess  # it trains a few-step family's models (``Family.serves``)

    def __init__(self, ratio: float = 0.25, p: float = 1.0, c: float = 1e-3, loc: float = -0.4, scale: float = 1.0):
        if not 0.0 <= ratio <= 1.0:
            raise DDPMLabError(f"the MeanFlow ratio (draws with r < t) must lie in [0, 1], got {ratio}")
        if p < 0 or c <= 0:
            raise DDPMLabError(f"the adaptive weight needs p >= 0 and c > 0, got p = {p}, c = {c}")
        if not scale > 0:
            raise DDPMLabError(f"the logit-normal scale must be > 0, got {scale}")
        self.ratio, self.p, self.c, self.loc, self.scale = float(ratio), float(p), float(c), float(loc), float(scale)

    def times(self, n: int, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(r, t) (n,) float64: two logit-normal draws sorted, r set to t for a fraction 1 - ratio."""
        a = draw_times(n, "logit_normal", generator, self.loc, self.scale)
        b = draw_times(n, "logit_normal", generator, self.loc, self.scale)
        t, r = torch.maximum(a, b), torch.minimum(a, b)
        keep = torch.rand(n, generator=generator, dtype=torch.float64) < self.ratio
        return torch.where(keep, r, t), t

    def __call__(self, model, x0, generator=None, cond=None):
        family_of(model).check(self, "objective", "meanflow")
        n = x0.shape[0]
        r, t = (s.to(x0.device, x0.dtype) for s in self.times(n, generator))
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        view = (n,) + (1,) * (x0.dim() - 1)
        z = (1 - t.reshape(view)) * x0 + t.reshape(view) * eps
        v = eps - x0
        with fwad.dual_level(), warnings.catch_warnings():  # u and d/dt u = v . grad_z u + d_t u in one pass
            warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)  # torch's own
            out = model.average_velocity(fwad.make_dual(z, v), r, fwad.make_dual(t, torch.ones_like(t)), cond)
            u, dudt = fwad.unpack_dual(out)
        target = (v - (t - r).reshape(view) * dudt).detach()
        error = (u - target).reshape(n, -1).square().mean(1)  # per dimension
        if self.p == 0:
            return error
        return error / (error.detach() + self.c) ** self.p

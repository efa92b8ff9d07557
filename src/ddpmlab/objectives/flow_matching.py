"""The flow-matching objective (Lipman et al. 2023, eq. 23, conditional OT path; Liu et al. 2023, eq. 1):

    L(theta) = E_{t, x_0, eps} || v_theta(x_t, t) - (eps - x_0) ||^2,   x_t = (1 - t) x_0 + t eps,

per example the mean over dimensions, with t drawn from a time density: ``uniform`` on (0, 1), or
``logit_normal`` (t = sigmoid(m + s n), n ~ N(0, 1); Esser et al. 2024, eq. 19), which puts more draws
in the middle of the path. The minimiser is the exact velocity E[eps - x_0 | x_t] (``FlowMixtureOracle``).
"""
from __future__ import annotations

import torch

from ddpmlab.core.paths import family_of
from ddpmlab.core.utils import DDPMLabError, mean_flat

TIME_SAMPLINGS = ("uniform", "logit_normal")


def draw_times(n: int, kind: str, generator=None, loc: float = 0.0, scale: float = 1.0) -> torch.Tensor:
    """``n`` times in (0, 1) from the density ``kind`` (float64)."""
    if kind == "uniform":
        return torch.rand(n, generator=generator, dtype=torch.float64)
    if kind == "logit_normal":
        return torch.sigmoid(loc + scale * torch.randn(n, generator=generator, dtype=torch.float64))
    raise DDPMLabError(f"time sampling must be one of {', '.join(TIME_SAMPLINGS)}, got {kind!r}")


class FlowMatching:
    """Per example: ||v_theta(x_t, t) - (eps - x_0)||^2 averaged over dimensions, t from ``time_sampling``."""

    def __init__(self, time_sampling: str = "uniform", loc: float = 0.0, scale: float = 1.0):
        if time_sampling not in TIME_SAMPLINGS:
            raise DDPMLabError(f"time sampling must be one of {', '.join(TIME_SAMPLINGS)}, got {time_sampling!r}")
        self.time_sampling, self.loc, self.scale = time_sampling, loc, scale

    def bind(self, model) -> None:
        if family_of(model) != "flow":
            raise DDPMLabError("the flow_matching objective trains a flow model (FlowModel, model.family = 'flow'); "
                               "a DDPM model trains with simple, vlb, hybrid or trajectory_bound")

    def __call__(self, model, x0, generator=None, cond=None):
        self.bind(model)
        n = x0.shape[0]
        t = draw_times(n, self.time_sampling, generator, self.loc, self.scale)
        eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        tb = t.to(x0.device, x0.dtype).reshape((n,) + (1,) * (x0.dim() - 1))
        path = model.path
        x_t = path.alpha(tb) * x0 + path.sigma(tb) * eps
        target = path.velocity(x0, eps, tb)
        return mean_flat((model.velocity(x_t, t.to(x0.device), cond) - target) ** 2)

"""Multistep consistency sampling (Song et al. 2023, Algorithm 1) of a flow-map model (a consistency
model, or any ``FlowMapModel``: its map to 0 is the consistency function f(x_t, t) -> x_0).

On the grid's times 1 = t_0 > t_1 > ... > t_K = 0: x_0 = f(x_1, 1) from the prior x_1 ~ N(0, I), then for
each later time t_i > 0 the estimate is noised back onto the linear path, x_{t_i} = (1 - t_i) x_0 + t_i z
with fresh z ~ N(0, I) (q(x_t | x_0); the paper's x + sqrt(t^2 - eps^2) z in its variance-exploding
units), and mapped again, x_0 = f(x_{t_i}, t_i): one network call per step. The default (uniform) grid
visits t = 1 in 1 step; 1, 1/2 in 2; 1, 3/4, 1/2, 1/4 in 4 (``sample.grid`` chooses other spacings).
"""
from __future__ import annotations

import torch

from ddpmlab.core.process import FlowMapProcess
from ddpmlab.sampling.registry import SAMPLERS
from ddpmlab.sampling.samplers import check_finite, noise_like


@SAMPLERS.register("consistency")
@torch.no_grad()
def consistency_sample(model, x: torch.Tensor, grid: torch.Tensor, generator: torch.Generator | None = None,
                       cond=None, callback=None) -> torch.Tensor:
    """f at each grid time but the last, noised back to the next (``generator`` draws the noise z)."""
    times = grid.tolist()
    for i, (t, s) in enumerate(zip(times[:-1], times[1:])):
        x = model.flow_map(x, t, 0.0, cond)
        check_finite(x, "consistency", f"{t:.4g}")
        if s > 0:
            x = (1 - s) * x + s * noise_like(x, generator)
        if callback is not None:
            callback(i, s, x)
    return x


consistency_sample.contract = FlowMapProcess  # it needs a flow map to 0 (``Family.serves``)

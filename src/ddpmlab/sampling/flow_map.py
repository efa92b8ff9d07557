"""Few-step sampling of a flow-map model (``FlowMapModel``: MeanFlow, ...): one network call per step,
x_{t_{i+1}} = flow_map(x_{t_i}, t_i, t_{i+1}) down the grid's times from t = 1 (the prior) to 0 (Geng et
al. 2025, eq. 2; 1-step sampling is x_0 = flow_map(x_1, 1, 0))."""
from __future__ import annotations

import torch

from ddpmlab.core.process import FlowMapProcess
from ddpmlab.sampling.registry import SAMPLERS
from ddpmlab.sampling.samplers import check_finite


@SAMPLERS.register("flow_map")
@torch.no_grad()
def flow_map_sample(model, x: torch.Tensor, grid: torch.Tensor, generator: torch.Generator | None = None, cond=None,
                    callback=None) -> torch.Tensor:
    """The map from each grid time to the next (deterministic: ``generator`` is not used)."""
    times = grid.tolist()
    for i, (t, s) in enumerate(zip(times[:-1], times[1:])):
        x = model.flow_map(x, t, s, cond)
        check_finite(x, "flow_map", f"{s:.4g}")
        if callback is not None:
            callback(i, s, x)
    return x


flow_map_sample.contract = FlowMapProcess  # it needs a flow map (``Family.serves``)

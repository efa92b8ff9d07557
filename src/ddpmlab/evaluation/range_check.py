"""Samples far outside the data's range: the one check behind ``ddpmlab sample``'s and ``evaluate``'s warning.

The rule (``RULE``): a sample is out of range when any of its coordinates lies more than ``K_STD`` = 10
standard deviations of the training data from that coordinate's mean, the standard deviation pooled over
coordinates (the root mean of the per-coordinate variances, so a constant pixel does not make every
sample "out of range"). A model that has learnt anything keeps every sample within a few of them; a
diverged sampler (a deterministic one whose x_0 estimate explodes, e.g. a cosine schedule without
preconditioning) leaves most of its samples hundreds of them away.
"""
from __future__ import annotations

import warnings

import torch

from ddpmlab.core.utils import DDPMLabWarning

K_STD = 10.0
RULE = f"a coordinate farther than {K_STD:g} standard deviations of the training data from its mean"


def data_stats(x: torch.Tensor) -> tuple[torch.Tensor, float]:
    """(per-coordinate mean, pooled standard deviation) of data ``x`` (N, *dims), in float64."""
    x = x.reshape(len(x), -1).double()
    return x.mean(0), float(x.var(0).mean().sqrt())


def out_of_range(samples: torch.Tensor, stats: tuple[torch.Tensor, float]) -> tuple[int, float]:
    """(how many samples break ``RULE``, the largest finite distance of any coordinate from its mean in
    pooled standard deviations) for ``samples`` (N, *dims) in the units of ``stats`` (``data_stats``); a
    sample holding NaN or infinity counts as out of range."""
    mean, std = stats
    z = (samples.reshape(len(samples), -1).double() - mean).abs().amax(1) / max(std, 1e-12)
    z = torch.where(torch.isnan(z), torch.inf, z)
    finite = z[torch.isfinite(z)]
    return int((z > K_STD).sum()), float(finite.max()) if len(finite) else 0.0


def warn_out_of_range(result: dict | None, what: str) -> None:
    """One ``DDPMLabWarning`` line when ``result`` (``finished.run_range``) counts any sample out of range."""
    if result and result["count"]:
        warnings.warn(f"{result['count']} of {result['of']} {what} lie far outside the data's range ({RULE}; "
                      f"the farthest {result['worst_std']:.3g} of them): the model or its sampler diverged (try "
                      f"model.precondition = true, another sampler or more steps)", DDPMLabWarning, stacklevel=2)

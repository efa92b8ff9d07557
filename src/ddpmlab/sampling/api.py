"""``sample``: draw from any model of the contract with any registered sampler."""
from __future__ import annotations

import inspect

import torch

from ddpmlab.core.utils import DDPMLabError
from ddpmlab.sampling.registry import SAMPLERS


def sample(model, n: int, sampler: str = "ancestral", steps: int = 0, generator: torch.Generator | None = None,
           cond=None, keep_trajectory: bool = False, x_T: torch.Tensor | None = None, **options) -> torch.Tensor:
    """``n`` samples (n, *dims) of ``model`` by the registered ``sampler`` on ``steps`` steps (0: all T).

    x_T ~ N(0, I) is drawn from ``generator`` on the CPU (the same stream on any device) in the model's
    dtype and device, unless given. ``cond`` is a per-example condition (n, ...) for a conditional model;
    ``options`` go to the sampler (``eta`` for ddim; ``solver``, ``rtol``, ``atol`` for ode).
    With ``keep_trajectory`` the states (K + 1, n, *dims) from x_0 (index 0) to x_T.
    """
    fn = SAMPLERS.get(sampler)
    n = int(n)
    if n < 1:
        raise DDPMLabError(f"the number of samples must be >= 1, got {n}")
    shape = (n,) + tuple(model.data_shape)
    if x_T is None:
        x_T = torch.randn(shape, generator=generator)
    elif tuple(x_T.shape) != shape:
        raise DDPMLabError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
    x = x_T.to(model.device, model.dtype)
    if x is x_T:
        x = x.clone()
    if cond is not None:
        cond = torch.as_tensor(cond).to(model.device)
    try:
        return fn(model, x, steps, generator=generator, cond=cond, keep_trajectory=keep_trajectory, **options)
    except TypeError:
        unknown = set(options) - set(inspect.signature(fn).parameters)
        if unknown:
            raise DDPMLabError(f"sampler {sampler!r} takes no option {', '.join(sorted(unknown))}") from None
        raise


def draw_samples(model, n: int, sampler: str = "ancestral", steps: int = 0, eta: float = 0.0,
                 generator: torch.Generator | None = None, keep_trajectory: bool = False,
                 ode_solver: str = "dpm_solver", cond=None) -> torch.Tensor:
    """``sample`` with a run config's sample options (``sample.eta``, ``sample.ode_solver``): each goes
    to the sampler only where the sampler takes it."""
    accepted = inspect.signature(SAMPLERS.get(sampler)).parameters
    options = {k: v for k, v in (("eta", eta), ("solver", ode_solver)) if k in accepted}
    return sample(model, n, sampler, steps, generator=generator, cond=cond, keep_trajectory=keep_trajectory,
                  **options)

"""Sampling: the registered samplers (ancestral, ddim, ode) and ODE solvers, the time grids
(``ddpmlab.sampling.grids``), and ``sample``."""
from ddpmlab.sampling import ode as _ode  # noqa: F401  (registers the ode sampler and its solvers)
from ddpmlab.sampling.api import draw_samples, sample
from ddpmlab.sampling.registry import ODE_SOLVERS, SAMPLERS
from ddpmlab.sampling.samplers import ancestral_sample, ddim_sample

__all__ = ["ODE_SOLVERS", "SAMPLERS", "ancestral_sample", "ddim_sample", "draw_samples", "sample"]

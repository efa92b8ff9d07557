"""The registered samplers and ODE solvers (``ddpmlab.core.registry.Registry``).

A sampler is a function ``f(model, x, grid, generator=None, cond=None, callback=None, **options)`` (the
k-diffusion shape) that runs the reverse process from x = x_T (n, *dims) down the time ``grid`` made
outside it (``ddpmlab.sampling.grids``: a DDPM's steps T, ..., 0, a flow's times 1, ..., 0), calls
``callback(i, t, x)`` after each step i with the state x at grid time t, and returns the sample (n, *dims).
Register one with ``@SAMPLERS.register("name")``; ``ddpmlab.sample(model, n, sampler="name", steps=K,
grid="karras")`` then runs it on any registered grid, and keeps its trajectory from the callbacks. An
ODE solver of the probability-flow ODE has the same signature without ``generator`` and is chosen by
``sampler="ode", solver="name"``. A sampler's (or solver's) ``contract`` attribute is the base class of the
models it serves (``ddpmlab.core.contract``: ``ReverseProcess``, the DDPM family's, when absent;
``ProcessModel`` for every family); ``Family.serves`` matches it against a model's family.
"""
from ddpmlab.core.registry import Registry

SAMPLERS = Registry("sampler")
ODE_SOLVERS = Registry("ODE solver")

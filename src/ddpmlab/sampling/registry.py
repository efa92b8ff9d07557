"""The registered samplers and ODE solvers (``ddpmlab.core.registry.Registry``).

A sampler is a function ``f(model, x, steps, generator=None, cond=None, keep_trajectory=False, **options)``
that runs the reverse process from x = x_T (n, *dims) on ``steps`` steps of ``model.schedule`` and
returns x_0 (n, *dims), or with ``keep_trajectory`` the states (K + 1, n, *dims) from x_0 (index 0) to
x_T. Register one with ``@SAMPLERS.register("name")``; ``ddpmlab.sample(model, n, sampler="name")``
then runs it. An ODE solver for the probability-flow ODE has the same signature without ``generator``
and is chosen by ``sampler="ode", solver="name"``.
"""
from ddpmlab.core.registry import Registry

SAMPLERS = Registry("sampler")
ODE_SOLVERS = Registry("ODE solver")

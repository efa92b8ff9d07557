"""Sampling: the registered samplers and ODE solvers (``registry``), the time grids (``grids``), and
``sample`` (``api``). Importing the package registers the built-in samplers and solvers."""
from ddpmlab.sampling import flow_map as _flow_map  # noqa: F401  (registers the few-step flow_map sampler)
from ddpmlab.sampling import consistency as _consistency  # noqa: F401  (registers multistep consistency sampling)
from ddpmlab.sampling import ode as _ode  # noqa: F401  (registers ode and, by its imports, every other built-in)

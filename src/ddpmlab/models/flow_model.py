"""``FlowModel``: your network as a velocity field on the linear path (flow matching, Lipman et al. 2023;
rectified flow, Liu et al. 2023), the second process family beside ``DiffusionModel``.

x_t = (1 - t) x_0 + t eps for t in [0, 1] (``ddpmlab.core.paths.LinearPath``); the network is called as
``net(x, tau)`` (or ``net(x, tau, cond)``) with tau = t (B,) and predicts the velocity
v(x_t, t) = E[eps - x_0 | x_t], data-shaped; with ``precondition=True`` it sees unit-variance input and
predicts the normalised residual around the data's Gaussian fit (``VelocityPreconditioner``); either way
it trains on the plain flow-matching loss ||v - (eps - x_0)||^2. Samples come from the ODE dx/dt = v from
t = 1 (N(0, I)) down to t = 0 (``ddpmlab sample --sampler ode``, a flow run's default). A flow has no
discrete reverse chain: it is a ``VelocityModel`` (``ddpmlab.core.contract``), not a ``ReverseModel``, and
what needs the chain (ancestral and DDIM sampling, the bound) refuses it in one line naming what to use.
"""
from __future__ import annotations

import torch
from torch import nn

from ddpmlab.core.process import AroundNetwork, VelocityProcess
from ddpmlab.core.paths import LinearPath
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models import fast_path
from ddpmlab.models.preconditioning import VelocityPreconditioner



class FlowModel(AroundNetwork, nn.Module, VelocityProcess):
    """A velocity network on the linear path.

    >>> model = FlowModel(net, data_shape=(2,))
    >>> v = model.velocity(x_t, t)          # t a float or a (B,) tensor in [0, 1]
    """

    def __init__(self, net: nn.Module, data_shape: tuple = (1,), net_kwargs: dict | None = None,
                 precondition: bool = False, data_moments: tuple[float, float] | None = None):
        super().__init__()
        self.wrap_network(net, net_kwargs, data_shape)
        self.path = LinearPath()
        self.precond = VelocityPreconditioner(self.path) if precondition else None
        if data_moments is not None:
            self.set_data_moments(*data_moments)

    def double(self):
        return nn.Module.double(self)

    def _net(self, x, tau, cond):
        out = fast_path.call_net(self.net, x, tau) if cond is None else self.net(x, tau, cond)
        if tuple(out.shape) != tuple(x.shape):
            raise DDPMLabError(f"the network's output has shape {tuple(out.shape)}, but a flow model's velocity "
                               f"has the data's shape {tuple(x.shape)}")
        return out

    def _at(self, x: torch.Tensor, t):
        """(network times (B,), preconditioner coefficients at t or None)."""
        tau = torch.as_tensor(t, dtype=torch.float64, device=x.device).reshape(-1).expand(x.shape[0])
        if self.precond is None:
            return tau, None
        self.precond.check_moments()
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1)  # one time for all rows: (1,)
        return tau, self.precond.coefficients(t.reshape((-1,) + (1,) * (x.dim() - 1)))

    def velocity(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """The predicted velocity at time t (a float or a (B,) tensor in [0, 1]), shaped like x."""
        tau, coef = self._at(x, t)
        if coef is None:
            return self._net(x, tau, cond)
        return self.precond.velocity(self._net(self.precond.scale_input(x, coef), tau, cond), x, coef)

    def forward(self, x_t: torch.Tensor, t, cond=None) -> torch.Tensor:
        return self.velocity(x_t, t, cond)

    def describe(self) -> dict:
        """The ``[model]`` settings that rebuild this model (``ddpmlab.models.family``)."""
        return {"family": self.family, "precondition": self.precond is not None, **self.network_description()}

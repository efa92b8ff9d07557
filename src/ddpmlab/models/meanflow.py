"""``MeanFlowModel``: the average velocity of a flow (MeanFlow, Geng et al. 2025), a few-step family.

On the linear path x_t = (1 - t) x_0 + t eps (t = 1 the prior) the flow moves with the velocity
v(x_t, t); the average velocity over [r, t] is (eq. 3)

    u(x_t, r, t) = 1 / (t - r) * integral_r^t v(x_tau, tau) d tau,

so one call carries x_t to x_r = x_t - (t - r) u(x_t, r, t) (eq. 2): ``flow_map(x, t, r)``. At r = t it
is the instantaneous velocity v (``velocity``), so the ODE samplers and the ODE likelihood run on it too.
The network is your flow network (``net.embed_time`` / ``net.forward_embedded``, as ``MLPDenoiser`` has)
with a second time embedding for the interval h = t - r added to the time's (Geng et al. sec. 4.3
condition on (t, t - r)); the model owns that embedding. It trains by the MeanFlow identity
(``ddpmlab.objectives.meanflow``).
"""
from __future__ import annotations

import torch
from torch import nn

from ddpmlab.core.paths import LinearPath
from ddpmlab.core.process import AroundNetwork, FlowMapProcess
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.flow_map import exact_flow_map
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.models.mlp import timestep_embedding


class MeanFlowModel(AroundNetwork, nn.Module, FlowMapProcess):
    """Your network as the average velocity u(x, r, t) on the linear path.

    >>> model = MeanFlowModel(MLPDenoiser(2), data_shape=(2,))
    >>> x0 = model.flow_map(torch.randn(8, 2), 1.0, 0.0)   # one step from the prior to the data
    """

    def __init__(self, net: nn.Module, data_shape: tuple = (1,), net_kwargs: dict | None = None):
        super().__init__()
        self.wrap_network(net, net_kwargs, data_shape)
        if not (callable(getattr(net, "embed_time", None)) and callable(getattr(net, "forward_embedded", None))):
            raise DDPMLabError(f"a MeanFlow model needs a network with embed_time and forward_embedded (as "
                               f"ddpmlab's MLPDenoiser), got {type(net).__name__}")
        self.path = LinearPath()
        width = net.embed_time(torch.zeros(1)).shape[-1]
        self.interval_dim = int(getattr(net, "time_dim", 32))
        self.interval = nn.Sequential(nn.Linear(self.interval_dim, width), nn.SiLU(), nn.Linear(width, width))

    def double(self):
        return nn.Module.double(self)

    def average_velocity(self, x: torch.Tensor, r, t, cond=None) -> torch.Tensor:
        """u(x, r, t) for times r <= t (floats or (B,) tensors in [0, 1]), shaped like x."""
        n = x.shape[0]
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1).expand(n)
        r = torch.as_tensor(r, dtype=x.dtype, device=x.device).reshape(-1).expand(n)
        h = timestep_embedding(t - r, self.interval_dim).to(x.dtype)
        temb = self.net.embed_time(t, cond).to(x.dtype) + self.interval(h)
        out = self.net.forward_embedded(x, temb)
        if tuple(out.shape) != tuple(x.shape):
            raise DDPMLabError(f"the network's output has shape {tuple(out.shape)}, but an average velocity has "
                               f"the data's shape {tuple(x.shape)}")
        return out

    def flow_map(self, x: torch.Tensor, t, s, cond=None) -> torch.Tensor:
        """x_s = x_t - (t - s) u(x_t, s, t) (Geng et al. eq. 2): the state at time s <= t, in one call."""
        gap = torch.as_tensor(t, dtype=x.dtype, device=x.device) - torch.as_tensor(s, dtype=x.dtype, device=x.device)
        return x - gap.reshape((-1,) + (1,) * (x.dim() - 1)) * self.average_velocity(x, s, t, cond)

    def velocity(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """v(x, t) = u(x, t, t): the average over an empty interval."""
        return self.average_velocity(x, t, t, cond)

    def forward(self, x_t: torch.Tensor, r, t, cond=None) -> torch.Tensor:
        return self.average_velocity(x_t, r, t, cond)

    def describe(self) -> dict:
        """The ``[model]`` settings that rebuild this model (``ddpmlab.models.family``)."""
        return {"family": self.family, **self.network_description()}


class MeanFlowMixtureOracle(FlowMixtureOracle, FlowMapProcess):
    """The exact MeanFlow model of a Gaussian mixture: its velocity is the exact flow's
    (``FlowMixtureOracle``) and its map the exact flow map (``ddpmlab.models.flow_map.exact_flow_map``:
    closed form in 1-D, RK45 at rtol 1e-8 above), so u(x, r, t) = (x - Phi_{t -> r}(x)) / (t - r)."""

    def flow_map(self, x: torch.Tensor, t, s, cond=None) -> torch.Tensor:
        if cond is not None:
            raise DDPMLabError("the exact MeanFlow oracle is unconditional; it takes no condition")
        return exact_flow_map(self, x, t, s).to(x.dtype)

    def average_velocity(self, x: torch.Tensor, r, t, cond=None) -> torch.Tensor:
        """(x - Phi_{t -> r}(x)) / (t - r), and the exact velocity at r = t."""
        if float(r) == float(t):
            return self.velocity(x, t, cond)
        return (x - self.flow_map(x, t, r, cond)) / (float(t) - float(r))

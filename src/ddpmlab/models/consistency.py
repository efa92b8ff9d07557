"""``ConsistencyModel``: the consistency function of a flow (Song et al. 2023), a few-step family.

On the linear path x_t = (1 - t) x_0 + t eps (t = 1 the prior) the probability-flow ODE carries x_t to
its data point x_0 = Phi_{t -> 0}(x_t); the consistency function f(x_t, t) learns that map directly, so
one call takes the prior to the data. It is parameterised (Song et al. 2023, sec. 3 and appendix C) as

    f(x, t) = c_skip(t) x + c_mean(t) m + c_out(t) F(c_in(t) (x - (1 - t) m), t),

with the network F and the data's scalar mean m and standard deviation S (1 and 0 without
``precondition``: then c_mean = 0). The skips are the exact map of the data's Gaussian fit N(m, S^2),
Phi_{t -> 0}(x) = m + S (x - (1 - t) m) / r_t with r_t^2 = (1 - t)^2 S^2 + t^2, taken at the shifted time
u = (t - t_min) / (1 - t_min) (the paper's sigma - sigma_min), so that at t = T_MIN

    c_skip = 1 / sqrt((1 - u)^2 + u^2 / S^2) = 1,   c_mean = 1 - (1 - u) c_skip = 0,   c_out = u c_skip = 0

hold exactly in floating point: f(x, T_MIN) = x bit for bit (the boundary condition), and below T_MIN f is
the identity too. A zero network is the Gaussian fit's exact map (c_in = 1 / r_t: unit-variance input).
As a ``FlowMapProcess`` its map to s = 0 is f; to s > 0 it is the straight line through f,
x_s = x - (t - s) (x - f) / t (DDIM on the linear path), the implied velocity being (x - f(x, t)) / t, so the
flow_map sampler and the ODE samplers take it too. It trains by consistency training or distillation
(``ddpmlab.objectives.consistency``) and samples by the ``consistency`` sampler (multistep consistency
sampling, ``ddpmlab.sampling.consistency``).
"""
from __future__ import annotations

import torch
from torch import nn

from ddpmlab.core.paths import LinearPath
from ddpmlab.core.process import AroundNetwork, FlowMapProcess
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models import fast_path
from ddpmlab.models.meanflow import MeanFlowMixtureOracle
from ddpmlab.models.preconditioning import GaussianFit

T_MIN = 0.002  # the boundary time epsilon (Song et al. 2023 use sigma_min = 0.002; t ~ sigma near the data)


class ConsistencyProcess(FlowMapProcess):
    """The consistency family's base: a flow map whose map to s = 0 is the consistency function (what
    the consistency objectives train, ``contract`` of ``ddpmlab.objectives.consistency``)."""

    family = "consistency"
    sigma_data = 1.0  # the data's standard deviation its objectives scale their noise levels by


def _column(t, x: torch.Tensor) -> torch.Tensor:
    """t (a float or a (B,) tensor) as a (B, 1, ...) column in x's dtype and device, broadcastable to x."""
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device).reshape(-1)
    return t.reshape((-1,) + (1,) * (x.dim() - 1)).expand((x.shape[0],) + (1,) * (x.dim() - 1))


def boundary_coefficients(t: torch.Tensor, std) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_mean, c_out) at times t (a tensor) for data standard deviation ``std``; (1, 0, 0)
    exactly at t <= T_MIN."""
    u = (t - T_MIN).clamp_min(0) / (1 - T_MIN)
    c_skip = 1 / ((1 - u).square() + (u / std).square()).sqrt()
    return c_skip, 1 - (1 - u) * c_skip, u * c_skip


class ConsistencyModel(AroundNetwork, nn.Module, ConsistencyProcess):
    """Your network as the consistency function f(x_t, t) -> x_0 on the linear path.

    >>> model = ConsistencyModel(MLPDenoiser(1), data_shape=(1,))
    >>> x0 = model.flow_map(torch.randn(8, 1), 1.0, 0.0)   # one step from the prior to the data
    """

    def __init__(self, net: nn.Module, data_shape: tuple = (1,), net_kwargs: dict | None = None,
                 precondition: bool = False, data_moments: tuple[float, float] | None = None):
        super().__init__()
        self.wrap_network(net, net_kwargs, data_shape)
        self.path = LinearPath()
        self.precond = GaussianFit() if precondition else None
        if data_moments is not None:
            self.set_data_moments(*data_moments)

    def double(self):
        return nn.Module.double(self)

    def _moments(self, x: torch.Tensor):
        """The data's (mean, standard deviation): the Gaussian fit's, or (0, 1) without preconditioning."""
        if self.precond is None:
            return 0.0, 1.0
        self.precond.check_moments()
        return self.precond.data_mean.to(x.dtype), self.precond.data_std.to(x.dtype)

    @property
    def sigma_data(self) -> float:
        """The data's standard deviation S (1 without preconditioning)."""
        return 1.0 if self.precond is None else float(self.precond.data_std)

    def consistency(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """f(x, t) at times t (a float or a (B,) tensor in [0, 1]), shaped like x; f(x, t) = x for t <= T_MIN."""
        if cond is not None:
            raise DDPMLabError("a consistency model is unconditional here; it takes no condition")
        mean, std = self._moments(x)
        tc = _column(t, x)
        c_skip, c_mean, c_out = boundary_coefficients(tc, std)
        c_in = 1 / ((1 - tc).square() * std * std + tc.square()).sqrt()
        tau = tc.reshape(-1).to(torch.float64)
        out = fast_path.call_net(self.net, c_in * (x - (1 - tc) * mean), tau)
        if tuple(out.shape) != tuple(x.shape):
            raise DDPMLabError(f"the network's output has shape {tuple(out.shape)}, but a consistency function "
                               f"has the data's shape {tuple(x.shape)}")
        return c_skip * x + c_mean * mean + c_out * out

    def flow_map(self, x: torch.Tensor, t, s, cond=None) -> torch.Tensor:
        """f(x, t) where s = 0; else x - (t - s) (x - f) / t, the straight line through f."""
        f = self.consistency(x, t, cond)
        tc, sc = _column(t, x), _column(s, x)
        line = x - (tc - sc) * (x - f) / tc.clamp_min(T_MIN)
        return torch.where(sc == 0, f, line)

    def velocity(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """The velocity f implies, (x - f(x, t)) / t (0 below T_MIN, where f is the identity)."""
        return (x - self.consistency(x, t, cond)) / _column(t, x).clamp_min(T_MIN)

    def forward(self, x_t: torch.Tensor, t, cond=None) -> torch.Tensor:
        return self.consistency(x_t, t, cond)

    def describe(self) -> dict:
        """The ``[model]`` settings that rebuild this model (``ddpmlab.models.family``)."""
        return {"family": self.family, "precondition": self.precond is not None, **self.network_description()}


class ConsistencyMixtureOracle(MeanFlowMixtureOracle, ConsistencyProcess):
    """The exact consistency function of a Gaussian mixture: the exact flow map to 0
    (``ddpmlab.models.flow_map.exact_flow_map``: closed form in 1-D, RK45 at rtol 1e-8 above)."""

    family = "consistency"

    def consistency(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        return self.flow_map(x, t, 0, cond)

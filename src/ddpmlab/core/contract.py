"""The model contracts: what samplers, objectives and metrics may ask of a model, one per family.

- ``ReverseModel`` (the DDPM family): the discrete-time Gaussian reverse chain. A trained
  ``DiffusionModel``, the seed's two networks and the exact ``MixtureOracle`` satisfy it; its base class
  with the contract's defaults is ``ddpmlab.core.process.ReverseProcess``.
- ``VelocityModel`` (the flow family): a velocity field on a path (base class ``VelocityProcess``).
- ``FlowMapModel``: the room left for a few-step family (a map from one time to another).

Code below the models never asks which class it holds: it asks the model (``velocity_field``, ``probe``,
``describe``: ``ddpmlab.core.process.ProcessModel``) or its family (``ddpmlab.models.family.family_of``).
``isinstance(x, ReverseModel)`` is a bool for any x.

Time convention: see ``ddpmlab.core.schedule`` (paper steps t = 0..T, t = 0 the data).
"""
from __future__ import annotations

from typing import NamedTuple, Protocol, runtime_checkable

import torch

from ddpmlab.core.schedule import NoiseSchedule


class PMeanVariance(NamedTuple):
    """The reverse step p(x_{t-1} | x_t) = N(mean, variance) (Ho et al. 2020, eq. 1), with the x_0 and the
    noise it implies (eq. 7 and 11 inverted). Every tensor is shaped like x_t."""

    mean: torch.Tensor
    variance: torch.Tensor
    log_variance: torch.Tensor
    pred_x0: torch.Tensor
    pred_eps: torch.Tensor


@runtime_checkable
class ReverseModel(Protocol):
    """What every model offers.

    - ``schedule`` (``NoiseSchedule``) and ``data_shape`` (one example's shape, e.g. ``(2,)`` or ``(1, 8, 8)``);
    - ``dtype`` and ``device``: where the model computes (samplers create their tensors there);
    - ``p_mean_variance(x_t, t, cond=None)``: the reverse step at integer paper steps t (B,);
    - ``score(x, t_c, alpha_bar, cond=None)``: grad_x log q(x) at the continuous step t_c in [0, T],
      where the schedule's alpha-bar is ``alpha_bar`` (the probability-flow ODE's need);
    - ``respaced(num_steps)``: the same model on fewer, evenly kept steps, or on the kept steps given as a
      list (``NoiseSchedule.spaced``; ancestral sampling on a grid);
    ``cond`` is an optional per-example condition (B, ...) (class labels), passed to the network.
    """

    schedule: NoiseSchedule
    data_shape: tuple

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def p_mean_variance(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> PMeanVariance: ...

    def score(self, x: torch.Tensor, t_c: float, alpha_bar: float, cond=None) -> torch.Tensor: ...

    def respaced(self, num_steps: int) -> "ReverseModel": ...


def step_tensor(model, n: int, t: int) -> torch.Tensor:
    """Paper step ``t`` for a batch of ``n``, as the long tensor (n,) on the model's device."""
    return torch.full((n,), int(t), dtype=torch.long, device=model.device)


@runtime_checkable
class VelocityModel(Protocol):
    """What a model of the flow family offers: ``data_shape``, ``dtype``, ``device`` and
    ``velocity(x, t, cond=None)``, the velocity v(x_t, t) on its path at time t in [0, 1] (t = 0 the data,
    t = 1 the prior N(0, I); a float or a (B,) tensor), shaped like x."""

    data_shape: tuple

    @property
    def dtype(self) -> torch.dtype: ...

    @property
    def device(self) -> torch.device: ...

    def velocity(self, x: torch.Tensor, t, cond=None) -> torch.Tensor: ...


@runtime_checkable
class FlowMapModel(Protocol):
    """Room for a few-step family: ``flow_map(x, t, s, cond=None)``, the state at time s of the flow that
    is at x at time t (Phi_{t -> s}(x)), in one network call."""

    data_shape: tuple

    def flow_map(self, x: torch.Tensor, t, s, cond=None) -> torch.Tensor: ...

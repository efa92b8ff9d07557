"""Objectives: each a small callable ``objective(model, x0, generator=None, cond=None) -> per-example loss (B,)``
(EDM's ``training/loss.py``), registered by name in ``OBJECTIVES``.

- ``TrajectoryBound``: the seed's bound over one whole trajectory (Ho et al. eq. 3), scaled by
  1/(T + 1) as the seed did; any model of the contract.
- ``VLB``: the Rao-Blackwellised bound (eq. 5): one t per example and the analytic KL to
  q(x_{t-1} | x_t, x_0); an unbiased estimate of the same bound, with far lower variance and T times
  cheaper; any model of the contract.
- ``Simple``: ||target - prediction||^2 (eq. 14), the target chosen by the mean type; for a
  preconditioned model divided by the residual scale squared (``ddpmlab.models.preconditioning``).
- ``FlowMatching`` (``flow_matching``): the velocity regression of a flow model
  (``ddpmlab.objectives.flow_matching``).
- ``Hybrid``: simple + weight * bound, the bound seeing a stop-gradient mean, so it trains only the
  variance (Nichol & Dhariwal 2021, sec. 3.1).

``Simple`` and ``Hybrid`` need the network's raw output: a ``DiffusionModel`` (``model(x_t, t, cond)``,
``simple_error``, ``split_output``, ``p_mean_variance_from_output``). Your own objective is
any callable of the same signature; optional ``bind(model)``, ``state_dict()`` and ``load_state_dict(d)``
let the trainer prepare it and checkpoint its state.
"""
from __future__ import annotations

import torch

from ddpmlab.core.diffusion import q_sample
from ddpmlab.core.gaussian import prior_kl_nats, step_term_nats
from ddpmlab.core.paths import family_of
from ddpmlab.core.registry import Registry
from ddpmlab.core.utils import DDPMLabError, mean_flat
from ddpmlab.objectives.flow_matching import FlowMatching
from ddpmlab.objectives.seed_bound import SeedTrajectoryBound
from ddpmlab.objectives.timesteps import ImportanceTimesteps, UniformTimesteps

OBJECTIVES = Registry("objective")


@OBJECTIVES.register("trajectory_bound")
class TrajectoryBound:
    """The seed's objective: whole-trajectory bound / (T + 1), per example."""

    def __init__(self):
        self._bound = None
        self._noise = None

    def bind(self, model) -> None:
        if self._bound is None or self._bound.model is not model:
            self._bound = SeedTrajectoryBound(model)

    def __call__(self, model, x0, generator=None, cond=None):
        if cond is not None:
            raise ValueError("the whole-trajectory bound is unconditional")
        self.bind(model)
        T = model.schedule.T
        shape = (T,) + tuple(x0.shape)
        if self._noise is None or self._noise.shape != shape or self._noise.dtype != x0.dtype:
            self._noise = torch.empty(shape, dtype=x0.dtype)  # reused buffer, (T, B, *dims)
        torch.randn(shape, generator=generator, out=self._noise)
        return self._bound(x0, self._noise.to(x0.device)) / (T + 1)


class PerStep:
    """Shared by the single-t objectives: draw t and noise, form x_t. The timestep sampler is made for
    the model's T when first bound (``bind``), and its state is checkpointed (``state_dict``)."""

    def __init__(self, importance_sampling: bool = False):
        self.importance_sampling = importance_sampling
        self.timesteps = None

    def bind(self, model) -> None:
        if family_of(model) != "ddpm":
            raise DDPMLabError(f"objective {type(self).__name__} trains a DDPM model; a flow model "
                               "(model.family = 'flow') trains with flow_matching")
        T = model.schedule.T
        if self.timesteps is None or self.timesteps.T != T:
            self.timesteps = ImportanceTimesteps(T) if self.importance_sampling else UniformTimesteps(T)

    def state_dict(self) -> dict:
        state = self.timesteps.state_dict() if isinstance(self.timesteps, ImportanceTimesteps) else {}
        return {f"timesteps.{k}": v for k, v in state.items()}

    def load_state_dict(self, state: dict) -> None:
        if state:
            self.timesteps.load_state_dict({k[len("timesteps."):]: v for k, v in state.items()})

    def draw(self, model, x0, generator):
        """t, importance weights, noise and x_t; drawn on the CPU generator (the same stream on any
        device), then moved to the data's device."""
        self.bind(model)
        t, weights = self.timesteps.sample(x0.shape[0], generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        t = t.to(x0.device)
        return t, weights.to(x0.device, x0.dtype), noise, q_sample(model.schedule, x0, t, noise)


@OBJECTIVES.register("vlb")
class VLB(PerStep):
    """Per example: prior KL + w_t T L_t, an unbiased estimate of the whole bound (nats)."""

    def __call__(self, model, x0, generator=None, cond=None):
        t, w, noise, x_t = self.draw(model, x0, generator)
        p = model.p_mean_variance(x_t, t, cond)
        term = step_term_nats(model.schedule, x0, x_t, t, p.mean, p.log_variance)
        self.timesteps.update(t.cpu(), term.detach().cpu())
        return prior_kl_nats(model.schedule, x0) + model.schedule.T * w * term


@OBJECTIVES.register("simple")
class Simple(PerStep):
    """Per example: mean squared error of the mean head against its target (Ho et al. eq. 14)."""

    def __call__(self, model, x0, generator=None, cond=None):
        t, _, noise, x_t = self.draw(model, x0, generator)
        err, _ = model.simple_error(x0, x_t, t, noise, cond)
        return mean_flat(err.square())


@OBJECTIVES.register("hybrid")
class Hybrid(PerStep):
    """Per example: simple + weight * (w_t T L_t) with the mean head detached in the bound."""

    def __init__(self, weight: float = 0.001, importance_sampling: bool = False):
        super().__init__(importance_sampling)
        self.weight = weight

    def __call__(self, model, x0, generator=None, cond=None):
        t, w, noise, x_t = self.draw(model, x0, generator)
        err, out = model.simple_error(x0, x_t, t, noise, cond, keep_output=True)
        simple = mean_flat(err.square())
        mean_head, var_head = model.split_output(out)
        frozen = out if var_head is None else torch.cat([mean_head.detach(), var_head], dim=1)
        p = model.p_mean_variance_from_output(frozen, x_t, t)
        term = step_term_nats(model.schedule, x0, x_t, t, p.mean, p.log_variance)
        self.timesteps.update(t.cpu(), term.detach().cpu())
        return simple + self.weight * model.schedule.T * w * term


OBJECTIVES.register("flow_matching", FlowMatching)


def make_objective(name: str, hybrid_weight: float = 0.001, importance_sampling: bool = False,
                   time_sampling: str = "uniform", flow_target: str = "conditional", reference_batch: int = 0):
    """The registered objective ``name`` with a config's options (each where the objective takes it)."""
    cls = OBJECTIVES.get(name)
    if cls is FlowMatching:
        return FlowMatching(time_sampling, target=flow_target, reference_batch=reference_batch)
    if cls is Hybrid:
        return Hybrid(hybrid_weight, importance_sampling)
    if issubclass(cls, PerStep) and cls is not Simple:
        return cls(importance_sampling)
    return cls()

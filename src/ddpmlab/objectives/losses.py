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
- ``MeanFlow`` (``meanflow``): the average-velocity regression of a few-step MeanFlow model
  (``ddpmlab.objectives.meanflow``).
- ``ConsistencyTraining`` (``consistency_training``) and ``ConsistencyDistillation``
  (``consistency_distill``, from ``train.teacher``): a consistency model's (``ddpmlab.objectives.consistency``).
- ``Shortcut`` (``shortcut``): a flow-map model's self-consistency across step sizes (Frans et al. 2024,
  ``ddpmlab.objectives.shortcut``).
- ``Reflow`` (``reflow``): flow matching on a teacher's (noise, ODE output) couples (Liu et al. 2022,
  ``ddpmlab.objectives.reflow``; needs ``train.teacher``).
- ``Hybrid``: simple + weight * bound, the bound seeing a stop-gradient mean, so it trains only the
  variance (Nichol & Dhariwal 2021, sec. 3.1).

``Simple`` and ``Hybrid`` need the network's raw output: a ``DiffusionModel`` (``model(x_t, t, cond)``,
``simple_error``, ``split_output``, ``p_mean_variance_from_output``). Your own objective is
any callable of the same signature; optional ``bind(model)``, ``state_dict()`` and ``load_state_dict(d)``
let the trainer prepare it and checkpoint its state, and an optional ``value_and_grad(model, x0,
generator)`` computes an unconditional batch's mean loss and sets the parameters' ``.grad`` without
autograd (``Simple``'s, ``ddpmlab.objectives.simple_tape``), or returns None to leave it to autograd.

A registered objective's options are its constructor's keyword arguments (``objective_options``), each
kept as an attribute of the same name so that a run records them (``describe_objective``) and
``make_objective`` rebuilds the same objective; an option it does not take is refused.
"""
from __future__ import annotations

import inspect

import torch

from ddpmlab.core.diffusion import q_sample
from ddpmlab.core.gaussian import prior_kl_nats, step_term_nats
from ddpmlab.core.registry import Registry
from ddpmlab.core.utils import DDPMLabError, mean_flat
from ddpmlab.models.family import family_of
from ddpmlab.objectives.consistency import ConsistencyDistillation, ConsistencyTraining
from ddpmlab.objectives.flow_matching import FlowMatching
from ddpmlab.objectives.meanflow import MeanFlow
from ddpmlab.objectives.reflow import Reflow
from ddpmlab.objectives.seed_bound import SeedTrajectoryBound
from ddpmlab.objectives import simple_tape
from ddpmlab.objectives.shortcut import Shortcut
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
        family_of(model).check(self, "objective", type(self).__name__, OBJECTIVES)
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
        t, weights, noise = self.draw_steps(model, x0, generator)
        return t, weights, noise, q_sample(model.schedule, x0, t, noise)

    def draw_steps(self, model, x0, generator):
        """``draw``'s random draws alone: t, importance weights and noise (x_t is q_sample's of them)."""
        self.bind(model)
        t, weights = self.timesteps.sample(x0.shape[0], generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        return t.to(x0.device), weights.to(x0.device, x0.dtype), noise


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
    """Per example: mean squared error of the mean head against its target (Ho et al. eq. 14). t is
    uniform: the importance weights of ``PerStep`` need the bound's terms, which this loss has not."""

    def __init__(self):
        super().__init__()

    def __call__(self, model, x0, generator=None, cond=None):
        t, _, noise, x_t = self.draw(model, x0, generator)
        err, _ = model.simple_error(x0, x_t, t, noise, cond)
        return mean_flat(err.square())

    def value_and_grad(self, model, x0, generator=None):
        """The unconditional batch's mean loss, the parameters' ``.grad`` set to its gradient, in one pass
        without autograd (``ddpmlab.objectives.simple_tape``); None for a model it does not compute."""
        return simple_tape.value_and_grad(self, model, x0, generator)


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
OBJECTIVES.register("meanflow", MeanFlow)
OBJECTIVES.register("shortcut", Shortcut)
OBJECTIVES.register("reflow", Reflow)
OBJECTIVES.register("consistency_training", ConsistencyTraining)
OBJECTIVES.register("consistency_distill", ConsistencyDistillation)


REQUIRED = inspect.Parameter.empty  # an option without a default: make_objective must be given it


def objective_options(obj) -> dict:
    """The options a registered objective takes: its constructor's keyword arguments -> their defaults
    (``REQUIRED`` when none); a registered function or instance takes none."""
    if not isinstance(obj, type):
        return {}
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return {p.name: p.default for p in inspect.signature(obj).parameters.values() if p.kind in kinds}


def _check_option(name: str, key: str, value, default) -> None:
    """A value of the default's kind (a number for a number, true or false for a flag, text for text)."""
    kinds = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}
    want = kinds.get(type(default))
    if want and (not isinstance(value, want) or (isinstance(value, bool) and type(default) is not bool)):
        raise DDPMLabError(f"objective {name!r}: option {key} = {value!r} must be a {type(default).__name__} "
                           f"like its default {default!r}")


def make_objective(name: str, options: dict | None = None):
    """The registered objective ``name`` built with ``options`` (its constructor's keyword arguments,
    ``objective_options``); an option it does not take, or a required one missing, is a one-line error."""
    obj, options = OBJECTIVES.get(name), dict(options or {})
    declared = objective_options(obj)
    for key, value in options.items():
        if key not in declared:
            raise DDPMLabError(f"objective {name!r} takes no option {key!r} (its options: "
                               f"{', '.join(declared) or 'none'})")
        _check_option(name, key, value, declared[key])
    missing = [k for k, d in declared.items() if d is REQUIRED and k not in options]
    if missing:
        raise DDPMLabError(f"objective {name!r} needs the option(s) {', '.join(missing)}")
    if not isinstance(obj, type):
        return obj
    try:
        return obj(**options)
    except (TypeError, ValueError) as exc:
        raise DDPMLabError(f"cannot build objective {name!r} with options {options} ({exc})") from None


def describe_objective(objective) -> tuple[str, dict]:
    """The registered name of ``objective`` and its options (keyword argument -> value, read from the
    attribute of the same name), which ``make_objective`` rebuilds it from; ``("custom", {})`` for an
    objective that is not registered."""
    for name in OBJECTIVES:
        obj = OBJECTIVES.get(name)
        if objective is obj or (isinstance(obj, type) and type(objective) is obj):
            break
    else:
        return "custom", {}
    options = {}
    for key in objective_options(obj):
        if not hasattr(objective, key):
            raise DDPMLabError(f"objective {name!r} keeps no attribute {key!r}: keep each constructor keyword "
                               "as an attribute of the same name, so that a run can record it")
        options[key] = getattr(objective, key)
    return name, options

"""Model families as registry objects (``FAMILIES``): everything that differs between the DDPM reverse
chain, a flow's velocity field and the families after them, held by one object per family.

A ``Family`` carries

- its model contract (``contract``, a Protocol of ``ddpmlab.core.contract``) and the base class its
  models share (``base``): what a sampler, solver or objective declares it serves (its ``contract``
  attribute, a base class; ``ReverseProcess`` when absent) is matched against it (``serves``, ``check``);
- how a run's ``[model]`` settings wrap a network into its model (``wrap``); a model describes itself
  (``describe()``, recorded in the run);
- its default sampler and ODE solver, and the time axis its grids live on (``time_axis``, a name in
  ``ddpmlab.sampling.grids.TIME_AXES``);
- its exact oracles for Gaussian-mixture data (``oracle``, ``labelled_oracle``), its empirical optimum
  (``empirical_oracle``) and its guided model (``guide``);
- its evaluation (``exact_terms``: which exact comparisons apply, read by ``ddpmlab.evaluation``) and its
  report sections (``report_sections``, read by ``ddpmlab.report``);
- its config rules (``check_config``).

Code outside the family modules asks ``family_of(model)`` or ``FAMILIES.get(name)``; it never compares
family names or model classes. Adding a family is one module that builds a ``Family`` and registers it
(``FAMILIES.register(name, family)``); the shipped ones are ``family_ddpm``, ``family_flow``,
``family_meanflow`` and ``family_consistency``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ddpmlab.core.process import ProcessModel, ReverseProcess
from ddpmlab.core.registry import Registry
from ddpmlab.core.utils import DDPMLabError

FAMILIES = Registry("model family")


@dataclass(frozen=True)
class Family:
    """One process family; see the module docstring for what each field means."""

    name: str
    contract: type  # the Protocol its models satisfy
    base: type  # the base class its models share (a subclass of ProcessModel)
    wrap: Callable  # (net, schedule, data_shape, options) -> model
    time_axis: str  # "steps" | "continuous": a name in ddpmlab.sampling.grids.TIME_AXES
    default_sampler: str
    default_solver: str
    default_steps: int  # sampling steps when none are given (0: all of a schedule's)
    oracle: Callable  # (model, dist) -> the exact model of the Gaussian mixture dist, on model's time and shape
    labelled_oracle: Callable  # (model, dist) -> the exact class-conditional model, likewise
    empirical_oracle: Callable  # (model, data, chunk_size) -> the empirical optimum of data
    guide: Callable  # (model, w, null_class) -> the model guided at weight w
    check_config: Callable  # (cfg) -> None, raising DDPMLabError for what the family does not take
    exact_terms: tuple  # the exact comparisons that apply: "bound", "ode", "samples", "flow_map"
    report_sections: tuple  # the report's sections for a run of this family, by name
    prediction: Callable  # (the [model] config) -> what the network predicts, in words
    description: str = ""

    def serves(self, thing) -> bool:
        """Whether a sampler, solver or objective (its ``contract`` attribute, a base class of models;
        ``ReverseProcess`` when absent) serves this family's models."""
        return issubclass(self.base, getattr(thing, "contract", ReverseProcess))

    def check(self, thing, kind: str, name: str, registry=None) -> None:
        """Refuse in one line a ``kind`` ("sampler", "objective", ...) named ``name`` that does not serve
        this family, naming those of ``registry`` that do."""
        if self.serves(thing):
            return
        fits = [n for n in (registry or ()) if self.serves(registry.get(n))]
        also = f"; use {kind} = " + " or ".join(repr(n) for n in fits) if fits else ""
        raise DDPMLabError(f"{kind} = {name!r} does not serve a {self.name} model ({self.description}){also}")


def family_of(model) -> Family:
    """The family of ``model`` (its ``family`` name; "ddpm" for a model of the contract that names none)."""
    name = getattr(model, "family", "ddpm")
    if not isinstance(name, str) or name not in FAMILIES:
        raise DDPMLabError(f"model family must be one of {', '.join(FAMILIES.names())}, got {name!r}")
    return FAMILIES.get(name)


def is_model(x) -> bool:
    """Whether ``x`` is a model of some family (a ``ProcessModel``)."""
    return isinstance(x, ProcessModel)


def unsupported(family: str, what: str):
    """A slot of ``Family`` that ``family`` does not fill yet (a guided model, an empirical optimum, ...):
    calling it is a one-line ``DDPMLabError``."""
    def refuse(*args, **kwargs):
        raise DDPMLabError(f"the {family} family has no {what} yet")

    return refuse


def refuse_labels(cfg, family: str) -> None:
    """A family whose models are unconditional refuses class labels in one line."""
    if cfg.model.num_classes or cfg.data.labels or cfg.data.label_column:
        raise DDPMLabError(f"model.family = {family!r} is unconditional here: drop the class labels")


# the shipped families register themselves (each module builds one Family)
from ddpmlab.models import family_ddpm, family_flow, family_meanflow  # noqa: E402,F401  (this order)
from ddpmlab.models import family_consistency  # noqa: E402,F401

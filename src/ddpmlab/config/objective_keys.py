"""How a config's ``[train]`` keys set an objective's keyword arguments, and how a run records them."""
from __future__ import annotations

from ddpmlab.config.sections import TrainConfig
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.objectives.losses import OBJECTIVES, objective_options

# the flat [train] keys that set an objective's keyword argument (what runs record): key -> argument. A key
# the objective does not take must keep its default; [train.objective_options] sets the other arguments.
OBJECTIVE_KEYS = {"hybrid_weight": "weight", "importance_sampling": "importance_sampling",
                  "time_sampling": "time_sampling", "flow_target": "target", "reference_batch": "reference_batch"}
FLAT_KEY = {arg: key for key, arg in OBJECTIVE_KEYS.items()}  # argument -> its flat key


def objective_kwargs(name: str, t: TrainConfig) -> dict:
    """The keyword arguments of the registered objective ``name`` from ``t``: the flat keys it takes and
    ``objective_options``. A flat key it does not take at a value other than its default, or an option
    in ``objective_options`` that it does not take or that a flat key sets, is a one-line error."""
    declared, default = objective_options(OBJECTIVES.get(name)), TrainConfig()
    kwargs = {}
    for key, arg in OBJECTIVE_KEYS.items():
        if arg in declared:
            kwargs[arg] = getattr(t, key)
        elif getattr(t, key) != getattr(default, key):
            value = str(getattr(t, key)).lower() if isinstance(getattr(t, key), bool) else repr(getattr(t, key))
            raise DDPMLabError(f"train.{key} = {value} does not apply to train.objective = {name!r} "
                               f"(its options: {', '.join(_option_keys(declared)) or 'none'})")
    for arg in t.objective_options:
        if arg in FLAT_KEY and arg in declared:
            raise DDPMLabError(f"train.objective_options.{arg}: set train.{FLAT_KEY[arg]} instead")
    return {**kwargs, **t.objective_options}


def _option_keys(declared: dict) -> list[str]:
    """How a config sets each of an objective's options: a flat key or objective_options.ARG."""
    return [f"train.{FLAT_KEY[a]}" if a in FLAT_KEY else f"train.objective_options.{a}" for a in declared]


def objective_fields(name: str, options: dict) -> dict:
    """The ``[train]`` fields that record the objective ``name`` with ``options`` (``describe_objective``):
    its flat keys, and its other options where they differ from their defaults in ``objective_options``."""
    declared = objective_options(OBJECTIVES.get(name))
    fields_ = {"objective": name, "objective_options": {}}
    for arg, value in options.items():
        if arg in FLAT_KEY:
            fields_[FLAT_KEY[arg]] = value
        elif value != declared.get(arg):
            fields_["objective_options"][arg] = value
    return fields_


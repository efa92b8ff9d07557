"""What a ``Trainer`` is given, made ready to train: keyword options validated into a ``TrainConfig``
(``train_options``), a registered objective's name built into its callable (``objective_of``), and your
data checked against the model (``training_data``)."""
from __future__ import annotations

import copy
import dataclasses

from ddpmlab.config.objective_keys import objective_kwargs
from ddpmlab.config.sections import Config, TrainConfig
from ddpmlab.config.validation import validate
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.data.base import TrainingData
from ddpmlab.models.guidance import num_classes_of
from ddpmlab.objectives.losses import OBJECTIVES, make_objective


def train_options(options: dict, base: TrainConfig | None = None, config: Config | None = None) -> TrainConfig:
    """A ``TrainConfig`` from keyword options (lr, batch_size, ema_decay, seed, checkpoint_every, ...),
    validated like a config file's ``[train]`` section (within ``config`` when given)."""
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    unknown = sorted(set(options) - known)
    if unknown:
        raise DDPMLabError(f"unknown training option(s) {', '.join(unknown)}; options: {', '.join(sorted(known))}")
    cfg = dataclasses.replace(base or TrainConfig(), **options)
    validate(Config(train=cfg) if config is None else dataclasses.replace(config, train=cfg))
    return cfg


def objective_of(objective, t: TrainConfig):
    """Your objective callable as it is, or a registered objective's name (``OBJECTIVES``: "simple", ...)
    built with the ``[train]`` options that configure it (``objective_kwargs``: hybrid_weight, ...,
    objective_options); an option it does not take is refused."""
    if isinstance(objective, str):
        return make_objective(objective, objective_kwargs(objective, t))
    if isinstance(objective, type) or not callable(objective):
        raise DDPMLabError(f"the objective must be a callable objective(model, x0, generator, cond) such as "
                           f"dl.objectives.Simple(), or a registered name ({', '.join(OBJECTIVES)}); got {objective!r}")
    return objective


def training_data(data, labels, model) -> TrainingData:
    """The trainer's data: your tensor (N, *dims) with optional labels, checked against the model (one
    example of its ``data_shape``, labels within its classes) and converted to its parameters' dtype; or a
    ``TrainingData``, checked likewise."""
    dtype = next(p.dtype for p in model.parameters() if p.requires_grad)  # after ``check_trainable``
    shape = tuple(model.data_shape)
    if not isinstance(data, TrainingData):
        return TrainingData.from_tensor(data, labels, data_shape=shape, dtype=dtype, num_classes=num_classes_of(model))
    if labels is not None:
        raise DDPMLabError("labels go with a tensor of data; a TrainingData carries its own labels")
    if tuple(data.data_shape) != shape:
        raise DDPMLabError(f"data holds examples of shape {tuple(data.data_shape)}, but the model's "
                           f"data_shape is {tuple(shape)}")
    if data.train is not None and data.train.dtype != dtype:  # the user's object is left as it is
        data = copy.copy(data)
        data.train = data.train.to(dtype)
    return data

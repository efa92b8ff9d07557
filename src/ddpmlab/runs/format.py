"""A finished run on disk: weights in safetensors, everything else in JSON/TOML (never pickle).

    DIR/run.json           format, resolved config, data description, step, timings
    DIR/config.toml        the resolved config (what ``--dry-run`` prints)
    DIR/model.safetensors  ``model.*`` trained weights and ``ema.*`` EMA weights when kept
    DIR/data.safetensors   a run on your own tensor (data.name = "tensor"): its training and held-out rows,
                           what evaluation measures its samples against (``ddpmlab.data.base.kept_split``)
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ddpmlab.config.build import build_model
from ddpmlab.config.objective_keys import objective_fields
from ddpmlab.config.schema import from_dict
from ddpmlab.config.sections import Config, DataConfig, ModelConfig, SampleConfig, ScheduleConfig, TrainConfig
from ddpmlab.config.toml_writer import to_toml
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.fileio import atomic_write_bytes, atomic_write_json
from ddpmlab.core.registry import is_target
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.data.base import KEPT_ROWS_FILE
from ddpmlab.data.named import NAMED
from ddpmlab.models.family import family_of
from ddpmlab.models.registry import check_rebuildable, describe_model
from ddpmlab.objectives.losses import describe_objective
from ddpmlab.runs.run_info import read_run_info

RUN_FILE, WEIGHTS_FILE, CONFIG_FILE = "run.json", "model.safetensors", "config.toml"
FORMAT = "ddpmlab-run"


@dataclass
class Run:
    model: torch.nn.Module  # the weights to sample with (EMA when kept)
    cfg: Config
    info: dict  # run.json
    dist: GaussianMixture | None  # the true distribution when known
    path: Path | None = None  # the run directory

    def to_data_units(self, x: torch.Tensor) -> torch.Tensor:
        d = self.info["data"]
        if "scale" not in d:
            return x
        shape = (1,) + tuple(d["data_shape"])
        return x * torch.tensor(d["scale"]).reshape(shape) + torch.tensor(d["shift"]).reshape(shape)


def check_saveable(cfg: Config, model) -> None:
    """Refuse a run whose network no other process could rebuild from ``cfg`` (``check_rebuildable``):
    asked before anything of the run is written."""
    if is_target(cfg.model.arch):  # the model is then a network's wrapper (``AroundNetwork``)
        check_rebuildable(cfg.model.arch, cfg.model.net_kwargs, model.net)


def save_run(out, cfg: Config, data_desc: dict, model, ema_model=None, extra: dict | None = None,
             data=None) -> None:
    """Write the files of a finished run (each atomically; run.json last), after ``check_saveable``.
    ``data``: the ``TrainingData``, whose rows a run on your own tensor keeps (``KEPT_ROWS_FILE``)."""
    check_saveable(cfg, model)
    out = Path(out)
    rows = data.kept_rows() if data is not None and cfg.data.name == "tensor" else None
    # own copies: a model in training may hold views of one buffer (FlatAdamW), which safetensors refuses
    tensors = {f"model.{k}": v.detach().cpu().clone() for k, v in model.state_dict().items()}
    if ema_model is not None:
        tensors.update({f"ema.{k}": v.detach().cpu().clone() for k, v in ema_model.state_dict().items()})
    atomic_write_bytes(out / WEIGHTS_FILE, st_save(tensors))
    atomic_write_bytes(out / CONFIG_FILE, to_toml(cfg).encode())
    if rows is not None:
        atomic_write_bytes(out / KEPT_ROWS_FILE, st_save(rows))
    atomic_write_json(out / RUN_FILE, {"format": FORMAT, "version": 1, "config": cfg.to_dict(),
                                       "data": data_desc, **(extra or {})})


def load_run(path, net=None, trust_code: bool = False) -> Run:
    """Load a run written by ``save_run``; a missing, corrupt or mismatched file is a one-line error.

    Loading runs no code from the run directory: a run whose network is your own class
    (``package.module:Class``) needs ``net=YourNet(...)`` (an instance to load the weights into) or
    ``trust_code=True`` to import and build that class; ``trust_code=True`` also imports the plugin modules
    and ``package.module:name`` objective or sampler its config names (``ddpmlab.config.plugins``)."""
    path = Path(path)
    run_file, weights_file = path / RUN_FILE, path / WEIGHTS_FILE
    if not run_file.is_file() or not weights_file.is_file():
        raise DDPMLabError(f"{str(path)!r} is not a finished run (needs {RUN_FILE} and {WEIGHTS_FILE})")
    info = read_run_info(run_file)  # every field checked; each problem one line naming the file
    try:
        cfg = from_dict(info["config"], trust_code)  # first imports the code it names (config.plugins)
        data = info["data"]
        dist = GaussianMixture.from_dict(data["mixture"]) if "mixture" in data else None
        model = build_model(cfg, tuple(data["data_shape"]), trust_code=trust_code, net=net)
    except DDPMLabError as exc:
        raise DDPMLabError(f"{run_file}: {exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise DDPMLabError(f"{run_file}: malformed run description ({type(exc).__name__}: {exc})") from None
    try:
        tensors = st_load(weights_file.read_bytes())
    except (SafetensorError, ValueError, OSError) as exc:
        raise DDPMLabError(f"{weights_file}: unreadable weights ({str(exc).splitlines()[0]})") from None
    prefix = "ema." if any(k.startswith("ema.") for k in tensors) else "model."
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DDPMLabError(f"{weights_file}: weights do not match the run's model "
                           f"({str(exc).splitlines()[0]})") from None
    model.eval()
    return Run(model, cfg, info, dist, path)



def describe_config(model, objective, data, train: TrainConfig) -> Config:
    """The run config that records a ``Trainer`` built from parts: the model's architecture (a registered
    one, or your network class), its schedule (made by ``make_schedule``), the objective's registered
    name (``custom`` for your own) and the data's description."""
    family = family_of(model)
    spec = model.schedule_spec()
    known = {f.name for f in dataclasses.fields(ScheduleConfig)}
    if spec is None or not set(spec) <= known:
        raise DDPMLabError("the trainer records the model's schedule, which must come from make_schedule(kind, "
                           f"steps, {', '.join(sorted(known - {'kind', 'steps'}))})")
    objective_name, options = describe_objective(objective)  # your own: "custom", the options as given
    recorded = objective_fields(objective_name, options) if objective_name != "custom" else {"objective": "custom"}
    train = dataclasses.replace(train, **recorded)
    name = data.name if data.name in NAMED else "tensor"
    n_train = 0 if data.stream else int(data.train.shape[0])
    sample = SampleConfig(sampler=family.default_sampler, ode_solver=family.default_solver, steps=family.default_steps)
    cfg = Config(data=DataConfig(name=name, n_train=n_train), schedule=ScheduleConfig(**spec),
                 model=ModelConfig(**describe_model(model, ModelConfig())), train=train, sample=sample)
    return from_dict(cfg.to_dict())  # validated, as a file would be

"""Typed run configuration: TOML file -> dataclasses, ``--set section.key=value`` overrides, validated once.

Every field has a comment; ``ddpmlab train --dry-run`` prints the resolved config as TOML.
"""
from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ddpmlab.config.checks import check_config_memory, check_schedule_precision
from ddpmlab.config.families import validate_family
from ddpmlab.core.parameterisation import MEAN_TYPES, VAR_TYPES, mean_types_with
from ddpmlab.core.paths import FAMILIES
from ddpmlab.core.schedule import SCHEDULES
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.data.named import NAMED
from ddpmlab.models.registry import ARCHITECTURES, SEED_TYPES, is_target
from ddpmlab.objectives.flow_matching import TARGETS, TIME_SAMPLINGS
from ddpmlab.objectives.losses import OBJECTIVES, make_objective, objective_options
from ddpmlab.sampling.grids import TIME_GRIDS, axis_of, make_grid, shift_option
from ddpmlab.sampling.options import ETA_RANGE, TIME_SHIFT_RANGE
from ddpmlab.sampling.registry import ODE_SOLVERS, SAMPLERS

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"


@dataclass
class DataConfig:
    name: str = "seed_mixture"  # a named dataset (see `ddpmlab.data`), "file" with `path`, or "tensor"
    # (your own tensor, given to ddpmlab.Trainer)
    path: str = ""  # .csv / .npy / .npz file when name = "file"
    n_train: int = 1000  # points drawn once from a named distribution; 0 = fresh draws every batch
    standardize: bool = True  # files only: train on standardised columns, map samples back
    labels: bool = False  # keep class labels: a mixture's component index (seed_mixture, eight_gaussians, ...)
    label_column: str = ""  # files only: the column (name or 0-based index) holding class labels
    max_classes: int = 100  # refuse labels with more distinct classes than this


@dataclass
class ScheduleConfig:
    kind: str = "cosine"  # constant | linear | cosine
    steps: int = 250  # diffusion steps T
    beta: float = 0.02  # constant schedule's beta
    beta_start: float = 1e-4  # linear schedule's first beta
    beta_end: float = 0.02  # linear schedule's last beta


@dataclass
class ModelConfig:
    family: str = "ddpm"  # ddpm (the reverse chain of the noise schedule) | flow (a velocity field on the
    # linear path x_t = (1 - t) x_0 + t eps, trained by flow_matching, sampled by the ode sampler)
    arch: str = "mlp"  # seed (the tutorial's two small networks) | mlp | unet (images) | your own network
    # class as "package.module:Class", built with `net_kwargs` (loading such a run needs --trust-code)
    mean_type: str = "epsilon"  # registered (dl.MEAN_TYPES): previous_x | x0 | epsilon | v
    var_type: str = "fixed_small"  # registered (dl.VAR_TYPES): fixed_small | fixed_large | learned | learned_range
    hidden: int = 4  # seed networks' hidden width
    width: int = 128  # mlp width / unet base channels
    depth: int = 3  # mlp residual blocks
    time_dim: int = 32  # sinusoidal time-embedding size
    precondition: bool = False  # network sees unit-variance input, predicts the residual around the
    # data's Gaussian fit (Karras et al. 2022); epsilon | x0 | v mean types
    net_kwargs: dict = field(default_factory=dict)  # keyword arguments of a "package.module:Class" network
    num_classes: int = 0  # class-conditional mlp with this many classes (+ a null class); 0 = unconditional
    # (set from the data's labels when 0 and data.labels / data.label_column are given)


@dataclass
class TrainConfig:
    objective: str = "simple"  # registered (dl.OBJECTIVES): trajectory_bound (seed) | vlb | simple | hybrid |
    # flow_matching (the flow family's)
    hybrid_weight: float = 0.001  # weight of the bound in the hybrid loss (Nichol & Dhariwal)
    importance_sampling: bool = False  # sample t by the bound terms' second moment (vlb / hybrid)
    time_sampling: str = "uniform"  # flow_matching's density of t: uniform | logit_normal
    flow_target: str = "conditional"  # flow_matching's target: conditional | stable (Xu et al. 2023)
    reference_batch: int = 0  # the stable target's reference examples (the batch's first N); 0 = all
    objective_options: dict = field(default_factory=dict)  # [train.objective_options]: the objective's
    # other keyword arguments (flow_matching: loc, scale of logit_normal; your registered objective's own)
    iters: int = 2000  # optimisation steps
    batch_size: int = 512  # examples per step; 0 = the whole training set
    lr: float = 2e-3  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup: int = 0  # linear learning-rate warm-up steps
    lr_decay: str = "none"  # none | cosine (to 0 at the last step)
    ema_decay: float = 0.0  # EMA of weights for sampling; 0 = off
    grad_clip: float = 0.0  # gradient-norm clipping; 0 = off
    seed: int = 0  # every random draw (data, initialisation, noise) comes from this seed
    checkpoint_every: int = 0  # write a checkpoint every N steps; 0 = only at the end
    keep_checkpoints: int = 3  # how many checkpoints to keep
    device: str = "cpu"  # cpu | cuda | auto
    threads: int = 0  # torch intra-op threads; 0 = chosen from the work's size and the usable cores
    label_dropout: float = 0.0  # classifier-free training: probability of replacing a label by the null class


@dataclass
class SampleConfig:
    sampler: str = "ancestral"  # ancestral | ddim | ode
    ode_solver: str = "dpm_solver"  # ode sampler: dpm_solver (DPM-Solver++ 2M, DDPM only) | euler | heun |
    # midpoint | rk45 (adaptive)
    time_shift: float = 1.0  # flow ode grid t = k u / (1 + (k - 1) u) for shift k, u uniform; 1 = uniform;
    # k in [0.01, 100]
    steps: int = 0  # sampling steps; 0 = all T
    grid: str = "uniform"  # the steps' time grid: uniform | shifted (flow, by time_shift) | karras (EDM,
    # rho = 7) | log_snr (evenly in log signal-to-noise ratio)
    eta: float = 0.0  # DDIM's eta in [0, 1] (0 deterministic, 1 = ancestral variance)
    n: int = 10_000  # samples drawn at the end of training


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


# (section, key) -> the allowed values, read from where each choice is defined
CHOICES = {
    ("data", "name"): lambda: tuple(NAMED) + ("file", "tensor"),
    ("schedule", "kind"): SCHEDULES.names,
    ("model", "family"): lambda: FAMILIES,
    ("model", "arch"): ARCHITECTURES.names,
    ("model", "mean_type"): MEAN_TYPES.names,
    ("model", "var_type"): VAR_TYPES.names,
    ("train", "objective"): lambda: OBJECTIVES.names() + ("custom",),  # custom: your own, recorded
    ("train", "time_sampling"): lambda: TIME_SAMPLINGS,
    ("train", "flow_target"): lambda: TARGETS,
    ("train", "device"): lambda: ("cpu", "cuda", "auto"),
    ("train", "lr_decay"): lambda: ("none", "cosine"),
    ("sample", "sampler"): SAMPLERS.names,
    ("sample", "ode_solver"): ODE_SOLVERS.names,
    ("sample", "grid"): TIME_GRIDS.names,
}
# (section, key) -> (lowest allowed, lowest is exclusive)
LOWER = {("schedule", "steps"): (1, False), ("schedule", "beta"): (0, True), ("schedule", "beta_start"): (0, True),
         ("schedule", "beta_end"): (0, True), ("model", "hidden"): (1, False), ("model", "width"): (1, False),
         ("model", "depth"): (0, False), ("model", "time_dim"): (2, False), ("train", "iters"): (0, False),
         ("train", "batch_size"): (0, False), ("train", "lr"): (0, True), ("train", "weight_decay"): (0, False),
         ("train", "warmup"): (0, False), ("train", "ema_decay"): (0, False), ("train", "grad_clip"): (0, False),
         ("train", "hybrid_weight"): (0, False), ("train", "checkpoint_every"): (0, False),
         ("train", "keep_checkpoints"): (1, False), ("train", "threads"): (0, False), ("data", "n_train"): (0, False),
         ("data", "max_classes"): (2, False), ("model", "num_classes"): (0, False),
         ("train", "label_dropout"): (0, False), ("train", "reference_batch"): (0, False), ("sample", "steps"): (0, False),
         ("sample", "eta"): (ETA_RANGE[0], False), ("sample", "n"): (1, False), ("train", "seed"): (0, False),
         ("sample", "time_shift"): (TIME_SHIFT_RANGE[0], False)}
INT64 = (-2 ** 63, 2 ** 63 - 1)  # what TOML integers are, and what torch and numpy take as a seed
# (section, key) -> (highest allowed, highest is exclusive); every float is also finite (``_coerce``)
UPPER = {("schedule", "beta"): (1, True), ("schedule", "beta_start"): (1, True), ("schedule", "beta_end"): (1, True),
         ("train", "ema_decay"): (1, True), ("train", "label_dropout"): (1, True),
         ("sample", "eta"): (ETA_RANGE[1], False), ("sample", "time_shift"): (TIME_SHIFT_RANGE[1], False)}


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


def _coerce(section: str, key: str, value, typ):
    name = f"{section}.{key}"
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise DDPMLabError(f"{name} must be true or false, got {value!r}")
    if typ is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise DDPMLabError(f"{name} must be an integer, got {value!r}")
        if not INT64[0] <= value <= INT64[1]:
            raise DDPMLabError(f"{name} must be a 64-bit integer ({INT64[0]}..{INT64[1]}), got {value}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DDPMLabError(f"{name} must be a number, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise DDPMLabError(f"{name} must be finite, got {value!r}")
        return float(value)
    if typ is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise DDPMLabError(f"{name} must be a table of keyword arguments, got {value!r}")
        return dict(value)
    if not isinstance(value, str):
        raise DDPMLabError(f"{name} must be a string, got {value!r}")
    return value


def _section_types(cls) -> dict:
    hints = {"int": int, "float": float, "bool": bool, "str": str, "dict": dict}
    return {f.name: hints[f.type] if isinstance(f.type, str) else f.type for f in fields(cls)}


def from_dict(d: dict) -> Config:
    """Build and validate a Config from nested dicts; unknown sections or keys are errors."""
    cfg = Config()
    if not isinstance(d, dict):
        raise DDPMLabError("config must be a table of sections")
    for section, values in d.items():
        if section not in {f.name for f in fields(Config)}:
            raise DDPMLabError(f"unknown config section [{section}]; sections: "
                               f"{', '.join(f.name for f in fields(Config))}")
        if not isinstance(values, dict):
            raise DDPMLabError(f"config section [{section}] must be a table")
        sub = getattr(cfg, section)
        types = _section_types(type(sub))
        for key, value in values.items():
            if key not in types:
                raise DDPMLabError(f"unknown config key {section}.{key}; keys of [{section}]: {', '.join(types)}")
            setattr(sub, key, _coerce(section, key, value, types[key]))
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    for (section, key), options in CHOICES.items():
        v = getattr(getattr(cfg, section), key)
        if (section, key) == ("model", "arch") and is_target(v):
            continue
        if v not in options():
            raise DDPMLabError(f"{section}.{key} = {v!r} is not one of {', '.join(options())}"
                               + (" (or a network class as 'package.module:Class')" if key == "arch" else ""))
    for (section, key), (low, strict) in LOWER.items():
        v = getattr(getattr(cfg, section), key)
        if v < low or (strict and v == low):
            raise DDPMLabError(f"{section}.{key} must be {'>' if strict else '>='} {low}, got {v}")
    for (section, key), (high, strict) in UPPER.items():
        v = getattr(getattr(cfg, section), key)
        if v > high or (strict and v == high):
            raise DDPMLabError(f"{section}.{key} must be {'<' if strict else '<='} {high}, got {v}")
    m, t = cfg.model, cfg.train
    validate_family(cfg)
    if t.objective != "custom":  # built once, so that its own checks of its options run now
        try:
            make_objective(t.objective, objective_kwargs(t.objective, t))
        except DDPMLabError as exc:
            raise (DDPMLabError(f"train.objective_options: {exc}") if str(exc).startswith("objective ") else exc) \
                from None
    if m.arch == "seed" and (m.mean_type, m.var_type) != SEED_TYPES:
        raise DDPMLabError("model.arch = 'seed' predicts the previous x with a learned std: set "
                           f"model.mean_type = {SEED_TYPES[0]!r} and model.var_type = {SEED_TYPES[1]!r}")
    if m.precondition and (m.arch == "seed" or not MEAN_TYPES.get(m.mean_type).supports_precondition):
        raise DDPMLabError(f"model.precondition = true needs model.mean_type = "
                           f"{' | '.join(mean_types_with('supports_precondition'))} and an mlp or unet (got "
                           f"{m.mean_type!r}, {m.arch!r}); set model.precondition = false")
    if t.objective == "simple" and VAR_TYPES.get(m.var_type).learned:
        raise DDPMLabError("train.objective = 'simple' cannot train a learned variance; use 'hybrid' or 'vlb'")
    if t.batch_size == 0 and cfg.data.n_train == 0 and cfg.data.name not in ("file", "tensor"):
        raise DDPMLabError("train.batch_size = 0 (the whole training set) needs a training set: "
                           "set data.n_train > 0 or a positive train.batch_size")
    _validate_labels(cfg)
    if cfg.data.name == "file" and not cfg.data.path:
        raise DDPMLabError("data.name = 'file' needs data.path")
    if m.family == "ddpm" and cfg.sample.steps > cfg.schedule.steps:
        raise DDPMLabError(f"sample.steps ({cfg.sample.steps}) exceeds schedule.steps ({cfg.schedule.steps})")
    try:
        cfg.data.path.encode("utf-8")
    except UnicodeEncodeError:
        raise DDPMLabError(f"data.path {cfg.data.path!r} is not valid text (undecodable bytes); rename the file") \
            from None
    check_config_memory(cfg)  # first: the precision check builds the schedule's betas
    check_schedule_precision(cfg)
    _validate_grid(cfg)


def _validate_grid(cfg: Config) -> None:
    """Build ``sample.grid`` once on the run's time axis, so that a grid that does not apply (the shifted
    grid of a DDPM, a time shift given to the karras grid, ...) is refused before any training."""
    from ddpmlab.config.build import build_schedule  # build imports this module

    s = cfg.sample
    axis = axis_of(cfg.model.family, lambda: build_schedule(cfg))
    try:
        make_grid(axis, s.grid, s.steps, **shift_option(s.time_shift))
    except DDPMLabError as exc:
        raise DDPMLabError(f"sample.grid = {s.grid!r}: {exc}") from None


CONDITIONAL_ARCHS = ("mlp", "unet")  # the registered networks that take a class embedding


def _validate_labels(cfg: Config) -> None:
    d, m = cfg.data, cfg.model
    if m.num_classes and m.arch not in CONDITIONAL_ARCHS:
        raise DDPMLabError(f"model.num_classes = {m.num_classes}: only model.arch = 'mlp' or 'unet' is "
                           f"class-conditional (got {m.arch!r}); set model.num_classes = 0")
    if d.label_column and d.name != "file":
        raise DDPMLabError("data.label_column is for data.name = 'file'; a named mixture's labels are its "
                           "components: set data.labels = true")
    if d.labels and d.name in ("file", "tensor"):
        raise DDPMLabError(f"data.labels = true labels named data by component; for data.name = {d.name!r} give "
                           "data.label_column (a file) or labels= (a tensor)")
    labelled = d.labels or bool(d.label_column)
    if labelled and m.arch not in CONDITIONAL_ARCHS:
        raise DDPMLabError(f"class labels need a class-conditional network: model.arch = 'mlp' or 'unet' (got "
                           f"{m.arch!r}; the seed's networks are unconditional)")


def parse_override(text: str) -> tuple[str, str, object]:
    """'section.key=value' with a TOML value (strings may be bare)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise DDPMLabError(f"--set expects section.key=value, got {text!r}")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


def resolve_config_path(name_or_path: str) -> Path:
    """A file path, or the name of a packaged config (e.g. 'tutorial', 'default')."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    packaged = CONFIG_DIR / f"{name_or_path}.toml"
    if packaged.is_file():
        return packaged
    names = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.toml")))
    raise DDPMLabError(f"config {name_or_path!r} not found (a .toml file, or one of: {names})")


def load_config(name_or_path: str | None, overrides: list[str] = ()) -> Config:
    """Read a TOML config (or start from defaults), apply ``--set`` overrides, validate."""
    d: dict = {}
    if name_or_path:
        path = resolve_config_path(name_or_path)
        try:
            d = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise DDPMLabError(f"{path}: not valid TOML ({exc})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DDPMLabError(f"{path}: cannot read config ({exc})") from None
    for text in overrides:
        section, key, value = parse_override(text)
        d.setdefault(section, {})
        if not isinstance(d[section], dict):
            raise DDPMLabError(f"config section [{section}] must be a table")
        d[section][key] = value
    return from_dict(d)

"""Validation of a ``Config``: each key's choices and range, then the rules that tie keys together."""
from __future__ import annotations

from ddpmlab.config.budget import AUTO
from ddpmlab.config.build import build_schedule
from ddpmlab.config.checks import check_config_memory, check_schedule_precision
from ddpmlab.config.objective_keys import objective_kwargs
from ddpmlab.config.plugins import CODE_KEYS, UNKNOWN_HINT
from ddpmlab.config.sections import Config
from ddpmlab.core.mean_types import MEAN_TYPES, mean_types_with
from ddpmlab.core.schedule import SCHEDULES
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.core.var_types import VAR_TYPES
from ddpmlab.data.named import DECLARED, NAMED, declared_mixture
from ddpmlab.models.family import FAMILIES
from ddpmlab.models.registry import ARCHITECTURES, is_target
from ddpmlab.models.seed import SEED_TYPES
from ddpmlab.objectives.flow_matching import TARGETS, TIME_SAMPLINGS
from ddpmlab.objectives.losses import OBJECTIVES, make_objective
from ddpmlab.sampling.grids import TIME_GRIDS, axis_of, make_grid, shift_option
from ddpmlab.sampling.options import ETA_RANGE, TIME_SHIFT_RANGE
from ddpmlab.sampling.registry import ODE_SOLVERS, SAMPLERS

# (section, key) -> the allowed values, read from where each choice is defined
CHOICES = {
    ("data", "name"): lambda: tuple(NAMED) + ("file", DECLARED, "tensor"),
    ("schedule", "kind"): SCHEDULES.names,
    ("model", "family"): FAMILIES.names,
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
# (section, key) -> (highest allowed, highest is exclusive); every float is also finite (``_coerce``)
UPPER = {("schedule", "beta"): (1, True), ("schedule", "beta_start"): (1, True), ("schedule", "beta_end"): (1, True),
         ("train", "ema_decay"): (1, True), ("train", "label_dropout"): (1, True),
         ("sample", "eta"): (ETA_RANGE[1], False), ("sample", "time_shift"): (TIME_SHIFT_RANGE[1], False)}


def validate(cfg: Config) -> None:
    for (section, key), options in CHOICES.items():
        v = getattr(getattr(cfg, section), key)
        if (section, key) == ("model", "arch") and is_target(v):
            continue
        if v not in options():
            raise DDPMLabError(f"{section}.{key} = {v!r} is not one of {', '.join(options())}"
                               + (" (or a network class as 'package.module:Class')" if key == "arch" else "")
                               + (UNKNOWN_HINT if (section, key) in CODE_KEYS else ""))
    for (section, key), (low, strict) in LOWER.items():
        v = getattr(getattr(cfg, section), key)
        if v == AUTO:  # train.iters set from the data when the trainer knows it (ddpmlab.config.budget)
            continue
        if v < low or (strict and v == low):
            raise DDPMLabError(f"{section}.{key} must be {'>' if strict else '>='} {low}, got {v}")
    for (section, key), (high, strict) in UPPER.items():
        v = getattr(getattr(cfg, section), key)
        if v > high or (strict and v == high):
            raise DDPMLabError(f"{section}.{key} must be {'<' if strict else '<='} {high}, got {v}")
    m, t = cfg.model, cfg.train
    _validate_family(cfg)
    if t.objective != "custom":  # built once, so that its own checks of its options run now
        try:
            make_objective(t.objective, objective_kwargs(t.objective, t))
        except DDPMLabError as exc:
            raise (DDPMLabError(f"train.objective_options: {exc}") if str(exc).startswith("objective ") else exc) \
                from None
    _validate_teacher(t)
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
    if (cfg.data.name == DECLARED) != bool(cfg.data.mixture):
        raise DDPMLabError(f"data.name = {DECLARED!r} and [data.mixture] (weights, means, covariances) go together")
    if cfg.data.mixture:
        declared_mixture(cfg.data.mixture)  # each problem one line
    try:
        cfg.data.path.encode("utf-8")
    except UnicodeEncodeError:
        raise DDPMLabError(f"data.path {cfg.data.path!r} is not valid text (undecodable bytes); rename the file") \
            from None
    check_config_memory(cfg)  # first: the precision check builds the schedule's betas
    check_schedule_precision(cfg)
    _validate_grid(cfg)


def _validate_family(cfg: Config) -> None:
    """The family's own rules, then its objective, sampler and ODE solver: each must serve the family."""
    family = FAMILIES.get(cfg.model.family)
    family.check_config(cfg)
    t, s = cfg.train, cfg.sample
    if t.objective != "custom":
        family.check(OBJECTIVES.get(t.objective), "train.objective", t.objective, OBJECTIVES)
    family.check(SAMPLERS.get(s.sampler), "sample.sampler", s.sampler, SAMPLERS)
    family.check(ODE_SOLVERS.get(s.ode_solver), "sample.ode_solver", s.ode_solver, ODE_SOLVERS)


def _validate_teacher(t) -> None:
    """``train.teacher`` goes with an objective that distils a teacher (its ``needs_teacher``), and only
    with one. The run it names is loaded when training starts (``ddpmlab.training.teacher``), not here: a
    finished student stays loadable after its teacher is gone."""
    if t.objective == "custom":
        return
    needs = bool(getattr(OBJECTIVES.get(t.objective), "needs_teacher", False))
    if needs and not t.teacher:
        raise DDPMLabError(f"train.objective = {t.objective!r} needs a teacher: set train.teacher = the directory "
                           "of a finished run (any DDPM or flow run on the same data)")
    if t.teacher and not needs:
        fits = [n for n in OBJECTIVES.names() if getattr(OBJECTIVES.get(n), "needs_teacher", False)]
        raise DDPMLabError(f"train.teacher applies to an objective that distils a teacher "
                           f"({', '.join(fits) or 'none registered'}), not to train.objective = {t.objective!r}")


def _validate_grid(cfg: Config) -> None:
    """Build ``sample.grid`` once on the run's time axis, so that a grid that does not apply (the shifted
    grid of a DDPM, a time shift given to the karras grid, ...) is refused before any training."""
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


"""A finished run as a teacher (consistency distillation, reflow): ``load_teacher(cfg)`` loads the run that
``train.teacher`` names, ``teacher_velocity(teacher, x, t)`` is its probability-flow velocity on the LINEAR
path x_t = (1 - t) x_0 + t eps (t in [0, 1], t = 1 the prior), whatever its family.

- a flow or flow-map run (linear path): its own ``velocity(x, t)``;
- a DDPM run: its score on the VP path at the same signal-to-noise ratio. With c = sqrt((1 - t)^2 + t^2)
  and alpha-bar = (1 - t)^2 / c^2 (``linear_to_vp``), sqrt(abar) = (1 - t) / c and sqrt(1 - abar) = t / c,
  so x_vp = x_lin / c has the same posterior over (x_0, eps). Then E[eps | x] = -sqrt(1 - abar) score, E[x_0 | x] = (x_vp - sqrt(1 - abar) E[eps]) /
  sqrt(abar), and the linear path's velocity is E[eps | x] - E[x_0 | x] (Lipman et al. 2023, Theorem 1).
  The continuous step t_c = s T has alpha-bar(s) = abar on the run's ``ContinuousSchedule`` (the log
  alpha-bar interpolant, inverted on a dense grid). A DDPM knows its marginals only between its first step
  and its noisiest one (where alpha-bar is at least ``ABAR_FLOOR``: beyond it E[x_0 | x] is noise divided
  by sqrt(abar)), so outside that range its velocity is held at the range's end. An exact oracle
  (``MixtureOracle``) takes the alpha-bar itself, so it is exact inside the range.

The student trains in the teacher's model space: a teacher trained on other data is refused.

An objective that distils a teacher declares ``needs_teacher = True`` (config validation then asks for
``train.teacher``) and takes it by ``attach_teacher(flow)``: ``flow`` is a ``TeacherFlow``, the teacher as a
flow model on the linear path (``flow.velocity(x, t)`` = ``teacher_velocity``, ``flow.transport(z, solver,
steps)`` its ODE from t = 1 to t = 0 by a registered ODE solver). ``Trainer.from_config`` calls
``attach_teacher(objective, cfg)``; an objective with ``rounds`` > 1 (reflow) gets the callback
``StudentAsTeacher``, which at the start of round k hands it the student's own weights (the EMA ones when
kept) as its new teacher.
"""
from __future__ import annotations

import copy
import math
import weakref

import numpy as np
import torch

from ddpmlab.config.sections import Config
from ddpmlab.core.continuous import ContinuousSchedule
from ddpmlab.core.paths import LinearPath
from ddpmlab.core.process import ReverseProcess, VelocityProcess
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.guidance import num_classes_of
from ddpmlab.runs.format import load_run
from ddpmlab.sampling.grids import build_grid
from ddpmlab.sampling.registry import ODE_SOLVERS
from ddpmlab.training.callbacks import Callback

ABAR_FLOOR = 1e-4  # a DDPM teacher's noisiest usable alpha-bar (sqrt: 0.01), held beyond it
GRID_PER_STEP = 64  # points per schedule step of the table that inverts alpha-bar(s)
SAME_DATA = ("name", "path", "standardize", "mixture")  # the [data] keys a teacher must share


def load_teacher(cfg: Config, trust_code: bool = False):
    """The model of the finished run ``cfg.train.teacher`` (its EMA weights when kept), in eval mode with
    no gradients. A missing or unloadable run, a class-conditional one or one trained on other data than
    ``cfg``'s is a one-line ``DDPMLabError``."""
    path = cfg.train.teacher
    if not path:
        raise DDPMLabError(f"train.objective = {cfg.train.objective!r} needs a teacher: set train.teacher = "
                           "the directory of a finished run (any DDPM or flow run on the same data)")
    try:
        run = load_run(path, trust_code=trust_code)
    except DDPMLabError as exc:
        raise DDPMLabError(f"train.teacher = {path!r}: {exc}") from None
    for key in SAME_DATA:
        theirs, ours = getattr(run.cfg.data, key), getattr(cfg.data, key)
        if theirs != ours:
            raise DDPMLabError(f"train.teacher = {path!r} was trained on other data (data.{key} = {theirs!r}, "
                               f"this run's {ours!r}); a teacher must share the student's data")
    if num_classes_of(run.model):
        raise DDPMLabError(f"train.teacher = {path!r} is class-conditional; a teacher is unconditional here")
    model = run.model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def teacher_velocity(teacher, x: torch.Tensor, t) -> torch.Tensor:
    """The teacher's probability-flow velocity on the linear path at x (B, *dims) and time t (a float or a
    (B,) tensor in [0, 1]), without gradients, in x's dtype and device."""
    with torch.no_grad():
        if torch.is_tensor(t) and t.numel() > 1 and not bool((t == t.reshape(-1)[0]).all()):
            if _takes_time_batch(teacher):
                return _velocity_at(teacher, x, t.reshape(-1))
            out = torch.empty_like(x)
            flat = t.reshape(-1)
            for value in torch.unique(flat):  # a model that takes one time per call
                rows = flat == value
                out[rows] = _velocity_at(teacher, x[rows], float(value))
            return out
        return _velocity_at(teacher, x, float(t.reshape(-1)[0]) if torch.is_tensor(t) else float(t))


def _takes_time_batch(teacher) -> bool:
    """Whether one call takes a (B,) tensor of times: a network's flow model on the linear path."""
    return isinstance(teacher, torch.nn.Module) and not isinstance(teacher, ReverseProcess)


def _velocity_at(teacher, x: torch.Tensor, t) -> torch.Tensor:
    if isinstance(teacher, ReverseProcess):
        return _ddpm_velocity(teacher, x, float(t))
    if getattr(getattr(teacher, "path", None), "name", None) != "linear":
        raise DDPMLabError(f"a teacher must be a DDPM run or a flow on the linear path; {type(teacher).__name__} "
                           "has another path")
    xt = x.to(teacher.device, teacher.dtype)
    tt = t.to(teacher.device, teacher.dtype) if torch.is_tensor(t) else t
    return teacher.velocity(xt, tt).to(x.device, x.dtype)


_TABLES: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()  # teacher -> (s, log abar, abar range)


def _schedule_table(teacher):
    """(s grid, log alpha-bar on it (increasing order), the usable alpha-bar range) of a DDPM teacher."""
    if teacher not in _TABLES:
        cont = ContinuousSchedule(teacher.schedule)
        s = np.linspace(0.0, 1.0, GRID_PER_STEP * cont.T + 1)
        log_abar = cont._log_alpha_bar(s)  # decreasing in s
        abar = teacher.schedule.alphas_cumprod
        usable = (max(float(abar[-1]), ABAR_FLOOR), float(abar[1]))
        _TABLES[teacher] = (s[::-1].copy(), log_abar[::-1].copy(), usable, cont.T)
    return _TABLES[teacher]


def linear_to_vp(t: float) -> float:
    """The VP path's alpha-bar with the linear path's signal-to-noise ratio at time t: (1-t)^2 / ((1-t)^2 + t^2)."""
    return (1.0 - t) ** 2 / ((1.0 - t) ** 2 + t * t)


def _ddpm_velocity(teacher, x: torch.Tensor, t: float) -> torch.Tensor:
    """The linear path's velocity from a DDPM's score at the same signal-to-noise ratio (module docstring)."""
    s_grid, log_abar_grid, (lo, hi), T = _schedule_table(teacher)
    abar = min(max(linear_to_vp(min(max(t, 0.0), 1.0)), lo), hi)  # held inside the DDPM's range
    a, b = math.sqrt(abar), math.sqrt(1.0 - abar)
    t_eff = b / (a + b)
    x_vp = x.to(torch.float64) / math.sqrt((1 - t_eff) ** 2 + t_eff ** 2)
    s = float(np.interp(math.log(abar), log_abar_grid, s_grid))
    score = teacher.score(x_vp.to(teacher.device, teacher.dtype), s * T, abar).to(x_vp.device, torch.float64)
    eps = -b * score
    x0 = (x_vp - b * eps) / a
    return (eps - x0).to(x.device, x.dtype)


class TeacherFlow(VelocityProcess):
    """A teacher (a model of any family) as a flow on the linear path: ``velocity`` is ``teacher_velocity``,
    so the flow family's ODE solvers run on it."""

    family = "flow"

    def __init__(self, teacher):
        self.teacher, self.path = teacher, LinearPath()
        self.data_shape = tuple(teacher.data_shape)

    def velocity(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        if cond is not None:
            raise DDPMLabError("a teacher is unconditional here; it takes no condition")
        return teacher_velocity(self.teacher, x, t)

    def velocity_field(self, cond=None, float64: bool = True):
        """The velocity in x's dtype (the teacher computes in its own)."""
        return lambda x, t: self.velocity(x, t, cond)

    def transport(self, z: torch.Tensor, solver: str = "heun", steps: int = 100) -> torch.Tensor:
        """Phi(z): the teacher's ODE from t = 1 (z, the prior) to t = 0 by the ODE solver ``solver`` on a
        uniform grid of ``steps`` steps (``rk45``: adaptive, the grid only its ends), without gradients."""
        with torch.no_grad():
            return ODE_SOLVERS.get(solver)(self, z, build_grid(self, "uniform", steps))


def attach_teacher(objective, cfg: Config, trust_code: bool = False) -> list:
    """Give ``objective`` its teacher when it needs one (``needs_teacher``); returns the callbacks that
    keep it (``StudentAsTeacher`` for ``rounds`` > 1), else nothing."""
    if not getattr(objective, "needs_teacher", False):
        return []
    objective.attach_teacher(TeacherFlow(load_teacher(cfg, trust_code)))
    rounds = int(getattr(objective, "rounds", 1))
    return [StudentAsTeacher(objective, rounds)] if rounds > 1 else []


def frozen_copy(model):
    """A copy of ``model`` in eval mode without gradients (a teacher that training does not move)."""
    twin = copy.deepcopy(model).eval()
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


class StudentAsTeacher(Callback):
    """Rounds of a teacher objective (reflow, Liu et al. 2022): ``train.iters`` split into ``rounds`` equal
    rounds; at the first step of round k > 1 the objective's teacher becomes a frozen copy of the student
    (its EMA weights when kept), and training goes on from the student's weights. A run resumed inside
    round k > 1 takes the weights it resumes with as that round's teacher."""

    def __init__(self, objective, rounds: int):
        self.objective, self.rounds = objective, rounds

    def round_at(self, step: int, iters: int) -> int:
        """The round (1..rounds) that step ``step + 1`` of ``iters`` belongs to."""
        return min(self.rounds, 1 + step * self.rounds // max(iters, 1))

    def on_step_start(self, trainer) -> None:
        k = self.round_at(trainer.step, trainer.cfg.train.iters)
        if k > 1 and k != getattr(self.objective, "round", 1):
            self.objective.attach_teacher(TeacherFlow(frozen_copy(trainer.sampling_model)), round=k)

"""The consistency objectives (Song et al. 2023; the improved techniques of Song & Dhariwal 2023) for a
consistency model f(x_t, t) -> x_0 on the linear path x_t = (1 - t) x_0 + t eps (``ddpmlab.models.consistency``).

Both pull f at a noisier time t_{i+1} onto f at its neighbour t_i of a discretisation t_1 < ... < t_N,

    L = E_{i, x_0, z} lambda(t_i) d(f_theta(x_{t_{i+1}}, t_{i+1}), sg f_theta(x_hat_{t_i}, t_i)),

with the target network the same network under stop-gradient (Song & Dhariwal 2023 sec. 3.2: no EMA
teacher, theta^- = theta). Shared choices, each from Song & Dhariwal 2023 carried onto the linear path.
The paper's noise levels are set for data of standard deviation 0.5 (Karras et al. 2022, Table 1); here
they scale with the data's own, k = S / 0.5 (S the model's ``sigma_data``: the data's standard deviation
with ``model.precondition``, else 1):

- the discretisation (``karras_levels``): Karras et al.'s rho-spacing (rho = 7) of the noise level
  sigma = t / (1 - t) (x_t / (1 - t) = x_0 + sigma eps: the variance-exploding level of the same state)
  from sigma(T_MIN) to sigma_max = 80 k, mapped to t = sigma / (1 + sigma); t_1 = T_MIN exactly (where f
  is the identity) and the last level stands for the prior, t_N = 1 (as ddpmlab's karras grid does);
- i drawn from the discretised log-normal density of sigma (sec. 3.5): P(i) proportional to
  Phi((log sigma_{i+1} - P_mean) / P_std) - Phi((log sigma_i - P_mean) / P_std), P_mean = -1.1 + log k,
  P_std = 2 (log sigma = logit t: a logit-normal in t);
- the pseudo-Huber distance d(a, b) = sqrt(||a - b||^2 + c^2) - c over the whole example,
  c = ``huber`` k sqrt(dims) (0.00054 sqrt(d) at k = 1, sec. 3.3);
- the weight lambda = 1 / (sigma_{i+1} - sigma_i) of the levels (the last one's sigma is sigma_max, which
  t_N = 1 stands for). In the path's time it is (1 - t)^2 / dt to first order: 1 / (t_{i+1} - t_i) alone,
  which does not fade towards the prior, trained the seed mixture's map several times worse in our runs.

``consistency_training`` (CT, from data): x_hat_{t_i} = (1 - t_i) x_0 + t_i z with the same z as
x_{t_{i+1}}, and the curriculum N(k) = min(s0 2^floor(k / double_every), s1) + 1 points at training step k
(s0 = 10, s1 = 1280; the paper's double_every is K / (log2(s1 / s0) + 1) of K steps). The step count k is
the objective's own state (one call, one step), checkpointed with the run.

``consistency_distill`` (CD, from a finished run, ``train.teacher``): x_hat_{t_i} is the teacher's
probability-flow ODE from x_{t_{i+1}} to t_i (Song et al. 2023, Algorithm 2: one Heun or Euler step of
the teacher's velocity, ``substeps`` of them across the interval), on a fixed discretisation of ``n_steps``
points (18, the paper's CIFAR-10 choice).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.consistency import T_MIN, ConsistencyProcess
from ddpmlab.models.family import family_of

SIGMA_MAX = 80.0  # the noise level the last point stands for (Karras et al. 2022; Song & Dhariwal 2023)
PAPER_SIGMA_DATA = 0.5  # the data's standard deviation the paper's noise levels are set for
SOLVERS = ("euler", "heun")


class Pairs(NamedTuple):
    """A batch's draws: neighbouring times t_lo < t_hi (B,) float64, their weights lambda (B,) float64 and
    the noise z, shaped like the data."""

    t_lo: torch.Tensor
    t_hi: torch.Tensor
    weight: torch.Tensor
    z: torch.Tensor


def karras_levels(n: int, rho: float = 7.0, sigma_max: float = SIGMA_MAX) -> tuple[torch.Tensor, torch.Tensor]:
    """The discretisation (module docstring): its times t_1 < ... < t_n (n,) float64, t_1 = T_MIN and
    t_n = 1, and their noise levels sigma (n,), sigma_1 = sigma(T_MIN) and sigma_n = ``sigma_max``."""
    if n < 2:
        raise DDPMLabError(f"a consistency discretisation needs at least 2 points, got {n}")
    lo, hi = (T_MIN / (1 - T_MIN)) ** (1 / rho), sigma_max ** (1 / rho)
    sigma = (lo + torch.arange(n, dtype=torch.float64) / (n - 1) * (hi - lo)) ** rho
    t = sigma / (1 + sigma)
    t[0], t[-1] = T_MIN, 1.0
    return t, sigma


def lognormal_weights(t: torch.Tensor, p_mean: float, p_std: float) -> torch.Tensor:
    """P(i) (n - 1,) of the interval [t_i, t_{i+1}] under the log-normal density of sigma = t / (1 - t)."""
    cdf = torch.special.ndtr((torch.logit(t) - p_mean) / p_std)  # logit(1) = inf: cdf 1
    p = cdf[1:] - cdf[:-1]
    return p / p.sum()


def pseudo_huber(a: torch.Tensor, b: torch.Tensor, c: float) -> torch.Tensor:
    """sqrt(||a - b||^2 + c^2) - c per example (B,), over all of an example's dimensions."""
    sq = (a - b).reshape(a.shape[0], -1).square().sum(1)
    return (sq + c * c).sqrt() - c


def _column(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return t.to(x.device, x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))


class ConsistencyLoss:
    """What both objectives share: the discretisation, the draw of (i, z) and the loss of a pair."""

    contract = ConsistencyProcess  # it trains a consistency model (``Family.serves``)
    name = "consistency"

    def __init__(self, rho: float, p_mean: float, p_std: float, huber: float):
        if not rho > 0 or not p_std > 0 or not huber > 0:
            raise DDPMLabError(f"{self.name} needs rho > 0, p_std > 0 and huber > 0, got rho = {rho}, "
                               f"p_std = {p_std}, huber = {huber}")
        self.rho, self.p_mean, self.p_std, self.huber = float(rho), float(p_mean), float(p_std), float(huber)

    def points(self) -> int:
        """N, the number of points of the discretisation now."""
        raise NotImplementedError

    def levels(self, k: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The discretisation now, for the data scale k = S / 0.5: its times and levels (N,)
        (``karras_levels``) and P(i) of its N - 1 intervals (``lognormal_weights``)."""
        t, sigma = karras_levels(self.points(), self.rho, SIGMA_MAX * k)
        return t, sigma, lognormal_weights(t, self.p_mean + math.log(k), self.p_std)

    def draw(self, x0: torch.Tensor, k: float = 1.0, generator=None) -> Pairs:
        """The batch's neighbouring times with i log-normal, their weights and the noise z."""
        t, sigma, p = self.levels(k)
        i = torch.multinomial(p, x0.shape[0], replacement=True, generator=generator)
        z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        return Pairs(t[i], t[i + 1], 1 / (sigma[i + 1] - sigma[i]), z)

    def neighbour(self, x0, z, x_hi, t_lo, t_hi):
        """x_hat at t_lo, the target's input."""
        raise NotImplementedError

    @staticmethod
    def scale(model) -> float:
        """k = S / 0.5, the data's standard deviation over the paper's."""
        return float(model.sigma_data) / PAPER_SIGMA_DATA

    def loss_at(self, model, x0, pairs: Pairs, cond=None) -> torch.Tensor:
        """lambda d(f(x_{t_hi}, t_hi), sg f(x_hat_{t_lo}, t_lo)) per example (B,) for the given draws."""
        t_lo, t_hi, weight, z = pairs
        x_hi = (1 - _column(t_hi, x0)) * x0 + _column(t_hi, x0) * z
        with torch.no_grad():
            target = model.flow_map(self.neighbour(x0, z, x_hi, t_lo, t_hi), t_lo, 0.0, cond)
        pred = model.flow_map(x_hi, t_hi, 0.0, cond)
        c = self.huber * self.scale(model) * math.sqrt(x0[0].numel())
        return pseudo_huber(pred, target, c) * weight.to(x0.device, x0.dtype)

    def __call__(self, model, x0, generator=None, cond=None):
        family_of(model).check(self, "objective", self.name)
        self.before_draw(model)
        return self.loss_at(model, x0, self.draw(x0, self.scale(model), generator), cond)

    def before_draw(self, model) -> None:
        """What an objective does before each step's draw (nothing by default)."""


class ConsistencyTraining(ConsistencyLoss):
    """Consistency training from data (module docstring); ``s0``, ``s1``, ``double_every``: the
    curriculum; ``rho``: the spacing; ``p_mean``, ``p_std``: the log-normal density; ``huber``: c / sqrt(d)."""

    name = "consistency_training"

    def __init__(self, s0: int = 10, s1: int = 1280, double_every: int = 500, rho: float = 7.0,
                 p_mean: float = -1.1, p_std: float = 2.0, huber: float = 0.00054):
        super().__init__(rho, p_mean, p_std, huber)
        if not (1 <= s0 <= s1) or double_every < 1:
            raise DDPMLabError(f"consistency_training's curriculum needs 1 <= s0 <= s1 and double_every >= 1, got "
                               f"s0 = {s0}, s1 = {s1}, double_every = {double_every}")
        self.s0, self.s1, self.double_every = int(s0), int(s1), int(double_every)
        self.step = 0  # training steps taken (calls); the curriculum's k

    def points(self) -> int:
        """N(k) = min(s0 2^floor(k / double_every), s1) + 1 (Song & Dhariwal 2023, eq. 7)."""
        return min(self.s0 * 2 ** (self.step // self.double_every), self.s1) + 1

    def neighbour(self, x0, z, x_hi, t_lo, t_hi):
        return (1 - _column(t_lo, x0)) * x0 + _column(t_lo, x0) * z

    def __call__(self, model, x0, generator=None, cond=None):
        out = super().__call__(model, x0, generator, cond)
        self.step += 1
        return out

    def state_dict(self) -> dict:
        return {"curriculum_step": torch.tensor(self.step, dtype=torch.int64)}

    def load_state_dict(self, state: dict) -> None:
        if "curriculum_step" in state:
            self.step = int(state["curriculum_step"])


class ConsistencyDistillation(ConsistencyLoss):
    """Consistency distillation from a teacher (module docstring); ``n_steps``: N; ``solver``: euler | heun;
    ``substeps``: solver steps across each interval; the rest as ``ConsistencyTraining``."""

    name = "consistency_distill"
    needs_teacher = True  # config validation asks for train.teacher; the trainer attaches it

    def __init__(self, n_steps: int = 18, solver: str = "heun", substeps: int = 1, rho: float = 7.0,
                 p_mean: float = -1.1, p_std: float = 2.0, huber: float = 0.00054):
        super().__init__(rho, p_mean, p_std, huber)
        if n_steps < 2 or substeps < 1:
            raise DDPMLabError(f"consistency_distill needs n_steps >= 2 and substeps >= 1, got {n_steps}, {substeps}")
        if solver not in SOLVERS:
            raise DDPMLabError(f"consistency_distill's solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
        self.n_steps, self.solver, self.substeps = int(n_steps), solver, int(substeps)
        self.teacher = None

    def attach_teacher(self, flow, round: int = 1) -> None:
        """The teacher: anything with ``velocity(x, t)`` on the linear path for per-row times t (B,)
        (``ddpmlab.training.teacher.TeacherFlow``, which wraps a run's model or an exact oracle)."""
        self.teacher = flow

    def points(self) -> int:
        return self.n_steps

    def before_draw(self, model) -> None:
        if self.teacher is None:
            raise DDPMLabError("consistency_distill needs a teacher: set train.teacher = the directory of a "
                               "finished run (or call attach_teacher)")

    def teacher_step(self, x: torch.Tensor, t_from: torch.Tensor, t_to: torch.Tensor) -> torch.Tensor:
        """The teacher's ODE from x at t_from to t_to (each (B,)): ``substeps`` Euler or Heun steps."""
        h = (t_to - t_from) / self.substeps
        t = t_from
        for _ in range(self.substeps):
            v = self._velocity(x, t)
            if self.solver == "euler":
                x = x + _column(h, x) * v
            else:
                x_euler = x + _column(h, x) * v
                x = x + _column(h, x) * 0.5 * (v + self._velocity(x_euler, t + h))
            t = t + h
        return x

    def _velocity(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.teacher.velocity(x, t.to(x.device, x.dtype)).to(x.dtype)

    def neighbour(self, x0, z, x_hi, t_lo, t_hi):
        return self.teacher_step(x_hi, t_hi, t_lo)

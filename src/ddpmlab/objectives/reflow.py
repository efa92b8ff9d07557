"""The reflow objective (Liu et al. 2022, "Flow Straight and Fast", Algorithm 1): flow matching on the
coupling of a teacher flow instead of independent pairs. Noise z ~ N(0, I) is carried by the teacher's
probability-flow ODE from t = 1 to t = 0 onto X = Phi(z); the student regresses, on the linear path
between the coupled pair,

    x_t = (1 - t) X + t z,    target z - X    (t uniform; ddpmlab's direction: t = 1 the prior),

so its paths straighten and few Euler steps suffice. Rectifying again with the student as the teacher is
the k-rectified flow: ``rounds`` = k splits ``train.iters`` into k equal rounds, and at the start of round
j > 1 the student's own weights (its EMA when kept) become the teacher (``ddpmlab.training.teacher``'s
``StudentAsTeacher``); training goes on from them.

The teacher comes from ``train.teacher`` (any DDPM or flow run, as a flow on the linear path:
``attach_teacher``). Its ``pairs`` couples are drawn once per round (noise from the training generator)
by the ODE solver ``solver`` at ``solver_steps`` uniform steps (Heun at 100 by default: second order,
200 teacher calls; ``rk45`` is scipy's adaptive one), and each batch draws its rows from them, as Liu et
al. train on a fixed set of simulated pairs.
"""
from __future__ import annotations

import torch

from ddpmlab.core.process import VelocityProcess
from ddpmlab.core.utils import DDPMLabError, mean_flat
from ddpmlab.models.family import family_of

NO_TEACHER = ("the reflow objective needs a teacher: set train.teacher = the directory of a finished run, or "
              "call objective.attach_teacher(TeacherFlow(model)) (ddpmlab.training.teacher)")


class Reflow:
    """``rounds``: k of the k-rectified flow; ``pairs``: the couples drawn per round; ``solver``,
    ``solver_steps``: the teacher's ODE solve."""

    contract = VelocityProcess  # it trains the flow family's models (``Family.serves``)
    needs_teacher = True  # ``train.teacher`` is required (config validation)

    def __init__(self, rounds: int = 1, pairs: int = 10_000, solver: str = "heun", solver_steps: int = 100):
        for name, value in (("rounds", rounds), ("pairs", pairs), ("solver_steps", solver_steps)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise DDPMLabError(f"the reflow objective's {name} must be a whole number >= 1, got {value!r}")
        if not isinstance(solver, str) or not solver:
            raise DDPMLabError(f"the reflow objective's solver must be an ODE solver's name, got {solver!r}")
        self.rounds, self.pairs, self.solver, self.solver_steps = rounds, pairs, solver, solver_steps
        self.teacher, self.round, self._coupling = None, 1, None

    def attach_teacher(self, flow, round: int = 1) -> None:
        """Take ``flow`` (a ``TeacherFlow``: ``transport(z, solver, steps)``) as the teacher of round
        ``round``; its couples are drawn at the next batch."""
        self.teacher, self.round, self._coupling = flow, int(round), None

    def couple(self, z: torch.Tensor) -> torch.Tensor:
        """Phi(z): the teacher's ODE from t = 1 to t = 0 for the noise z (B, *dims)."""
        if self.teacher is None:
            raise DDPMLabError(NO_TEACHER)
        return self.teacher.transport(z, self.solver, self.solver_steps)

    def coupling(self, shape: tuple, dtype, generator=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(z, Phi(z)), each (pairs, *shape): this round's couples, drawn once."""
        if self._coupling is None:
            z = torch.randn((self.pairs,) + tuple(shape), generator=generator, dtype=dtype)
            self._coupling = (z, self.couple(z).to(dtype))
        return self._coupling

    def bind(self, model) -> None:
        family_of(model).check(self, "objective", "reflow")

    def __call__(self, model, x0, generator=None, cond=None):
        self.bind(model)
        if cond is not None:
            raise DDPMLabError("the reflow objective is unconditional here: drop the class labels")
        n = x0.shape[0]
        z_all, x_all = self.coupling(x0.shape[1:], x0.dtype, generator)
        rows = torch.randint(0, self.pairs, (n,), generator=generator)
        z, x = z_all[rows].to(x0.device), x_all[rows].to(x0.device)
        t = torch.rand(n, generator=generator, dtype=torch.float64).to(x0.device, x0.dtype)
        tb = t.reshape((n,) + (1,) * (x0.dim() - 1))
        x_t = (1 - tb) * x + tb * z
        return mean_flat((model.velocity(x_t, t, None) - (z - x)) ** 2)

"""The seed's objective: the variational bound over one whole sampled trajectory (Ho et al. eq. 3).

For one trajectory x_0 -> x_1 -> ... -> x_T drawn from q (eq. 2), per example (in nats)

    L = -log p(x_T) - sum_{t=1}^T log p(x_{t-1} | x_t) + sum_{t=1}^T log q(x_t | x_{t-1}),

whose expectation is >= -log p(x_0) (the q terms do not depend on the parameters; they make a
perfect model's bound equal the data's negative log-likelihood). The seed trained on L / (T + 1).

The model computes the step terms (``trajectory_step_nll`` of the model contract), vectorised over t
(no Python loop over steps): any model through ``p_mean_variance`` on all T x N rows, and the seed's
networks on 1-D data in one fused pass (``ddpmlab.models.seed_fused``).
"""
from __future__ import annotations

import math

import torch

LOG_2PI = math.log(2 * math.pi)


class SeedTrajectoryBound:
    """Callable: per-example whole-trajectory bound L (nats, shape (N,)) for data x0 and noise.

    ``noise`` holds epsilon_1..epsilon_T, shape (T, N, *dims); the trajectory is q's chain for that
    noise. Works for any reverse model; ``fused=None`` takes the fused path for the seed's networks on
    1-D data and autograd otherwise.
    """

    def __init__(self, model, fused: bool | None = None):
        self.model = model
        self.fused = fused
        sched = model.schedule
        self._log_q_const = float((-0.5 * torch.log(2 * math.pi * sched.betas[1:])).sum())

    def __call__(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        sched = self.model.schedule
        N = x0.shape[0]
        D = x0[0].numel()
        step_nll, x_T = self.model.trajectory_step_nll(x0, noise, fused=self.fused)
        # -log p(x_T) with p = N(0, I); the constants 0.5 log 2 pi of the T step terms; log q terms.
        prior = 0.5 * x_T.reshape(N, -1).square().sum(1) + 0.5 * D * LOG_2PI
        log_q = D * self._log_q_const - 0.5 * noise.reshape(sched.T, N, -1).square().sum(dim=(0, 2))
        return prior + step_nll + 0.5 * D * sched.T * LOG_2PI + log_q


@torch.no_grad()
def estimate_trajectory_bound(model, sample_x0, n_batches: int = 20, batch: int = 1000,
                              generator: torch.Generator | None = None) -> tuple[float, float]:
    """The whole-trajectory bound per data point in nats (not divided by T + 1), on fresh data
    ``sample_x0(n, generator)`` and fresh trajectories: mean and standard error over all examples."""
    bound = SeedTrajectoryBound(model)
    vals = []
    for _ in range(n_batches):
        x0 = sample_x0(batch, generator)
        noise = torch.randn((model.schedule.T,) + tuple(x0.shape), generator=generator)
        vals.append(bound(x0, noise).double())
    v = torch.cat(vals)
    return float(v.mean()), float(v.std() / len(v) ** 0.5)

"""Objectives: each a small callable ``objective(model, x0, generator) -> per-example loss (B,)``.

- ``WholeTrajectoryBound``: the seed's bound over one whole trajectory (Ho et al. eq. 3), scaled by
  1/(T + 1) as the seed did.
- ``VLBLoss``: the Rao-Blackwellised bound (eq. 5): one t per example and the analytic KL to
  q(x_{t-1} | x_t, x_0); an unbiased estimate of the same bound, with far lower variance and T times
  cheaper.
- ``SimpleLoss``: ||target - prediction||^2 (eq. 14), the target chosen by the mean type; for a
  preconditioned model divided by the residual scale squared (``ddpmlab.models.preconditioning``).
- ``HybridLoss``: simple + weight * bound, the bound seeing a stop-gradient mean, so it trains only the
  variance (Nichol & Dhariwal 2021, sec. 3.1).
"""
from __future__ import annotations

import torch

from ddpmlab.core.diffusion import q_sample
from ddpmlab.evaluation.likelihood import prior_kl_nats, step_term_nats
from ddpmlab.objectives.seed_bound import SeedTrajectoryBound
from ddpmlab.objectives.timesteps import ImportanceTimesteps, UniformTimesteps
from ddpmlab.core.utils import extract, mean_flat


def mean_log_variance(model, x_t, t):
    """Mean and log-variance of p(x_{t-1} | x_t) from any reverse model."""
    if hasattr(model, "p_mean_variance_full"):
        d = model.p_mean_variance_full(x_t, t)
        return d["mean"], d["log_variance"]
    mean, variance = model.p_mean_variance(x_t, t)
    return mean, torch.log(variance)


def simple_mse(model, x0, x_t, t, noise, mean_head):
    """Per example ||target - mean head||^2 (Ho et al. eq. 14). A preconditioned model's error is first
    divided by its residual scale c_out: the squared error of the network's own normalised output
    (Karras et al. 2022, loss weight 1 / c_out^2)."""
    err = model.diffusion.mean_target(x0, x_t, t, noise) - mean_head
    precond = getattr(model, "precond", None)
    if precond is not None:
        err = err / precond.residual_scale(x_t, extract(model.schedule.alphas_cumprod, t, x_t))
    return mean_flat(err ** 2)


class WholeTrajectoryBound:
    """The seed's objective: whole-trajectory bound / (T + 1), per example."""

    name = "trajectory_bound"

    def __init__(self, model):
        self._bound = SeedTrajectoryBound(model)
        self._noise = None

    def __call__(self, model, x0, generator=None):
        T = model.schedule.T
        shape = (T,) + tuple(x0.shape)
        if self._noise is None or self._noise.shape != shape:
            self._noise = torch.empty(shape, dtype=x0.dtype)  # reused buffer, (T, B, *dims)
        torch.randn(shape, generator=generator, out=self._noise)
        return self._bound(x0, self._noise.to(x0.device)) / (T + 1)


class _PerStep:
    """Shared by the single-t objectives: draw t and noise, form x_t."""

    def __init__(self, T: int, importance_sampling: bool = False):
        self.timesteps = ImportanceTimesteps(T) if importance_sampling else UniformTimesteps(T)

    def draw(self, model, x0, generator):
        """t, importance weights, noise and x_t; drawn on the CPU generator (the same stream on any
        device), then moved to the data's device."""
        t, weights = self.timesteps.sample(x0.shape[0], generator)
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        t = t.to(x0.device)
        return t, weights.to(x0.device, x0.dtype), noise, q_sample(model.schedule, x0, t, noise)


class VLBLoss(_PerStep):
    """Per example: prior KL + w_t T L_t, an unbiased estimate of the whole bound (nats)."""

    name = "vlb"

    def __call__(self, model, x0, generator=None):
        t, w, noise, x_t = self.draw(model, x0, generator)
        mean, log_variance = mean_log_variance(model, x_t, t)
        term = step_term_nats(model.schedule, x0, x_t, t, mean, log_variance)
        self.timesteps.update(t.cpu(), term.cpu())
        return prior_kl_nats(model.schedule, x0) + model.schedule.T * w * term


class SimpleLoss(_PerStep):
    """Per example: mean squared error of the mean head against its target (Ho et al. eq. 14)."""

    name = "simple"

    def __call__(self, model, x0, generator=None):
        t, _, noise, x_t = self.draw(model, x0, generator)
        out = model.forward_out(x_t, t)
        mean_head, _ = model.diffusion.split_output(out)
        return simple_mse(model, x0, x_t, t, noise, mean_head)


class HybridLoss(_PerStep):
    """Per example: simple + weight * (w_t T L_t) with the mean head detached in the bound."""

    name = "hybrid"

    def __init__(self, T: int, weight: float = 0.001, importance_sampling: bool = False):
        super().__init__(T, importance_sampling)
        self.weight = weight

    def __call__(self, model, x0, generator=None):
        t, w, noise, x_t = self.draw(model, x0, generator)
        out = model.forward_out(x_t, t)
        diffusion = model.diffusion
        mean_head, var_head = diffusion.split_output(out)
        simple = simple_mse(model, x0, x_t, t, noise, mean_head)
        frozen = out if var_head is None else torch.cat([mean_head.detach(), var_head], dim=1)
        d = diffusion.p_mean_variance(frozen, x_t, t)
        term = step_term_nats(model.schedule, x0, x_t, t, d["mean"], d["log_variance"])
        self.timesteps.update(t.cpu(), term.cpu())
        return simple + self.weight * model.schedule.T * w * term


def make_objective(name: str, model, hybrid_weight: float = 0.001, importance_sampling: bool = False):
    T = model.schedule.T
    if name == "trajectory_bound":
        return WholeTrajectoryBound(model)
    if name == "vlb":
        return VLBLoss(T, importance_sampling)
    if name == "simple":
        return SimpleLoss(T)
    if name == "hybrid":
        return HybridLoss(T, hybrid_weight, importance_sampling)
    raise ValueError(f"unknown objective {name!r}")



"""Samplers: plain functions, each labelled with its algorithm.

A model here is anything with ``schedule``, ``data_shape`` and ``p_mean_variance(x_t, t)`` returning
the mean and variance of p(x_{t-1} | x_t) (trained models and the exact oracle alike).
"""
from __future__ import annotations

import torch


@torch.no_grad()
def ancestral_sample(model, n: int, generator: torch.Generator | None = None, keep_trajectory: bool = False,
                     x_T: torch.Tensor | None = None):
    """Ancestral sampling (Ho et al. 2020, Algorithm 2): x_T ~ N(0, I), then x_{t-1} ~ p(x_{t-1} | x_t).

    Noise is added at every step, t = 1 included, so the samples follow the model's own p(x_0 | x_1)
    (a model whose variance is 0 at t = 1 returns its mean there). Returns (n, *dims), or the whole
    trajectory (T + 1, n, *dims) indexed by paper step (``traj[0]`` = x_0, ``traj[T]`` = x_T).
    """
    T = model.schedule.T
    shape = (n,) + tuple(model.data_shape)
    x = torch.randn(shape, generator=generator) if x_T is None else x_T.clone()
    traj = None
    if keep_trajectory:
        traj = x.new_empty((T + 1,) + shape)  # (T + 1, n, *dims)
        traj[T] = x
    for t in range(T, 0, -1):
        mean, variance = model.p_mean_variance(x, torch.full((n,), t, dtype=torch.long))
        x = mean + variance.sqrt() * torch.randn(shape, generator=generator)
        if traj is not None:
            traj[t - 1] = x
    return traj if keep_trajectory else x

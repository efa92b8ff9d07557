"""Training loop of the seed's recipe: AdamW on the whole-trajectory bound, a fresh trajectory of the
whole dataset each iteration (the seed's section 5), with a progress bar showing the loss."""
from __future__ import annotations

import time

import torch
from tqdm import tqdm

from ddpmlab.models.seed import SeedReverse
from ddpmlab.objectives.seed_bound import SeedTrajectoryBound


def train_seed(model: SeedReverse, data: torch.Tensor, iters: int = 1000, lr: float = 1e-2,
               weight_decay: float = 1e-6, generator: torch.Generator | None = None,
               progress: bool = True) -> dict:
    """Train ``model`` in place. Returns ``loss_history`` (the seed's loss, bound / (T + 1), per
    iteration) and ``train_seconds``."""
    T = model.schedule.T
    bound = SeedTrajectoryBound(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    noise = torch.empty((T,) + tuple(data.shape), dtype=data.dtype)  # reused: (T, N, *dims)
    history = []
    start = time.perf_counter()
    bar = tqdm(range(iters), desc="training", disable=not progress, mininterval=0.25, leave=False)
    for it in bar:
        torch.randn(noise.shape, generator=generator, out=noise)
        loss = bound(data, noise).mean() / (T + 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(loss.item())
        if it % 20 == 0:
            bar.set_postfix(loss=f"{history[-1]:.4f}", refresh=False)
    bar.close()
    return {"loss_history": history, "train_seconds": time.perf_counter() - start}


@torch.no_grad()
def estimate_bound(model: SeedReverse, data_sampler, n_batches: int = 20, batch: int = 1000,
                   generator: torch.Generator | None = None) -> tuple[float, float]:
    """The whole-trajectory bound per data point in nats (not divided by T + 1) on fresh data and fresh
    trajectories: mean and standard error over ``n_batches * batch`` examples."""
    bound = SeedTrajectoryBound(model)
    vals = []
    for _ in range(n_batches):
        x0 = data_sampler(batch, generator)
        noise = torch.randn((model.schedule.T,) + tuple(x0.shape), generator=generator)
        vals.append(bound(x0, noise).double())
    v = torch.cat(vals)
    return float(v.mean()), float(v.std() / len(v) ** 0.5)

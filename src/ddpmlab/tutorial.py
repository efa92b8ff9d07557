"""``ddpmlab tutorial``: the seed's whole system, end to end (train, sample, five figures, metrics).

Differences from the seed's code, on purpose:
- the networks see time t / T both in training and in sampling (the seed used t / (T + 1) in
  training and t / T in sampling);
- the bound is vectorised over all T steps (``SeedTrajectoryBound``) instead of a Python loop
  building ``torch.distributions`` objects;
- every random draw comes from one seeded generator, so a run is reproducible.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from ddpmlab import plots
from ddpmlab.diffusion import forward_trajectory
from ddpmlab.distributions import seed_mixture
from ddpmlab.evaluation.metrics import component_fractions, w1_against
from ddpmlab.fileio import atomic_write_json, ensure_writable_dir
from ddpmlab.models.seed import SeedReverse
from ddpmlab.runs import save_seed_run
from ddpmlab.samplers import ancestral_sample
from ddpmlab.schedule import make_schedule
from ddpmlab.train_seed import estimate_bound, train_seed
from ddpmlab.utils import DDPMLabError

FIGURES = ("data_hist.png", "forward_trajectories.png", "loss.png", "reverse_trajectories.png",
           "generated_hist.png")


def run_tutorial(out, seed: int = 0, iters: int = 1000, beta: float = 0.02, num_steps: int = 250,
                 n_data: int = 1000, hidden: int = 4, lr: float = 1e-2, weight_decay: float = 1e-6,
                 n_samples: int = 10_000, progress: bool = True, log=print) -> dict:
    """Train the seed's recipe and write figures, ``metrics.json`` and the trained model into ``out``."""
    if iters < 0:
        raise DDPMLabError(f"--iters must be >= 0, got {iters}")
    if n_samples < 2 or n_data < 2:
        raise DDPMLabError("need at least 2 data points and 2 samples")
    if hidden < 1:
        raise DDPMLabError(f"hidden width must be >= 1, got {hidden}")
    schedule = make_schedule("constant", num_steps, beta=beta)
    out = ensure_writable_dir(out)

    gen = torch.Generator().manual_seed(seed)
    dist = seed_mixture()
    data = dist.sample(n_data, gen)  # (N, 1), drawn once
    model = SeedReverse(schedule, dist.event_shape, hidden=hidden)
    model.net.reset_parameters(gen)

    trained = train_seed(model, data, iters=iters, lr=lr, weight_decay=weight_decay, generator=gen,
                         progress=progress)
    history = trained["loss_history"]

    vlb, vlb_se = estimate_bound(model, dist.sample, generator=gen)
    start = time.perf_counter()
    rev = ancestral_sample(model, n_samples, generator=gen, keep_trajectory=True)  # (T + 1, n, 1)
    sample_seconds = time.perf_counter() - start
    samples = rev[0]
    metrics = {
        "seed": seed,
        "iters": iters,
        "train_seconds": round(trained["train_seconds"], 4),
        "sample_seconds": round(sample_seconds, 4),
        "final_loss": float(np.mean(history[-50:])) if history else None,
        "vlb_nats": vlb,
        "vlb_nats_se": vlb_se,
        **w1_against(dist, samples, gen),
        "component_fractions": component_fractions(dist, samples),
        "true_component_fractions": dist.weights.tolist(),
        "n_samples": n_samples,
    }
    info = {"schedule": {"kind": "constant", "num_steps": num_steps, "beta": beta}, "hidden": hidden,
            "data_shape": list(dist.event_shape), "data": {"mixture": dist.to_dict(), "n": n_data},
            "seed": seed, "iters": iters, "lr": lr, "weight_decay": weight_decay}
    save_seed_run(out, model, info)

    fwd = forward_trajectory(schedule, data[:100], generator=gen)  # (T + 1, 100, 1)
    plots.data_hist(data, out / "data_hist.png", dist)
    plots.forward_trajectories(fwd, out / "forward_trajectories.png")
    plots.loss_curve(history, out / "loss.png")
    plots.reverse_trajectories(rev, out / "reverse_trajectories.png")
    plots.generated_hist(samples, out / "generated_hist.png", dist)
    atomic_write_json(out / "metrics.json", metrics)
    return metrics


def summary_lines(m: dict) -> list[str]:
    fr = ", ".join(f"{f:.3f}" for f in m["component_fractions"])
    tr = ", ".join(f"{f:.3f}" for f in m["true_component_fractions"])
    return [
        f"trained {m['iters']} iterations in {m['train_seconds']:.2f} s; final loss {m['final_loss']}",
        f"bound {m['vlb_nats']:.4f} +- {m['vlb_nats_se']:.4f} nats per data point",
        f"W1 {m['w1']:.4f} (noise floor {m['w1_noise_floor']:.4f}); component fractions [{fr}] (true [{tr}])",
    ]

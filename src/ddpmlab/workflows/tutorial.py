"""``ddpmlab tutorial``: the seed's whole system end to end (train, sample, five figures, metrics,
exact evaluation), on the packaged ``tutorial`` config.

Differences from the seed's code, on purpose:
- the networks see time t / T both in training and in sampling (the seed used t / (T + 1) in
  training and t / T in sampling);
- the bound is vectorised over all T steps (``SeedTrajectoryBound``) instead of a Python loop
  building ``torch.distributions`` objects;
- every random draw comes from one seeded generator, so a run is reproducible.
"""
from __future__ import annotations

import time

import numpy as np

from ddpmlab.figures import plots
from ddpmlab.config import load_config
from ddpmlab.core.diffusion import forward_trajectory
from ddpmlab.evaluation.report import evaluate_run
from ddpmlab.core.fileio import atomic_write_json, ensure_writable_dir
from ddpmlab.objectives.seed_bound import estimate_trajectory_bound
from ddpmlab.workflows.pipeline import fit, training_rows
from ddpmlab.workflows.threads import model_threads, thread_count
from ddpmlab.runs.format import save_run
from ddpmlab.sampling import sample

FIGURES = ("data_hist.png", "forward_trajectories.png", "loss.png", "reverse_trajectories.png",
           "generated_hist.png")


def run_tutorial(out, overrides=(), progress: bool = True) -> dict:
    """Train the ``tutorial`` config (with ``--set``-style ``overrides``) and write into ``out``: the five
    figures, ``metrics.json``, ``evaluation.json`` and the run. Returns the metrics, with the
    evaluation under ``"evaluation"``."""
    cfg = load_config("tutorial", overrides)
    out = ensure_writable_dir(out)
    trainer = fit(cfg, progress=progress)
    model, data, gen = trainer.model, trainer.data, trainer.generator
    dist, history = data.dist, trainer.loss_history

    with model_threads(cfg.train.threads, model, cfg.sample.n):
        vlb, vlb_se = estimate_trajectory_bound(model, dist.sample, generator=gen)
        start = time.perf_counter()
        rev = sample(model, cfg.sample.n, "ancestral", generator=gen, keep_trajectory=True)  # (T + 1, n, 1)
        sample_seconds = time.perf_counter() - start
        samples = rev[0]
        evaluation = evaluate_run(model, dist, gen, samples=samples)  # the same as ``ddpmlab evaluate``
    sample_metrics = evaluation["model"]["samples"]  # W1, floor and fractions of these samples, once
    metrics = {
        "seed": cfg.train.seed,
        "iters": trainer.step,
        "train_seconds": round(trainer.train_seconds, 4),
        "sample_seconds": round(sample_seconds, 4),
        "final_loss": float(np.mean(history[-50:])) if history else None,
        "vlb_nats": vlb,
        "vlb_nats_se": vlb_se,
        **{k: sample_metrics[k] for k in ("w1", "w1_noise_floor", "component_fractions",
                                          "true_component_fractions")},
        "n_samples": cfg.sample.n,
        "threads": thread_count(cfg.train.threads, model, training_rows(cfg, trainer)),  # while training
    }
    save_run(out, cfg, data.describe(), model, extra={"summary": metrics})

    fwd = forward_trajectory(model.schedule, data.train[:100], generator=gen)  # (T + 1, 100, 1)
    plots.data_hist(data.train, out / "data_hist.png", dist)
    plots.forward_trajectories(fwd, out / "forward_trajectories.png")
    plots.loss_curve(history, out / "loss.png")
    plots.reverse_trajectories(rev, out / "reverse_trajectories.png")
    plots.generated_hist(samples, out / "generated_hist.png", dist)
    atomic_write_json(out / "metrics.json", metrics)
    atomic_write_json(out / "evaluation.json", evaluation)
    return {**metrics, "evaluation": evaluation}


def summary_lines(m: dict) -> list[str]:
    fr = ", ".join(f"{f:.3f}" for f in m["component_fractions"])
    tr = ", ".join(f"{f:.3f}" for f in m["true_component_fractions"])
    loss = "n/a" if m["final_loss"] is None else f"{m['final_loss']:.5f}"
    return [
        f"trained {m['iters']} iterations in {m['train_seconds']:.2f} s; final loss {loss}",
        f"bound {m['vlb_nats']:.4f} +- {m['vlb_nats_se']:.4f} nats per data point",
        f"W1 {m['w1']:.4f} (noise floor {m['w1_noise_floor']:.4f}); component fractions [{fr}] (true [{tr}])",
    ]

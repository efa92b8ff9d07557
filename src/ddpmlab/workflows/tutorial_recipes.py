"""The tutorial's parts: the seed's recipe end to end, the recommended recipe on the same mixture, and the
exact reverse process sampled like a model. Each writes its own files and returns what the summary needs.

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

from ddpmlab.config.schema import load_config
from ddpmlab.core.diffusion import forward_trajectory
from ddpmlab.core.fileio import atomic_write_json, ensure_writable_dir
from ddpmlab.evaluation.diagnosis import diagnose
from ddpmlab.evaluation.exact import evaluate_run
from ddpmlab.evaluation.metrics import component_fractions_against, w1_against
from ddpmlab.figures import plots
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.objectives.seed_bound import estimate_trajectory_bound
from ddpmlab.runs.format import save_run
from ddpmlab.sampling.api import draw_samples, sample
from ddpmlab.workflows.pipeline import fit, training_rows
from ddpmlab.workflows.threads import model_threads, thread_count

SEED_FIGURES = ("data_hist.png", "forward_trajectories.png", "loss.png", "reverse_trajectories.png",
                "generated_hist.png")  # the seed's five figures, in the tutorial's DIR
SAMPLE_KEYS = ("w1", "w1_noise_floor", "component_fractions", "true_component_fractions")


def sample_metrics(dist, samples, generator: torch.Generator) -> dict:
    """W1 and its floor (a true sample of the same size), component fractions, the true weights and the
    fractions' binomial standard errors."""
    return {**w1_against(dist, samples, generator), **component_fractions_against(dist, samples)}


def seed_recipe(out: Path, overrides=(), progress: bool = True) -> dict:
    """Train the ``tutorial`` config (``--set``-style ``overrides``) and write into ``out``: the five figures,
    the per-step diagnosis (``excess_per_step.png``, ``diagnosis.json``), ``evaluation.json`` and the run.
    Returns ``metrics`` (what ``metrics.json`` holds for this recipe, the exact reverse process's sample
    metrics under ``oracle``), ``evaluation``, ``samples``, ``oracle_samples`` and ``dist``."""
    cfg = load_config("tutorial", overrides)
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
        diagnosis = diagnose(model, dist, generator=gen)
        exact = oracle_samples(dist, model, cfg.sample.n, gen)
    sample_part = evaluation["model"]["samples"]  # W1, floor and fractions of these samples, once
    metrics = {
        "seed": cfg.train.seed,
        "iters": trainer.step,
        "train_seconds": round(trainer.train_seconds, 4),
        "sample_seconds": round(sample_seconds, 4),
        "final_loss": float(np.mean(history[-50:])) if history else None,
        "vlb_nats": vlb,
        "vlb_nats_se": vlb_se,
        **{k: sample_part[k] for k in SAMPLE_KEYS},
        "component_fractions_se": sample_part["component_fractions_se"],
        "n_samples": cfg.sample.n,
        "threads": thread_count(cfg.train.threads, model, training_rows(cfg, trainer)),  # while training
        "diagnosis": {k: v for k, v in diagnosis.items() if k != "per_step"},
        "oracle": exact["metrics"],
    }
    save_run(out, cfg, data.describe(), model, extra={"summary": metrics})

    fwd = forward_trajectory(model.schedule, data.train[:100], generator=gen)  # (T + 1, 100, 1)
    plots.data_hist(data.train, out / "data_hist.png", dist)
    plots.forward_trajectories(fwd, out / "forward_trajectories.png")
    plots.loss_curve(history, out / "loss.png")
    plots.reverse_trajectories(rev, out / "reverse_trajectories.png")
    plots.generated_hist(samples, out / "generated_hist.png", dist)
    plots.excess_per_step(diagnosis, out / "excess_per_step.png", "the seed's recipe")
    atomic_write_json(out / "evaluation.json", evaluation)
    atomic_write_json(out / "diagnosis.json", diagnosis)
    return {"metrics": metrics, "evaluation": evaluation, "samples": samples, "oracle_samples": exact["samples"],
            "dist": dist}


def recommended_recipe(out: Path, overrides=(), progress: bool = True) -> dict:
    """Train the recommended ``default`` config (``overrides`` applied) and write a run into ``out``
    (run.json, model.safetensors, config.toml, metrics.json) with its generated histogram and reverse
    trajectories. Samples by the config's own sampler. Returns ``metrics`` (the exact reverse process's
    under ``oracle``), ``samples``, ``oracle_samples`` and ``dist``."""
    cfg = load_config("default", overrides)
    trainer = fit(cfg, progress=progress)
    model, dist, gen, s = trainer.sampling_model, trainer.data.dist, trainer.generator, cfg.sample
    with model_threads(cfg.train.threads, model, s.n):
        start = time.perf_counter()
        rev = draw_samples(model, s.n, s.sampler, s.steps, s.eta, gen, keep_trajectory=True,
                           ode_solver=s.ode_solver, time_shift=s.time_shift, grid=s.grid)  # (K + 1, n, *dims)
        sample_seconds = time.perf_counter() - start
        samples = rev[0]
        part = sample_metrics(dist, samples, gen)
        exact = oracle_samples(dist, model, s.n, gen)
    metrics = trainer.save(ensure_writable_dir(out), extra={
        "threads": thread_count(cfg.train.threads, model, training_rows(cfg, trainer)),  # while training
        "config": "default", "sampler": s.sampler, "sample_seconds": round(sample_seconds, 4),
        **{k: part[k] for k in SAMPLE_KEYS}, "component_fractions_se": part["component_fractions_se"],
        "n_samples": s.n, "oracle": exact["metrics"]})
    plots.generated_hist(samples, out / "generated_hist.png", dist)
    plots.reverse_trajectories(rev, out / "reverse_trajectories.png")
    return {"metrics": metrics, "samples": samples, "oracle_samples": exact["samples"], "dist": dist}


def oracle_samples(dist, model, n: int, generator: torch.Generator) -> dict:
    """The exact reverse process of ``dist`` under ``model``'s schedule (``MixtureOracle``: the best any
    Gaussian reverse step can do there), sampled ancestrally on all steps like the models. Returns its
    ``samples`` and ``metrics``."""
    oracle = MixtureOracle(dist, model.schedule, model.data_shape)
    samples = sample(oracle, n, "ancestral", generator=generator)
    part = sample_metrics(dist, samples, generator)
    return {"samples": samples, "metrics": {"num_steps": model.schedule.T, "sampler": "ancestral",
                                            **{k: part[k] for k in SAMPLE_KEYS}, "n_samples": n}}

"""Is the trained model good? Its samples' distance to the data beside a true sample's distance (the floor),
as a ratio: the line ``ddpmlab train`` prints at its end, and the yardstick of ``benchmarks/quality_suite.py``.

The distance is the sliced Wasserstein-1 distance (``metrics_nd.sliced_w1``; in 1-D it is W1 itself) of
the run's samples, drawn with its own sampler (``finished.draw_run_samples``, diffusion and flow alike),
to data the network never saw:

| data                   | reference                         | floor: as many ...                        |
|------------------------|-----------------------------------|-------------------------------------------|
| a named distribution   | ``N_REFERENCE`` fresh draws       | fresh true draws (``FLOOR_REPEATS``, mean) |
| the user's file        | the rows held out at training     | training rows (``FLOOR_REPEATS`` subsets) |
| digits (a cheap proxy) | the held-out images (pixels)      | training images                           |

A perfect model scores the floor on average; a ratio above ``GOOD_RATIO`` gets a hint to train longer.
``ddpmlab evaluate`` gives the full evaluation (the Frechet distance for digits, NLLs).
"""
from __future__ import annotations

import math

import torch

from ddpmlab.core.threads import intra_op_threads
from ddpmlab.core.utils import DDPMLabError, NonFiniteError
from ddpmlab.data.digits import digits_split
from ddpmlab.evaluation.finished import draw_run_samples, heldout_split, run_data, to_model_space
from ddpmlab.evaluation.metrics_nd import sample_metrics_nd

GOOD_RATIO = 2.0  # a model within 2x a true sample's distance counts as good (issue 24's acceptance)
N_SAMPLES = 4000  # samples drawn for the line (fewer when the training set is smaller)
N_REFERENCE = 20_000  # fresh draws a named distribution's samples are measured against
FLOOR_REPEATS = 5  # true samples averaged for the floor (one sliced W1 varies by ~30 %)
N_PROJECTIONS = 128  # directions of the sliced W1 (one in 1-D, where it is W1 itself)
HINT_ITERS_FACTOR = 4  # a poor ratio suggests this many times the run's train.iters (at least 4 x HINT_MIN_ITERS)
HINT_MIN_ITERS = 250


def _floor_subsets(rows: torch.Tensor, n: int, generator: torch.Generator) -> list[torch.Tensor]:
    """``FLOOR_REPEATS`` random subsets of ``n`` of ``rows`` (the rows themselves when n covers them)."""
    if n >= len(rows):
        return [rows]
    return [rows[torch.randperm(len(rows), generator=generator)[:n]] for _ in range(FLOOR_REPEATS)]


def _ratio(metrics: dict, dims: int, against: str) -> dict:
    value, floor = metrics["sliced_w1"], metrics["sliced_w1_noise_floor"]
    ratio = value / floor if floor > 0 and math.isfinite(value) else float("inf")
    return {"metric": "W1" if dims == 1 else "sliced W1", "value": value, "floor": floor, "ratio": ratio,
            "against": against, "n": metrics["n"]}


def against_truth(dist, samples: torch.Tensor, generator: torch.Generator, n_ref: int = N_REFERENCE) -> dict:
    """``samples`` (n, *dims) of a known distribution ``dist`` (``sample(n, generator)``), in its units:
    sliced W1 to ``n_ref`` fresh draws beside the mean of ``FLOOR_REPEATS`` true samples of size n."""
    n = samples.shape[0]
    dims = math.prod(samples.shape[1:])
    reference = dist.sample(n_ref, generator).reshape(n_ref, -1)
    trues = [dist.sample(n, generator).reshape(n, -1) for _ in range(FLOOR_REPEATS)]
    m = sample_metrics_nd(samples.reshape(n, -1), reference, trues, generator,
                          n_projections=1 if dims == 1 else N_PROJECTIONS, with_mmd=False)
    return _ratio(m, dims, f"{n_ref} fresh draws")


def against_rows(samples: torch.Tensor, train: torch.Tensor, held: torch.Tensor, generator: torch.Generator,
                 what: str = "held-out rows") -> dict:
    """``samples`` against ``held`` rows the model never saw, the floor being as many ``train`` rows
    against the same held-out rows (all in one space)."""
    n = min(len(samples), len(train))
    dims = math.prod(held.shape[1:])
    samples = samples[:n].reshape(n, -1)
    floors = [f.reshape(n, -1) for f in _floor_subsets(train, n, generator)]
    m = sample_metrics_nd(samples, held.reshape(len(held), -1), floors, generator,
                          n_projections=1 if dims == 1 else N_PROJECTIONS, with_mmd=False)
    return _ratio(m, dims, f"{len(held)} {what}")


def reference_rows(run) -> tuple[str, object]:
    """What a run's samples are measured against: ("distribution", dist), or ("rows", (train, held)) in
    the model's space with a description; a ``DDPMLabError`` says why there is nothing to measure with."""
    kind, dist = run_data(run)
    if kind == "heldout":
        train, held = heldout_split(run)
        return "rows", (to_model_space(run, train), to_model_space(run, held), "held-out rows")
    if kind == "digits":
        return "rows", (digits_split("train")[0], digits_split("heldout")[0], "held-out digit images (pixels)")
    return "distribution", dist


@torch.no_grad()
def run_quality(run, generator: torch.Generator | None = None, n: int = N_SAMPLES) -> dict:
    """The quality of a finished run (``ddpmlab.runs.format.Run``): ``against_truth`` or ``against_rows``
    of ``n`` samples drawn with the run's own sampler, or ``{"skipped": reason}``."""
    generator = generator if generator is not None else torch.Generator().manual_seed(run.cfg.train.seed)
    try:
        kind, ref = reference_rows(run)
    except DDPMLabError as exc:
        return {"skipped": str(exc)}
    if kind == "rows":
        n = min(n, len(ref[0]))
    with intra_op_threads(1):
        try:
            samples = draw_run_samples(run, n, generator)
        except NonFiniteError:
            samples = torch.full((1,), math.nan)
        if not bool(torch.isfinite(samples).all()):
            return {"skipped": "the samples hold NaN or infinity (the run's weights or schedule are broken)"}
        if kind == "rows":
            return against_rows(samples, *ref[:2], generator, what=ref[2])
        return against_truth(ref, samples, generator)


def quality_line(q: dict, iters: int) -> str:
    """One line: the metric beside its floor and their ratio, with a hint when the ratio is poor."""
    if "skipped" in q:
        return f"quality: skipped ({q['skipped']})"
    head = f"quality: {q['metric']} {q['value']:.4g} to {q['against']}; a true sample's {q['floor']:.4g}"
    if q["ratio"] <= GOOD_RATIO:
        return f"{head}; {q['ratio']:.1f}x (good: within {GOOD_RATIO:g}x)"
    more = HINT_ITERS_FACTOR * max(iters, HINT_MIN_ITERS)
    return f"{head}; {q['ratio']:.1f}x a true sample's distance: try --set train.iters={more}"

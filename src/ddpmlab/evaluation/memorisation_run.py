"""Memorisation of a finished run (issue 26): how many of its samples are near-copies of its training
points, beside the fraction for true samples (what a model that generalises scores) and for the empirical
optimum's samples (what a model that memorises scores: every one a copy, ``EmpiricalOracle``).

Only a run with a finite training set can memorise: a user's file or tensor (its training rows), a named
set drawn once (``data.n_train`` > 0, the same draw the trainer made from ``train.seed``) or the digits'
training split. A run that saw fresh draws every batch (``n_train`` = 0) has none, and gets no entry.
Everything is in data units; a near-copy lies within ``copy_threshold`` of a training point (the 5th
percentile of the training points' own nearest-neighbour distances, so about 5 % of true samples are
"copies" too).

Beside them, ``distances_of``: per t (``distance_times``), the model's x_0 prediction's distance to the
population optimum and to the empirical optimum (``optimum_distances``), on x_t drawn from ``N_DISTANCES``
training points (with replacement: the loss's own inputs, where a model that memorises is the empirical
optimum) and from as many fresh true points (where it generalises, or snaps to its training points), from
a generator seeded with the recorded ``seed`` (so that a direct call reproduces them). Only Gaussian-mixture
data have a population optimum; a run without one or without a finite training set gets the reason.
"""
from __future__ import annotations

import torch

from ddpmlab.core.utils import DDPMLabError
from ddpmlab.evaluation.memorisation import (COPY_QUANTILE, copy_fraction, copy_threshold, crossover_t,
                                             distance_times, optimum_distances)
from ddpmlab.models.family import family_of
from ddpmlab.sampling.api import sample

N_OPTIMUM = 200  # samples of the empirical optimum (its every step sums over all training points)
N_DISTANCES = 256  # x_0 of the optimum distances: training points, and as many held-out ones
DISTANCE_RULE = ("mean over x_t ~ q(x_t | x_0) of ||a - b||^2 / D between x_0 predictions (model space); x_0 "
                 "drawn from the training points (with replacement) and from fresh true data")
RULE = (f"a sample within the {COPY_QUANTILE:.0%} quantile of the training points' own nearest-neighbour "
        "distances of a training point")


@torch.no_grad()
def memorisation_of(model, samples: torch.Tensor, train: torch.Tensor, true: torch.Tensor, to_data_units, to_model,
                    generator: torch.Generator) -> dict | None:
    """{"n_train", "threshold", "model", "true_samples", "empirical_optimum", "rule"}: the near-copy fractions
    of ``samples``, of the ``true`` rows and of samples of the empirical optimum of ``train`` (drawn by the
    family's default sampler; None where the family has none), all in data units (``to_data_units`` and
    ``to_model`` convert a model's space); None without a training set of at least 2 rows."""
    if train is None or train.shape[0] < 2:
        return None
    threshold = copy_threshold(train)
    try:
        optimum = family_of(model).empirical_oracle(model, to_model(train).double())
        drawn = to_data_units(sample(optimum, min(N_OPTIMUM, samples.shape[0]), generator=generator))
        optimum_fraction = copy_fraction(drawn, train, threshold)
    except DDPMLabError:  # a family without an empirical optimum
        optimum_fraction = None
    return {"n_train": int(train.shape[0]), "threshold": threshold, "rule": RULE,
            "model": copy_fraction(samples, train, threshold), "true_samples": copy_fraction(true, train, threshold),
            "empirical_optimum": optimum_fraction}


def distance_points(train: torch.Tensor, dist, generator: torch.Generator, n: int = N_DISTANCES):
    """(x_0 from the training points, with replacement; x_0 drawn fresh from ``dist``), ``n`` each, shaped
    like ``train`` (float64), in this order from ``generator``."""
    picked = train[torch.randint(train.shape[0], (n,), generator=generator)]
    fresh = dist.sample(n, generator, dtype=torch.float64).reshape((n,) + tuple(train.shape[1:]))
    return picked.double(), fresh


@torch.no_grad()
def distances_of(model, dist, train: torch.Tensor | None, generator: torch.Generator) -> dict:
    """``{"n_train", "seed", "rule", "training", "heldout"}``: ``optimum_distances`` at ``distance_times`` with
    its ``crossover_t``, on x_t of ``distance_points`` (from a generator seeded with ``seed``, drawn from
    ``generator``), x_t of the training points first; or ``{"skipped": why}`` without a population optimum
    (``dist`` None: data that are not a Gaussian mixture), without a training set (``train`` None or
    fewer than 2 rows, in model space) or for a family without both optima."""
    if train is None or train.shape[0] < 2:
        return {"skipped": "no finite training set: the run drew fresh data every batch (data.n_train = 0)"}
    if dist is None:
        return {"skipped": "no population optimum: it is exact only for Gaussian-mixture data"}
    family = family_of(model)
    try:
        population, empirical = family.oracle(model, dist), family.empirical_oracle(model, train.double())
    except DDPMLabError as exc:
        return {"skipped": f"the {family.name} family: {exc}"}
    seed = int(torch.randint(2 ** 62, (1,), generator=generator))
    g = torch.Generator().manual_seed(seed)
    picked, fresh = distance_points(train, dist, g)
    ts = distance_times(model)
    out = {"n_train": int(train.shape[0]), "seed": seed, "rule": DISTANCE_RULE}
    for key, x0 in (("training", picked), ("heldout", fresh)):
        d = optimum_distances(model, population, empirical, x0, ts, g)
        out[key] = {**d, "crossover_t": crossover_t(d)}
    return out


SHOWN_TIMES = 3  # the tables show the distances at this many t (first, middle, last) and the crossover t
SOURCES = {"training": "training x_t", "heldout": "held-out x_t"}


def _sci(v) -> str:
    return "-" if v is None else f"{v:.2e}"


def distance_rows(ev: dict) -> list[tuple[str, str, str]]:
    """The optimum distances of an evaluation as (label, model's "to population / to empirical", the
    population optimum's "0 / to empirical") at ``SHOWN_TIMES`` t of each source and the crossover t; none
    where they were skipped (``skipped_note``) or in an evaluation made before they existed."""
    od = ev.get("optimum_distances")
    if not od or "skipped" in od:
        return []
    rows = []
    for key, where in SOURCES.items():
        d = od[key]
        shown = sorted({round(i * (len(d["t"]) - 1) / (SHOWN_TIMES - 1)) for i in range(SHOWN_TIMES)})
        for i in shown:
            rows.append((f"x0 to population / empirical optimum, t={d['t'][i]:g} ({where})",
                         f"{_sci(d['model_vs_population'][i])} / {_sci(d['model_vs_empirical'][i])}",
                         f"0 / {_sci(d['population_vs_empirical'][i])}"))
    cross = " / ".join("none" if od[k]["crossover_t"] is None else f"{od[k]['crossover_t']:g}" for k in SOURCES)
    rows.append(("crossover t, first nearer the population optimum (training / held-out x_t)", cross, ""))
    return rows


def skipped_note(ev: dict) -> str | None:
    """"optimum distances skipped: why" for an evaluation that has no optimum distances, else None."""
    od = ev.get("optimum_distances")
    return f"optimum distances skipped: {od['skipped']}" if od and "skipped" in od else None

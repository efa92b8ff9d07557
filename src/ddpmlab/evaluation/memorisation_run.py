"""Memorisation of a finished run (issue 26): how many of its samples are near-copies of its training
points, beside the fraction for true samples (what a model that generalises scores) and for the empirical
optimum's samples (what a model that memorises scores: every one a copy, ``EmpiricalOracle``).

Only a run with a finite training set can memorise: a user's file or tensor (its training rows), a named
set drawn once (``data.n_train`` > 0, the same draw the trainer made from ``train.seed``) or the digits'
training split. A run that saw fresh draws every batch (``n_train`` = 0) has none, and gets no entry.
Everything is in data units; a near-copy lies within ``copy_threshold`` of a training point (the 5th
percentile of the training points' own nearest-neighbour distances, so about 5 % of true samples are
"copies" too).
"""
from __future__ import annotations

import torch

from ddpmlab.core.utils import DDPMLabError
from ddpmlab.evaluation.memorisation import COPY_QUANTILE, copy_fraction, copy_threshold
from ddpmlab.models.family import family_of
from ddpmlab.sampling.api import sample

N_OPTIMUM = 200  # samples of the empirical optimum (its every step sums over all training points)
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

"""Memorisation: are a model's samples copies of its training set, and which optimum does it follow?

On a finite training set the denoising loss has two exact optima: the population optimum (the true
distribution's, ``MixtureOracle`` / ``FlowMixtureOracle``) and the empirical optimum (the training set
smoothed by the forward kernel, ``EmpiricalOracle`` / ``FlowEmpiricalOracle``), whose samples are the
training points themselves. Two measures tell which one a trained model is near:

- near-copies: ``copy_fraction(samples, train, threshold)`` is the fraction of samples whose nearest
  training point (Euclidean, over the flattened example) is no farther than ``threshold``; the documented
  threshold is ``copy_threshold(train)``, the 5th percentile (``COPY_QUANTILE``) of the training points'
  own nearest-neighbour distances, each point left out of its own search (a sample nearer a training
  point than 95 % of the training points are to each other is a copy of it). The same fraction for true
  samples is the floor (about 5 % in expectation: a fresh point's nearest-neighbour distance is
  distributed like a training point's leave-one-out one; noisy for small N), and for the empirical
  optimum's samples the ceiling: 1.0 where the training points lie farther apart than the smallest
  step's noise (closer ones its Gaussian reverse step, moment-matched like every model's, averages);
- ``optimum_distances``: per step t, the mean squared distance per dimension between the model's x_0
  prediction and each optimum's, on x_t drawn from the forward process of held-out (or true) data, and
  ``crossover_t``, the first t, going up from the data, at which the model is nearer the population
  optimum than the empirical one. (The eps predictions' distances are the x_0 ones times alpha^2 /
  sigma^2 at each t: the same comparison.) Where x_t comes from matters: on x_t of the training points
  (the loss's own inputs) the distances say which optimum the network fits; on x_t of held-out data at
  small t the empirical optimum snaps to the nearest training point, far from x_t, where no smooth
  network that fits the training set needs to follow it: there they say how the network generalises
  (benchmarks/memorisation.py measures both). ``distance_times`` is the documented grid of t.
"""
from __future__ import annotations

import math
import numbers

import torch

from ddpmlab.core.utils import DDPMLabError
from ddpmlab.core.validate import check_examples, check_generator
from ddpmlab.models.empirical_sums import nearest_neighbours
from ddpmlab.sampling.grids import DiscreteSteps, time_axis

COPY_QUANTILE = 0.05  # the copy threshold: this quantile of the training points' own NN distances
DISTANCE_TIMES = 14  # times t of the optimum distances (``distance_times``)
FLOW_FIRST_TIME = 0.002  # a flow's smallest such t (EDM's smallest noise level)


def _rows(x, name: str) -> torch.Tensor:
    x = check_examples(x, name, dtype=torch.float64)
    return x.reshape(x.shape[0], -1).cpu()


def copy_threshold(train, quantile: float = COPY_QUANTILE) -> float:
    """The ``quantile`` (default the 5th percentile) of the training points' leave-one-out nearest-neighbour
    distances (linear interpolation between order statistics, NumPy's default): the near-copy radius."""
    if not isinstance(quantile, numbers.Real) or not 0.0 <= float(quantile) <= 1.0:
        raise DDPMLabError(f"the copy quantile must lie in [0, 1], got {quantile}")
    train = check_examples(train, "the training set", dtype=torch.float64, min_rows=2)
    dist, _ = nearest_neighbours(train, train, exclude_self=True)
    return float(torch.quantile(dist, float(quantile)))


def copy_fraction(samples, train, threshold: float | None = None) -> float:
    """The fraction of ``samples`` (n, *dims) whose nearest point of ``train`` (N, *dims) is at most
    ``threshold`` away (default ``copy_threshold(train)``)."""
    x, y = _rows(samples, "the samples"), _rows(train, "the training set")
    if x.shape[1] != y.shape[1]:
        raise DDPMLabError(f"samples of {x.shape[1]} numbers cannot be compared with training points of "
                           f"{y.shape[1]}")
    threshold = copy_threshold(train) if threshold is None else threshold
    if not isinstance(threshold, numbers.Real) or not threshold >= 0:
        raise DDPMLabError(f"the copy threshold must be a distance >= 0, got {threshold!r}")
    threshold = float(threshold)
    dist, _ = nearest_neighbours(x, y)
    return float((dist <= threshold).double().mean())


def distance_times(model, k: int = DISTANCE_TIMES) -> list:
    """About ``k`` times of the model's family spread geometrically from the data to the prior: a DDPM's
    steps 1..T (rounded, each once), a flow's t from ``FLOW_FIRST_TIME`` to 1."""
    axis = time_axis(model)
    if isinstance(axis, DiscreteSteps):
        T = axis.schedule.T
        return sorted({int(round(T ** (i / (k - 1)))) for i in range(k)})
    return [FLOW_FIRST_TIME ** (1 - i / (k - 1)) for i in range(k)]


@torch.no_grad()
def optimum_distances(model, population_oracle, empirical_oracle, x0_ref, ts,
                      generator: torch.Generator | None = None) -> dict:
    """Per time t of ``ts`` (a DDPM's paper steps, a flow's times), on x_t drawn from the forward process
    of ``x0_ref`` (n, *dims: held-out or true data, not the training set), one draw per example and t
    (the same draw for the three models), the mean over examples of ||a - b||^2 / D between x_0
    predictions: ``model_vs_population``, ``model_vs_empirical`` and ``population_vs_empirical`` (how far
    apart the optima are: where it is small, the comparison says nothing), each with its standard error
    (``*_se``), and ``difference_se``, the standard error of the paired difference model_vs_population -
    model_vs_empirical. Lists indexed like ``t``."""
    ts = model.times(ts, "the optimum distances")
    x0 = check_examples(x0_ref, "the reference data", tuple(model.data_shape), dtype=torch.float64,
                        min_rows=2).cpu()
    generator = check_generator(generator)
    n, dims = x0.shape[0], math.prod(x0.shape[1:])
    pairs = ("model_vs_population", "model_vs_empirical", "population_vs_empirical")
    out = {"t": ts, **{k: [] for k in pairs}, **{f"{k}_se": [] for k in pairs}, "difference_se": []}
    for t in ts:
        eps = torch.randn(x0.shape, generator=generator, dtype=torch.float64)
        x_t = model.q_sample(x0, t, eps)  # the forward process of the model's family at its time t
        m, p, e = (net.predict_x0(x_t, t) for net in (model, population_oracle, empirical_oracle))
        per = {k: (a - b).square().reshape(n, -1).sum(1) / dims for k, (a, b) in zip(pairs, ((m, p), (m, e), (p, e)))}
        for k, v in per.items():
            out[k].append(float(v.mean()))
            out[f"{k}_se"].append(float(v.std() / math.sqrt(n)))
        out["difference_se"].append(float((per[pairs[0]] - per[pairs[1]]).std() / math.sqrt(n)))
    out["n"] = n
    return out


def crossover_t(distances: dict):
    """The smallest t of an ``optimum_distances`` result at which the model is nearer the population
    optimum than the empirical one (below it, it follows its training set), or None when it never is."""
    for t, pop, emp in zip(distances["t"], distances["model_vs_population"], distances["model_vs_empirical"]):
        if pop < emp:
            return t
    return None

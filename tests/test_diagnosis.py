"""The per-step diagnosis (``ddpmlab.evaluation.diagnosis``) against closed forms and an independent estimate.

A model made of the oracle's own reverse step with its mean moved by k posterior standard deviations and
its variance scaled by c loses exactly k^2 / (2c) nats per dimension at every step through its mean and
(1/c - 1 + log c) / 2 through its variance; the oracle loses nothing; and summed over the steps the excess
is the bound's excess over the oracle's, as ``evaluate_bound`` (Monte Carlo against the data posterior)
measures it independently."""
import math

import numpy as np
import pytest
import torch

import ddpmlab as dl
from ddpmlab.core.process import ReverseProcess
from ddpmlab.core.parameterisation import from_mean_variance
from ddpmlab.evaluation.diagnosis import diagnose, excess_per_step, smallest_range
from ddpmlab.evaluation.likelihood import evaluate_bound


class Perturbed(ReverseProcess):
    """The exact reverse step with its mean moved by k standard deviations and its variance scaled by c."""

    def __init__(self, oracle, k: float = 0.0, c: float = 1.0):
        self.oracle, self.k, self.c = oracle, k, c
        self.schedule, self.data_shape = oracle.schedule, oracle.data_shape

    def p_mean_variance(self, x_t, t, cond=None):
        p = self.oracle.p_mean_variance(x_t, t)
        return from_mean_variance(self.schedule, x_t, t, p.mean + self.k * p.variance.sqrt(), p.variance * self.c)


def mixture_2d():
    return dl.GaussianMixture([1.0, 3.0], [[-2.0, 1.0], [2.0, -1.0]], [[0.5, 1.5], [1.0, 0.3]])


@pytest.mark.parametrize("k, c", [(0.0, 1.0), (0.4, 1.0), (0.0, 1.7), (0.3, 0.6)])
def test_closed_form_at_every_step(k, c):
    dist = mixture_2d()  # two dimensions: nothing assumes 1-D data
    oracle = dl.MixtureOracle(dist, dl.make_schedule("linear", 40, beta_start=1e-3, beta_end=0.1))
    g = torch.Generator().manual_seed(0)
    parts = excess_per_step(Perturbed(oracle, k, c), dist, dist.sample(300, g), g, max_rows=5000)
    assert parts["mean_nats"].shape == (40, 300)
    d = 2
    torch.testing.assert_close(parts["mean_nats"], torch.full((40, 300), d * k ** 2 / (2 * c), dtype=torch.float64))
    torch.testing.assert_close(parts["variance_nats"],
                               torch.full((40, 300), d * 0.5 * (1 / c - 1 + math.log(c)), dtype=torch.float64))
    torch.testing.assert_close(parts["excess_nats"], parts["mean_nats"] + parts["variance_nats"])


def test_sum_over_steps_is_the_bounds_excess():
    """Independent: the bound of eq. 5 by Monte Carlo (KL to q(x_{t-1} | x_t, x_0), decoder at t = 1)."""
    dist = dl.GaussianMixture([1.0, 2.0], [[-4.0], [4.0]], [1.0, 1.0])
    oracle = dl.MixtureOracle(dist, dl.make_schedule("constant", 60, beta=0.05))
    model = Perturbed(oracle, k=0.35, c=1.3)
    g = torch.Generator().manual_seed(1)
    d = diagnose(model, dist, n=500, generator=g)
    exact = 60 * (0.35 ** 2 / (2 * 1.3) + 0.5 * (1 / 1.3 - 1 + math.log(1.3)))
    assert d["excess_nats"] == pytest.approx(exact, rel=1e-9) and d["excess_nats_se"] < 1e-9
    assert d["mean_share"] == pytest.approx(0.35 ** 2 / (2 * 1.3) * 60 / exact)
    model_bound = evaluate_bound(model, dist.sample, 6000, g)
    oracle_bound = evaluate_bound(oracle, dist.sample, 6000, g)
    diff = model_bound["total_nats"] - oracle_bound["total_nats"]
    se = math.hypot(model_bound["total_nats_se"], oracle_bound["total_nats_se"])
    assert abs(diff - exact) < 4 * se, (diff, exact, se)


def test_the_oracle_loses_nothing():
    dist = dl.GaussianMixture([1.0, 2.0], [[-4.0], [4.0]], [1.0, 1.0])
    oracle = dl.MixtureOracle(dist, dl.make_schedule("constant", 30, beta=0.02))
    d = diagnose(oracle, dist, n=200, generator=torch.Generator().manual_seed(2))
    assert d["excess_nats"] == 0.0 and max(d["per_step"]["excess_nats"]) == 0.0
    assert len(d["per_step"]["mean_nats"]) == 30 and d["num_steps"] == 30


def brute_force_range(v, share):
    total = sum(v)
    best = None
    for a in range(1, len(v) + 1):
        for b in range(a, len(v) + 1):
            if sum(v[a - 1:b]) >= share * total * (1 - 1e-12) and (best is None or b - a < best[1] - best[0]):
                best = (a, b)
    return best


@pytest.mark.parametrize("values, share, expected", [
    ([0, 0, 5, 5, 0, 0], 0.75, (3, 4)),
    ([0, 0, 0, 9, 1, 0], 0.75, (4, 4)),
    ([1] * 8, 0.5, (1, 4)),
    ([3, 1, 1, 1, 1, 1, 1, 3], 0.5, (1, 4)),
])
def test_smallest_range_examples(values, share, expected):
    assert smallest_range(values, share) == expected


def test_smallest_range_against_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 25))
        v = (rng.exponential(size=n) * (rng.random(n) < 0.7)).tolist()  # some steps lose nothing
        if not any(v):
            continue
        share = float(rng.choice([0.5, 0.75, 0.9, 1.0]))
        assert smallest_range(v, share) == brute_force_range(v, share), (v, share)

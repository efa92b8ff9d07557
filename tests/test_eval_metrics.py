"""Sample metrics and their noise floors; the data's exact entropy."""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.optimize import brentq
from scipy.stats import norm, wasserstein_distance

from conftest import gen
from ddpmlab.core.distributions import GaussianMixture, seed_mixture
from ddpmlab.evaluation.metrics import (KS_MEAN_SQRT_N, component_fractions_against, ks_against, mixture_cdf_1d,
                                        mixture_entropy_1d, w1_to_mixture_1d)


def test_entropy_of_a_gaussian_is_closed_form():
    for m, v in ((0.0, 1.0), (3.0, 0.01), (-2.0, 25.0)):
        dist = GaussianMixture([1.0], [[m]], [v])
        assert mixture_entropy_1d(dist) == pytest.approx(0.5 * math.log(2 * math.pi * math.e * v), abs=1e-9)


def test_entropy_of_the_seed_mixture():
    """2.0554 nats (issue 3); for well separated components it is H(weights) + the Gaussian entropy."""
    h = mixture_entropy_1d(seed_mixture())
    assert h == pytest.approx(2.0554, abs=5e-5)
    w = np.array([1 / 3, 2 / 3])
    assert h == pytest.approx(-(w * np.log(w)).sum() + 0.5 * math.log(2 * math.pi * math.e), abs=1e-4)


def test_entropy_matches_monte_carlo_for_overlapping_components():
    dist = GaussianMixture([0.2, 0.5, 0.3], [[-1.0], [0.5], [1.0]], [0.3, 1.5, 0.1])
    v = -dist.log_prob(dist.sample(200_000, gen(1), dtype=torch.float64))
    assert abs(mixture_entropy_1d(dist) - float(v.mean())) < 4 * float(v.std()) / math.sqrt(len(v))


def test_mixture_cdf():
    dist = seed_mixture()
    x = np.array([-50.0, -4.0, 0.0, 4.0, 50.0])
    expected = norm.cdf(x, -4, 1) / 3 + 2 * norm.cdf(x, 4, 1) / 3
    np.testing.assert_allclose(mixture_cdf_1d(dist, x), expected, rtol=1e-12, atol=1e-15)


def test_ks_floor_is_what_true_samples_score():
    dist = seed_mixture()
    g = gen(2)
    n, reps = 2000, 40
    stats = [ks_against(dist, dist.sample(n, g))["ks"] for _ in range(reps)]
    floor = ks_against(dist, dist.sample(n, g))["ks_noise_floor"]
    assert floor == pytest.approx(KS_MEAN_SQRT_N / math.sqrt(n))
    # sqrt(n) D_n + 1 / (6 sqrt(n)) follows the limiting law more closely, so E[D_n] ~ floor - 1 / (6 n)
    expected = floor - 1 / (6 * n)
    assert abs(np.mean(stats) - expected) < 4 * np.std(stats, ddof=1) / math.sqrt(reps)
    bad = ks_against(dist, dist.sample(n, g) + 0.5)
    assert bad["ks"] > 5 * floor and bad["ks_pvalue"] < 1e-6


def test_component_fractions_of_true_samples():
    dist = seed_mixture()
    n = 20_000
    res = component_fractions_against(dist, dist.sample(n, gen(3)))
    for f, w, se in zip(res["component_fractions"], res["true_component_fractions"],
                        res["component_fractions_se"]):
        assert se == pytest.approx(math.sqrt(w * (1 - w) / n))
        assert abs(f - w) < 4 * se


def test_one_dimensional_metrics_refuse_other_dimensions():
    dist = GaussianMixture([1.0], [[0.0, 0.0]], [1.0])
    with pytest.raises(ValueError):
        mixture_entropy_1d(dist)
    with pytest.raises(ValueError):
        ks_against(dist, torch.zeros(5, 2))


def test_w1_to_mixture_of_one_point_is_the_mean_absolute_deviation():
    """W1(delta_a, N(m, s^2)) = E|X - a| = s (2 phi(z) + z (2 Phi(z) - 1)), z = (a - m) / s."""
    dist = GaussianMixture([1.0], [[0.5]], [4.0])
    for a in (-7.0, 0.5, 1.3, 9.0):
        z = (a - 0.5) / 2.0
        assert w1_to_mixture_1d(dist, torch.tensor([[a]], dtype=torch.float64)) == pytest.approx(
            2.0 * (2 * norm.pdf(z) + z * (2 * norm.cdf(z) - 1)), rel=1e-12)


def test_w1_to_mixture_matches_quadrature_of_the_cdf_gap():
    """int |F_n - F| dx by adaptive quadrature between the sorted samples (ties included), each piece split
    where F crosses the empirical CDF (brentq)."""
    dist = GaussianMixture([0.2, 0.5, 0.3], [[-1.0], [0.5], [1.0]], [0.3, 1.5, 0.1])
    x = np.sort(np.concatenate([dist.sample(37, gen(3), dtype=torch.float64).numpy().ravel(), [0.25, 0.25]]))
    n = x.size
    F = lambda v: float(mixture_cdf_1d(dist, np.array([v]))[0])  # noqa: E731
    integral = lambda f, lo, hi: quad(f, lo, hi, epsabs=1e-14, epsrel=1e-13)[0]  # noqa: E731
    total = integral(F, -40.0, x[0]) + integral(lambda v: 1 - F(v), x[-1], 40.0)
    for i in range(1, n):
        a, b, c = x[i - 1], x[i], i / n
        s = brentq(lambda v: F(v) - c, a, b, xtol=1e-15) if F(a) < c < F(b) else (a if c <= F(a) else b)
        total += integral(lambda v: c - F(v), a, s) + integral(lambda v: F(v) - c, s, b)
    assert w1_to_mixture_1d(dist, torch.from_numpy(x)) == pytest.approx(total, rel=1e-11)


def test_w1_to_mixture_is_the_limit_of_w1_to_a_large_reference():
    dist = seed_mixture()
    x = dist.sample(500, gen(4), dtype=torch.float64).numpy().ravel() * 1.1  # a visibly wrong sample
    ref = dist.sample(2_000_000, gen(5), dtype=torch.float64).numpy().ravel()
    exact = w1_to_mixture_1d(dist, x)
    assert exact > 0.1 and wasserstein_distance(x, ref) == pytest.approx(exact, abs=3e-3)

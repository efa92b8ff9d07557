"""Oracles for what the 1-D metric tests left open (issue 27, mutation testing of ``evaluation/metrics.py``):
the entropy of mixtures with a narrow component (closed form for well separated components), W1 to a
fresh reference and its floor against scipy on the same generator stream, W1 to the exact mixture where
the empirical CDF meets F exactly at a sample, component fractions in 2-D and with an empty component,
the CDF at a scalar, and the refusals of data that are not 1-D."""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import quad
from scipy.stats import norm, wasserstein_distance

from conftest import gen
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.evaluation.metrics import (component_fractions, mixture_cdf_1d, mixture_entropy_1d, w1, w1_against,
                                        w1_to_mixture_1d)


def separated_entropy(weights, variances) -> float:
    """Entropy of a mixture whose components do not overlap: H(weights) + sum_k w_k 0.5 log(2 pi e v_k)."""
    w = np.asarray(weights) / np.sum(weights)
    return float(-(w * np.log(w)).sum() + (w * 0.5 * np.log(2 * math.pi * math.e * np.asarray(variances))).sum())


@pytest.mark.parametrize("means, variances", [([-20.0, 20.0], [1.0, 1e-6]), ([-30.0, 30.0], [1e-4, 1.0]),
                                              ([-50.0, 0.0, 50.0], [1.0, 1e-6, 1.0])])
def test_entropy_with_a_narrow_component_is_its_closed_form(means, variances):
    """Components 20 or more of the wide one's sds apart overlap by less than exp(-50): the entropy is
    the separated closed form; a component of sd 1e-3 must not fall between quadrature nodes."""
    weights = [1.0] * len(means)
    dist = GaussianMixture(weights, [[m] for m in means], variances)
    assert mixture_entropy_1d(dist) == pytest.approx(separated_entropy(weights, variances), abs=1e-8)


def test_w1_against_a_fresh_reference_and_its_floor():
    """The reference is the first draw from the generator (n_ref points), the floor's true sample the next
    (the samples' size); each distance is scipy's on those draws."""
    dist = GaussianMixture([1.0, 2.0], [[-2.0], [1.0]], [0.5, 0.3])
    samples = dist.sample(300, gen(1), dtype=torch.float64) * 1.2
    got = w1_against(dist, samples, gen(2), n_ref=5000)
    g = gen(2)
    ref, true = dist.sample(5000, g), dist.sample(300, g)
    assert got["w1"] == pytest.approx(wasserstein_distance(samples.numpy().ravel(), ref.numpy().ravel()), rel=1e-12)
    assert got["w1_noise_floor"] == pytest.approx(wasserstein_distance(true.numpy().ravel(), ref.numpy().ravel()),
                                                  rel=1e-12)
    assert got["w1"] > got["w1_noise_floor"]
    g, again = gen(5), gen(5)  # by default the reference has 100,000 points
    w1_against(dist, samples, g)
    dist.sample(100_000, again), dist.sample(300, again)
    assert torch.equal(g.get_state(), again.get_state())


def test_w1_to_the_mixture_where_the_empirical_cdf_meets_f_at_a_sample():
    """Samples {0, 1} of N(0, 1): F(0) = 1/2 = the empirical CDF on [0, 1), so the piece is int_0^1 (F - 1/2);
    the exact W1 by quadrature of |F_n - F|."""
    dist = GaussianMixture([1.0], [[0.0]], [1.0])
    F = norm.cdf
    exact = (quad(F, -40, 0)[0] + quad(lambda v: F(v) - 0.5, 0, 1)[0] + quad(lambda v: 1 - F(v), 1, 40)[0])
    assert w1_to_mixture_1d(dist, torch.tensor([[0.0], [1.0]], dtype=torch.float64)) == pytest.approx(exact,
                                                                                                       rel=1e-10)


def test_component_fractions_in_two_dimensions_and_with_an_empty_component():
    dist = GaussianMixture([1.0, 3.0], [[-10.0, 0.0], [10.0, 0.0]], [0.5, 0.5])
    x = dist.sample(8000, gen(3))
    frac = component_fractions(dist, x)
    assert len(frac) == 2 and abs(frac[0] - 0.25) < 4.5 * math.sqrt(0.25 * 0.75 / 8000)
    assert component_fractions(dist, dist.component(0).sample(50, gen(4))) == [1.0, 0.0]


def test_the_cdf_of_a_scalar_is_a_number():
    dist = GaussianMixture([1.0, 2.0], [[-1.0], [2.0]], [1.0, 0.25])
    expected = norm.cdf(0.3, -1, 1) / 3 + 2 * norm.cdf(0.3, 2, 0.5) / 3
    assert float(mixture_cdf_1d(dist, 0.3)) == pytest.approx(expected, rel=1e-12)


def test_data_that_are_not_1d_are_refused_by_name():
    with pytest.raises(ValueError, match=r"1-D metric needs one feature per sample, got shape \(5, 2\)"):
        w1(torch.zeros(5, 2), torch.zeros(5, 1))
    dist2 = GaussianMixture([1.0], [[0.0, 0.0]], [1.0])
    with pytest.raises(ValueError, match="1-D metric needs a 1-D distribution, got dimension 2"):
        mixture_cdf_1d(dist2, 0.0)

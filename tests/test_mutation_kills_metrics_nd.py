"""Oracles for what the d-dimensional metric tests left open (issue 27, mutation testing of
``evaluation/metrics_nd.py``): the metric table against its parts (sliced W1 and MMD computed one by one
on the same directions and bandwidths, the floors' mean and spread over repeated true samples), the exact
NLL and its standard error by hand, the held-out floor cut to the smaller size, and the refusals."""
import math

import pytest
import torch

from conftest import gen
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.data.toy2d import Checkerboard
from ddpmlab.evaluation.metrics_nd import (BANDWIDTH_MULTIPLES, against_distribution, against_heldout,
                                           median_distance, mmd, nll_under_density, random_directions,
                                           sample_metrics_nd, sliced_w1, w1_1d)

DIST = GaussianMixture([1.0, 2.0], [[-1.0, 0.5], [1.5, -0.5]], [[[0.3, 0.1], [0.1, 0.2]], [[0.4, 0.0], [0.0, 0.3]]])


def test_the_metric_table_is_its_parts_on_shared_directions_and_bandwidths():
    samples = DIST.sample(120, gen(1), dtype=torch.float64) * 1.2
    reference = DIST.sample(400, gen(2), dtype=torch.float64)
    floors = [DIST.sample(120, gen(3 + i), dtype=torch.float64) for i in range(3)]
    got = sample_metrics_nd(samples, reference, floors, gen(9), n_projections=24, max_n_mmd=300)
    dirs = random_directions(2, 24, gen(9))
    bw = [m * median_distance(reference) for m in BANDWIDTH_MULTIPLES]
    sw = [sliced_w1(f, reference, dirs) for f in floors]
    mm = [mmd(f, reference, bw, 300) for f in floors]
    assert got["sliced_w1"] == pytest.approx(sliced_w1(samples, reference, dirs), rel=1e-12)
    assert got["mmd"] == pytest.approx(mmd(samples, reference, bw, 300), rel=1e-9)
    for key, values in (("sliced_w1", sw), ("mmd", mm)):
        v = torch.tensor(values, dtype=torch.float64)
        assert got[f"{key}_noise_floor"] == pytest.approx(float(v.mean()), rel=1e-9)
        assert got[f"{key}_noise_floor_sd"] == pytest.approx(float(v.std()), rel=1e-9)
    assert (got["n"], got["n_floor"], got["floor_repeats"], got["n_reference"], got["n_projections"],
            got["mmd_max_n"]) == (120, 120, 3, 400, 24, 300)
    one = sample_metrics_nd(samples, reference, floors[0], gen(9), n_projections=24, max_n_mmd=300)
    assert one["sliced_w1_noise_floor"] == pytest.approx(sw[0], rel=1e-12) and one["sliced_w1_noise_floor_sd"] == 0.0
    assert one["floor_repeats"] == 1


def test_mmd_uses_the_first_max_n_points_and_a_passed_reference_mean():
    x = DIST.sample(200, gen(4), dtype=torch.float64)
    y = DIST.sample(150, gen(5), dtype=torch.float64) + 0.3
    bw = [0.5, 1.0]
    assert mmd(x, y, bw, max_n=60) == pytest.approx(mmd(x[:60], y[:60], bw), rel=1e-12)
    assert mmd(x, y) == pytest.approx(mmd(x, y, [m * median_distance(y) for m in BANDWIDTH_MULTIPLES]), rel=1e-12)


def test_the_exact_nll_and_its_standard_error_by_hand():
    samples = DIST.sample(500, gen(6), dtype=torch.float64) * 1.1
    true = DIST.sample(700, gen(7), dtype=torch.float64)
    got = nll_under_density(DIST, samples, true)
    for key, x in (("nll_nats", samples), ("nll_nats_floor", true)):
        v = -DIST.log_prob(x)
        assert got[key] == pytest.approx(float(v.mean()), rel=1e-12)
        assert got[key + "_se"] == pytest.approx(float(v.std()) / math.sqrt(len(v)), rel=1e-12)
    assert got["outside_support_fraction"] == 0.0


def test_against_distribution_draws_reference_then_floors_from_the_generator():
    samples = DIST.sample(80, gen(8), dtype=torch.float64)
    got = against_distribution(DIST, samples, gen(10), n_ref=300, n_projections=16, max_n_mmd=200, floor_repeats=2)
    g = gen(10)
    reference = DIST.sample(300, g)
    trues = [DIST.sample(80, g) for _ in range(2)]
    expected = sample_metrics_nd(samples, reference, trues, g, 16, 200)
    expected.update(nll_under_density(DIST, samples, torch.cat(trues)))
    assert got == pytest.approx(expected, rel=1e-12)


def test_against_heldout_cuts_both_to_the_smaller_size_and_keeps_a_size_that_fits():
    x, train, held = (torch.randn(n, 2, generator=gen(i), dtype=torch.float64) for i, n in ((11, 90), (12, 60), (13, 50)))
    got = against_heldout(x, train, held, gen(14), n_projections=8, max_n_mmd=100)
    g = gen(14)
    pick_x = x[torch.randperm(90, generator=g)[:60]]
    expected = sample_metrics_nd(pick_x, held, train, g, 8, 100)
    assert got == pytest.approx(expected, rel=1e-12)


def test_too_few_points_are_refused_by_name():
    with pytest.raises(DDPMLabError, match=r"^a sample metric needs at least 2 points, got shape \(1, 2\)$"):
        sliced_w1(torch.zeros(1, 2), torch.zeros(5, 2))
    with pytest.raises(DDPMLabError, match=r"^samples have 2 and 3 features$"):
        sliced_w1(torch.zeros(5, 2), torch.zeros(5, 3))


def kernel_mean_by_hand(x, y, bandwidths) -> float:
    d2 = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return float(sum(torch.exp(-d2 / (2 * s * s)) for s in bandwidths).mean())


@pytest.mark.parametrize("n, m", [(5, 4), (600, 7)])
def test_mmd_is_its_three_kernel_means(n, m):
    """MMD^2 = mean k(x, x') + mean k(y, y') - 2 mean k(x, y) over all pairs (the V-statistic), by hand; 600
    rows need two chunks of the kernel sums."""
    x = DIST.sample(n, gen(20), dtype=torch.float64)
    y = DIST.sample(m, gen(21), dtype=torch.float64) + 0.4
    bw = [0.3, 1.1]
    mmd2 = kernel_mean_by_hand(x, x, bw) + kernel_mean_by_hand(y, y, bw) - 2 * kernel_mean_by_hand(x, y, bw)
    assert mmd(x, y, bw) == pytest.approx(math.sqrt(mmd2), rel=1e-10)


def test_median_distance_is_the_median_over_distinct_pairs_of_the_first_points():
    x = DIST.sample(41, gen(22), dtype=torch.float64)
    assert median_distance(x) == pytest.approx(float(torch.pdist(x).median()), rel=1e-12)
    assert median_distance(x, max_n=17) == pytest.approx(float(torch.pdist(x[:17]).median()), rel=1e-12)
    big = DIST.sample(2100, gen(23), dtype=torch.float64)
    assert median_distance(big) == pytest.approx(float(torch.pdist(big[:2000]).median()), rel=1e-12)


def test_sliced_w1_draws_its_128_directions_from_the_generator_and_takes_flat_samples():
    x, y = DIST.sample(50, gen(24), dtype=torch.float64), DIST.sample(40, gen(25), dtype=torch.float64)
    assert sliced_w1(x, y, generator=gen(26)) == sliced_w1(x, y, random_directions(2, 128, gen(26)))
    a, b = x[:, 0], y[:2, 0]  # 1-D data: one feature per point; two points are enough
    assert sliced_w1(a, b, generator=gen(27)) == pytest.approx(float(w1_1d(a[:, None], b[:, None])[0]), rel=1e-12)


def test_two_floors_have_a_spread():
    samples, reference = DIST.sample(30, gen(28), dtype=torch.float64), DIST.sample(200, gen(29), dtype=torch.float64)
    floors = [DIST.sample(30, gen(30 + i), dtype=torch.float64) for i in range(2)]
    got = sample_metrics_nd(samples, reference, floors, gen(9), n_projections=8, max_n_mmd=100)
    dirs = random_directions(2, 8, gen(9))
    sw = torch.tensor([sliced_w1(f, reference, dirs) for f in floors], dtype=torch.float64)
    assert got["sliced_w1_noise_floor_sd"] == pytest.approx(float(sw.std()), rel=1e-9) and float(sw.std()) > 0


def test_nll_with_one_or_no_point_inside_the_support():
    """Points where q = 0 are set apart: one point inside has a mean but no standard error, none inside
    has neither."""
    cb = Checkerboard()
    inside = cb.sample(3, gen(31), dtype=torch.float64)
    outside = torch.full((4, 2), 9.0, dtype=torch.float64)  # off the board
    one = nll_under_density(cb, torch.cat([inside[:1], outside]), inside)
    assert one["nll_nats"] == pytest.approx(math.log(8)) and math.isnan(one["nll_nats_se"])
    assert one["outside_support_fraction"] == pytest.approx(0.8)
    two = nll_under_density(cb, torch.cat([inside[:2], outside]), inside)
    assert two["nll_nats_se"] == 0.0  # two equal values: a spread of 0, not unknown
    none = nll_under_density(cb, outside, inside)
    assert math.isnan(none["nll_nats"]) and math.isnan(none["nll_nats_se"]) and none["outside_support_fraction"] == 1.0

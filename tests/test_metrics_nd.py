"""Metrics for d >= 2 against closed forms: sliced W1, MMD, floors, exact NLL, the Frechet distance."""
import math

import numpy as np
import pytest
import torch
from scipy.linalg import sqrtm
from scipy.stats import wasserstein_distance

from conftest import gen
from ddpmlab.data.toy2d import Checkerboard, eight_gaussians
from ddpmlab.evaluation.fid import frechet_distance, frechet_distance_features, gaussian_stats
from ddpmlab.evaluation.metrics_nd import (against_distribution, against_heldout, mmd, nll_under_density,
                                           random_directions, sliced_w1, w1_1d)
from ddpmlab.core.utils import DDPMLabError


@pytest.mark.parametrize("n, m", [(50, 50), (100, 37), (7, 300)])
def test_w1_1d_matches_scipy(n, m):
    a = torch.randn(n, 3, generator=gen(0), dtype=torch.float64)
    b = torch.randn(m, 3, generator=gen(1), dtype=torch.float64) * 2 + 0.3
    ours = w1_1d(a, b)
    for j in range(3):
        assert float(ours[j]) == pytest.approx(wasserstein_distance(a[:, j], b[:, j]), rel=1e-10)


def test_sliced_w1_of_a_translation():
    """Every projection of x + c e1 is the projection of x shifted by c cos(theta): the mean of
    |c cos(theta)| over uniform directions in the plane is 2 c / pi."""
    x = torch.randn(500, 2, generator=gen(0), dtype=torch.float64)
    c = 0.7
    dirs = random_directions(2, 5000, gen(1))
    assert sliced_w1(x, x + torch.tensor([c, 0.0], dtype=torch.float64), dirs) == pytest.approx(2 * c / math.pi, rel=0.02)
    assert sliced_w1(x, x, dirs) == 0.0


def test_sliced_w1_shapes_any_dims():
    x = torch.randn(30, 1, 4, 4, generator=gen(0))
    assert sliced_w1(x, x[:20] + 1, generator=gen(1)) > 0
    with pytest.raises(DDPMLabError):
        sliced_w1(torch.zeros(5, 2), torch.zeros(5, 3))


def test_mmd_zero_for_identical_and_grows_with_shift():
    x = torch.randn(400, 2, generator=gen(0))
    assert mmd(x, x) == pytest.approx(0.0, abs=1e-6)
    small, large = mmd(x + 0.2, x), mmd(x + 1.0, x)
    assert 0 < small < large


def test_floors_against_true_and_shifted_samples():
    dist = eight_gaussians()
    g = gen(3)
    kw = dict(n_ref=10_000, n_projections=32, max_n_mmd=500, floor_repeats=3)
    true = against_distribution(dist, dist.sample(1000, g), g, **kw)
    bad = against_distribution(dist, dist.sample(1000, g) * 1.3, g, **kw)
    assert true["floor_repeats"] == 3 and true["sliced_w1_noise_floor_sd"] > 0
    assert true["sliced_w1"] < 3 * true["sliced_w1_noise_floor"]
    assert bad["sliced_w1"] > 5 * bad["sliced_w1_noise_floor"]
    assert bad["mmd"] > 3 * bad["mmd_noise_floor"]
    # the exact NLL: a true sample scores the entropy, a widened one more
    assert true["nll_nats"] == pytest.approx(true["nll_nats_floor"], abs=5 * true["nll_nats_floor_se"])
    assert bad["nll_nats"] > bad["nll_nats_floor"] + 0.2


def test_checkerboard_density_and_nll():
    cb = Checkerboard()
    x = cb.sample(4000, gen(0))
    lp = cb.log_prob(x)
    assert torch.all(lp == -math.log(8))
    u = torch.rand(20_000, 2, generator=gen(1), dtype=torch.float64) * 4 - 2  # uniform on the board
    inside = torch.isfinite(cb.log_prob(u)).double().mean()
    assert float(inside) == pytest.approx(0.5, abs=0.02)  # half the board is black: density integrates to 1
    r = nll_under_density(cb, u, x)
    assert r["outside_support_fraction"] == pytest.approx(0.5, abs=0.02)
    assert r["nll_nats"] == pytest.approx(math.log(8)) and r["nll_nats_floor"] == pytest.approx(cb.entropy_nats())


def test_against_heldout_uses_equal_sizes():
    x = torch.randn(300, 3, generator=gen(0))
    r = against_heldout(x, torch.randn(100, 3, generator=gen(1)), torch.randn(80, 3, generator=gen(2)), gen(3),
                        n_projections=16)
    assert r["n"] == r["n_floor"] == 100 and r["n_reference"] == 80


def test_frechet_distance_closed_forms():
    mu1, mu2 = torch.tensor([0.0, 1.0], dtype=torch.float64), torch.tensor([2.0, -1.0], dtype=torch.float64)
    s1, s2 = torch.tensor([1.0, 4.0], dtype=torch.float64), torch.tensor([9.0, 0.25], dtype=torch.float64)
    # diagonal covariances: sum of (mu1 - mu2)^2 + (sqrt s1 - sqrt s2)^2
    expect = float((mu1 - mu2).square().sum() + (s1.sqrt() - s2.sqrt()).square().sum())
    assert frechet_distance(mu1, torch.diag(s1), mu2, torch.diag(s2)) == pytest.approx(expect, rel=1e-10)
    # full covariances against scipy's matrix square root
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 5)), rng.normal(size=(5, 5))
    c1, c2 = a @ a.T + 0.1 * np.eye(5), b @ b.T + 0.1 * np.eye(5)
    ref = np.trace(c1 + c2 - 2 * sqrtm(c1 @ c2).real)
    z = torch.zeros(5, dtype=torch.float64)
    assert frechet_distance(z, torch.tensor(c1), z, torch.tensor(c2)) == pytest.approx(ref, rel=1e-8)


def test_frechet_distance_of_features():
    f = torch.randn(200, 4, generator=gen(0), dtype=torch.float64)
    assert frechet_distance_features(f, f) == pytest.approx(0.0, abs=1e-8)
    mu, cov = gaussian_stats(f + 1)
    assert mu.shape == (4,) and cov.shape == (4, 4)
    assert frechet_distance_features(f, f + 1) == pytest.approx(4.0, rel=1e-6)
    with pytest.raises(DDPMLabError):
        gaussian_stats(torch.zeros(1, 4))

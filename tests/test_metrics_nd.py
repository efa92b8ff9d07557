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
from ddpmlab.evaluation.metrics_nd import (against_distribution, against_heldout, median_distance, mmd,
                                           nll_under_density, random_directions, sliced_w1, w1_1d)
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


def gaussian_kernel_mean(cov, diff, s: float) -> float:
    """E exp(-|Z|^2 / (2 s^2)) for Z ~ N(diff, cov):
    det(I + cov / s^2)^(-1/2) exp(-diff^T (cov + s^2 I)^-1 diff / 2)."""
    eye = torch.eye(len(diff), dtype=torch.float64)
    quad = diff @ torch.linalg.solve(cov + s ** 2 * eye, diff)
    return float(torch.det(eye + cov / s ** 2) ** -0.5 * torch.exp(-0.5 * quad))


def test_mmd_of_two_gaussians_has_its_closed_form():
    """X ~ N(m1, S1), Y ~ N(m2, S2): with k = sum_s exp(-|x - y|^2 / (2 s^2)), E k(X, X') = sum_s
    det(I + 2 S1 / s^2)^(-1/2), E k(X, Y) the same at X - Y ~ N(m1 - m2, S1 + S2); the biased (V) estimate
    on n and m points has mean  B / n + (1 - 1 / n) E k(X, X') + B / m + (1 - 1 / m) E k(Y, Y') - 2 E k(X, Y)
    (B kernels: each diagonal term is 1). Eight draws match it within 4 standard errors."""
    l1 = torch.tensor([[1.0, 0.0], [0.5, 0.7]], dtype=torch.float64)
    l2 = torch.tensor([[0.6, 0.0], [-0.3, 1.2]], dtype=torch.float64)
    m1, m2 = torch.tensor([0.0, 0.0], dtype=torch.float64), torch.tensor([0.8, -0.4], dtype=torch.float64)
    s1, s2, zero = l1 @ l1.T, l2 @ l2.T, torch.zeros(2, dtype=torch.float64)
    bw, n, m = [0.2, 0.4], 1000, 800  # narrow kernels: the mean of each depends strongly on its width
    kxx, kyy = (sum(gaussian_kernel_mean(2 * c, zero, s) for s in bw) for c in (s1, s2))
    kxy = sum(gaussian_kernel_mean(s1 + s2, m1 - m2, s) for s in bw)
    expected = len(bw) / n + (1 - 1 / n) * kxx + len(bw) / m + (1 - 1 / m) * kyy - 2 * kxy
    g = gen(0)
    draws = torch.tensor([mmd(m1 + torch.randn(n, 2, generator=g, dtype=torch.float64) @ l1.T,
                              m2 + torch.randn(m, 2, generator=g, dtype=torch.float64) @ l2.T, bw) ** 2
                          for _ in range(8)])
    assert abs(float(draws.mean()) - expected) < 4 * float(draws.std()) / math.sqrt(8), (draws, expected)
    x = torch.randn(400, 2, generator=gen(1))
    assert mmd(x, x) == pytest.approx(0.0, abs=1e-6)


def test_median_distance_of_a_gaussian_sample():
    """|X - X'|^2 / (2 s^2) ~ chi^2_2 for X, X' ~ N(0, s^2 I) in the plane: the median distance is 2 s sqrt(log 2)
    (the default MMD bandwidths are multiples of it)."""
    x = torch.randn(2000, 2, generator=gen(2), dtype=torch.float64) * 1.5
    assert median_distance(x) == pytest.approx(2 * 1.5 * math.sqrt(math.log(2)), rel=0.04)


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

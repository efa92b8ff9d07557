"""Oracles for ``core/paths.py`` (issue 27, mutation testing): the VP path's alpha, sigma and their
derivatives against the continuous schedule and central differences, the conditional velocities in
closed form, and the shifted grid (Esser et al. 2024, eq. 23) by hand, with its refusals."""
import math

import pytest
import torch

from conftest import gen
from ddpmlab.core.continuous import ContinuousSchedule
from ddpmlab.core.paths import LinearPath, VPPath, shifted_grid
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError

TIMES = (0.063, 0.31, 0.512, 0.77, 0.96)  # off the knots k / 40, where beta(s) has a kink


@pytest.fixture(scope="module")
def vp():
    return VPPath(ContinuousSchedule(make_schedule("linear", 40, beta_start=1e-3, beta_end=0.2)))


def test_vp_alpha_and_sigma_are_the_roots_of_alpha_bar(vp):
    for t in TIMES:
        abar = vp.cont.alpha_bar(t)
        assert 0 < abar < 1
        assert vp.alpha(t) == pytest.approx(math.sqrt(abar), rel=1e-14)
        assert vp.sigma(t) == pytest.approx(math.sqrt(1 - abar), rel=1e-14)


def test_vp_derivatives_are_central_differences(vp):
    h = 1e-6
    for t in TIMES:
        d_alpha = (vp.alpha(t + h) - vp.alpha(t - h)) / (2 * h)
        d_sigma = (vp.sigma(t + h) - vp.sigma(t - h)) / (2 * h)
        assert vp.d_alpha(t) == pytest.approx(d_alpha, rel=1e-6)
        assert vp.d_sigma(t) == pytest.approx(d_sigma, rel=1e-6)
        assert vp.d_alpha(t) < 0 < vp.d_sigma(t)


def test_conditional_velocities_are_alpha_prime_x0_plus_sigma_prime_eps(vp):
    x0 = torch.randn(6, 2, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(6, 2, generator=gen(1), dtype=torch.float64)
    for t in TIMES:
        expect = vp.d_alpha(t) * x0 + vp.d_sigma(t) * eps
        torch.testing.assert_close(vp.velocity(x0, eps, t), expect, rtol=1e-14, atol=1e-14)
        # d/dt (alpha x0 + sigma eps) by central differences
        h = 1e-6
        fd = ((vp.alpha(t + h) - vp.alpha(t - h)) * x0 + (vp.sigma(t + h) - vp.sigma(t - h)) * eps) / (2 * h)
        torch.testing.assert_close(vp.velocity(x0, eps, t), fd, rtol=1e-5, atol=1e-6)
    lin = LinearPath()
    tb = torch.full((6, 1), 0.4, dtype=torch.float64)
    torch.testing.assert_close(lin.velocity(x0, eps, tb), lin.d_alpha(tb) * x0 + lin.d_sigma(tb) * eps)
    torch.testing.assert_close(lin.velocity(x0, eps, tb), eps - x0)


def test_shifted_grid_by_hand():
    assert shifted_grid(4) == pytest.approx([1.0, 0.75, 0.5, 0.25, 0.0], abs=1e-15)
    # shift 3: t = 3u / (1 + 2u)
    assert shifted_grid(2, 3.0) == pytest.approx([1.0, 1.5 / 2.0, 0.0], abs=1e-15)
    # t_end: the uniform u mapped onto [t_end, 1]
    assert shifted_grid(2, 1.0, t_end=0.2) == pytest.approx([1.0, 0.6, 0.2], abs=1e-15)
    assert shifted_grid(2, 3.0, t_end=0.2) == pytest.approx([1.0, 0.2 + 0.8 * 0.75, 0.2], abs=1e-15)


@pytest.mark.parametrize("steps, shift, needle", [(0, 1.0, "at least 1 step, got 0"),
                                                  (3, 0.0, "time shift must be > 0, got 0.0"),
                                                  (3, -1.0, "time shift must be > 0, got -1.0"),
                                                  (3, float("nan"), "time shift must be > 0, got nan")])
def test_shifted_grid_refusals(steps, shift, needle):
    with pytest.raises(DDPMLabError, match=needle):
        shifted_grid(steps, shift)

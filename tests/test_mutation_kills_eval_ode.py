"""Oracles for ``evaluation/ode.py`` (issue 27, mutation testing): the instantaneous change of variables on
a linear field v(x, t) = (1/2 + t) A x, whose flow from 0 to 1 is x(1) = expm(A) x(0) with divergence
integral trace(A), so that log p(x) = log N(expm(A) x; 0, I) + trace(A) in closed form; Hutchinson's
estimate against the same probe by hand; the summary statistics; the refusals."""
import math

import numpy as np
import pytest
import torch
from scipy.linalg import expm

from conftest import gen
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.evaluation.ode import _drift_and_divergence, ode_log_likelihood

A2 = torch.tensor([[-0.4, 0.7], [-0.2, 0.3]], dtype=torch.float64)
A3 = torch.tensor([[-0.4, 0.7, 0.1], [-0.2, 0.3, 0.5], [0.6, -0.1, -0.8]], dtype=torch.float64)


def _field(a):
    def v(x, t):
        return (0.5 + t) * x.reshape(x.shape[0], -1) @ a.T

    return v


def _closed_form(a, x0):
    """log N(expm(A) x0; 0, I) + trace(A) per example, and x(1)."""
    x1 = x0 @ torch.from_numpy(expm(a.numpy())).T
    return -0.5 * (x1.square().sum(1) + a.shape[0] * math.log(2 * math.pi)) + float(a.trace()), x1


def test_exact_divergence_gives_the_closed_form_and_its_summary():
    x0 = torch.randn(7, 2, generator=gen(0), dtype=torch.float64)
    res = ode_log_likelihood(None, x0, velocity=_field(A2))
    ll, x1 = _closed_form(A2, x0)
    torch.testing.assert_close(res["log_likelihood"], ll, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res["x_T"], x1, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(res["prior_log_prob"], ll - float(A2.trace()), rtol=1e-5, atol=1e-5)
    nll = -res["log_likelihood"]
    assert res["nll_nats"] == pytest.approx(float(nll.mean()), rel=1e-14)
    assert res["nll_nats_se"] == pytest.approx(float(nll.std()) / math.sqrt(7), rel=1e-12)
    assert res["nll_nats_median"] == pytest.approx(float(nll.median()), rel=1e-14)
    assert res["nll_bpd"] == pytest.approx(res["nll_nats"] / (2 * math.log(2)), rel=1e-14)
    assert res["nfe"] > 10 and res["log_likelihood"].dtype == torch.float64


def test_the_tolerance_holds_for_every_example():
    """rtol = atol = 1e-7 per example: every log-likelihood within 2e-7 of the closed form (2.5e-8 seen;
    the tolerances not divided by sqrt(B (d + 1)) give 8e-7 or more)."""
    x0 = torch.randn(40, 2, generator=gen(1), dtype=torch.float64)
    res = ode_log_likelihood(None, x0, velocity=_field(A2), rtol=1e-7, atol=1e-7)
    err = (res["log_likelihood"] - _closed_form(A2, x0)[0]).abs().max().item()
    assert err < 2e-7, err
    loose = ode_log_likelihood(None, x0, velocity=_field(A2), rtol=1e-3, atol=1e-3)
    assert loose["nfe"] < res["nfe"]


def test_hutchinson_with_the_same_probe_by_hand():
    """One Rademacher probe u per example, fixed along the path: the divergence integral is u^T A u."""
    x0 = torch.randn(6, 3, generator=gen(2), dtype=torch.float64)
    res = ode_log_likelihood(None, x0, velocity=_field(A3), generator=gen(3))  # d = 3 > 2: Hutchinson
    u = torch.randint(0, 2, x0.shape, generator=gen(3)).double() * 2 - 1
    ll, _ = _closed_form(A3, x0)
    by_hand = ll - float(A3.trace()) + ((u @ A3.T) * u).sum(1)
    torch.testing.assert_close(res["log_likelihood"], by_hand, rtol=1e-5, atol=1e-5)
    exact = ode_log_likelihood(None, x0, velocity=_field(A3), divergence="exact")
    torch.testing.assert_close(exact["log_likelihood"], ll, rtol=1e-5, atol=1e-5)
    assert float((res["log_likelihood"] - exact["log_likelihood"]).abs().max()) > 0.1


def test_a_callable_prior_and_one_example():
    x0 = torch.randn(1, 2, generator=gen(4), dtype=torch.float64)
    res = ode_log_likelihood(None, x0, prior=lambda x: torch.full((x.shape[0],), 2.5, dtype=torch.float64),
                             velocity=_field(A2))
    assert float(res["log_likelihood"][0]) == pytest.approx(2.5 + float(A2.trace()), abs=1e-5)
    assert math.isnan(res["nll_nats_se"])
    two = ode_log_likelihood(None, torch.cat([x0, 2 * x0]), velocity=_field(A2))
    assert two["nll_nats_se"] == pytest.approx(float(two["log_likelihood"].std()) / math.sqrt(2), rel=1e-12)


def test_refusals_and_the_evaluation_cap():
    x0 = torch.randn(3, 2, generator=gen(5), dtype=torch.float64)
    v = _field(A2)
    with pytest.raises(DDPMLabError, match="divergence must be 'exact' or 'hutchinson', got 'trace'"):
        ode_log_likelihood(None, x0, divergence="trace", velocity=v)
    with pytest.raises(DDPMLabError, match="prior must be 'normal', 'exact' or a log-density, got 'flat'"):
        ode_log_likelihood(None, x0, prior="flat", velocity=v)
    with pytest.raises(DDPMLabError, match=r"^the exact prior q\(x_T\) needs the oracle \(a model with q_log_prob\)$"):
        ode_log_likelihood(None, x0, prior="exact", velocity=v)
    with pytest.raises(DDPMLabError, match="no solution within 5 evaluations") as exc:
        ode_log_likelihood(None, x0, velocity=v, max_nfe=5)
    assert exc.value.__cause__ is None and exc.value.__suppress_context__
    capped = ode_log_likelihood(None, x0, velocity=v, max_nfe=10_000)
    assert capped["nfe"] == ode_log_likelihood(None, x0, velocity=v)["nfe"] <= 10_000


def test_a_flow_that_blows_up_is_refused_in_one_line():
    """dx/dt = x^2 from x = 4 reaches infinity at t = 1/4: the solver gives up."""
    x0 = torch.full((2, 1), 4.0, dtype=torch.float64)
    with pytest.raises(DDPMLabError, match="probability-flow ODE integration failed: ") as exc:
        ode_log_likelihood(None, x0, velocity=lambda x, t: x.square())
    assert "\n" not in str(exc.value)


def test_the_threads_are_restored():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    x0 = torch.randn(2, 2, generator=gen(6), dtype=torch.float64)
    seen = []

    def v(x, t):
        seen.append(torch.get_num_threads())
        return _field(A2)(x, t)

    try:
        ode_log_likelihood(None, x0, velocity=v)  # the default: one thread
        assert set(seen) == {1} and torch.get_num_threads() == 2
        seen.clear()
        ode_log_likelihood(None, x0, velocity=v, threads=1)
        assert set(seen) == {1} and torch.get_num_threads() == 2
        seen.clear()
        assert np.isfinite(ode_log_likelihood(None, x0, velocity=v, threads=None)["nll_nats"])
        assert set(seen) == {2}
    finally:
        torch.set_num_threads(before)


def test_the_exact_divergence_is_float64_to_rounding():
    """The trace of (1/2 + s) A at one time, per example, to float64 rounding (no float32 accumulator)."""
    x = torch.randn(4, 3, generator=gen(7), dtype=torch.float64)
    f, div = _drift_and_divergence(_field(A3 / 3), x, 0.3, None)
    assert div.dtype == torch.float64
    torch.testing.assert_close(div, torch.full((4,), 0.8 * float(A3.trace()) / 3, dtype=torch.float64),
                               rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(f, _field(A3 / 3)(x, 0.3), rtol=0, atol=0)


def test_nfe_counts_the_evaluations_and_the_cap_allows_exactly_that_many():
    calls = []

    def v(x, t):
        calls.append(t)
        return _field(A2)(x, t)

    x0 = torch.randn(3, 2, generator=gen(8), dtype=torch.float64)
    res = ode_log_likelihood(None, x0, velocity=v)
    assert res["nfe"] == len(calls) > 0
    n = len(calls)
    calls.clear()
    assert ode_log_likelihood(None, x0, velocity=v, max_nfe=n)["nfe"] == n == len(calls)
    with pytest.raises(DDPMLabError, match=f"^probability-flow ODE: no solution within {n - 1} evaluations "
                                           r"\(the model's flow is far from a diffusion's\)$"):
        ode_log_likelihood(None, x0, velocity=v, max_nfe=n - 1)

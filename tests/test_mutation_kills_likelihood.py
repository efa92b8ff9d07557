"""Oracles for what the bound tests left open (issue 27, mutation testing of ``evaluation/likelihood.py``):
``evaluate_bound`` in batches against a hand loop over ``vlb_terms`` on the same generator stream (every
term, its standard error, bits per dimension), the per-step table against the summed terms, and one
data point (no standard error)."""
import math

import pytest
import torch

from conftest import gen
from ddpmlab.core.diffusion import q_sample, q_sample_steps
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.gaussian import step_term_nats
from ddpmlab.core.schedule import make_schedule
from ddpmlab.evaluation.likelihood import TERMS, evaluate_bound, reverse_step, vlb_terms, vlb_terms_by_step
from ddpmlab.models.oracle import MixtureOracle

DIST = GaussianMixture([1.0, 2.0], [[-1.0, 0.5], [1.5, -0.5]], [[[0.3, 0.1], [0.1, 0.2]], [[0.4, 0.0], [0.0, 0.3]]])


@pytest.fixture(scope="module")
def oracle():
    return MixtureOracle(DIST, make_schedule("linear", 12, beta_start=1e-2, beta_end=0.4))


def sample_x0(m, g):
    return DIST.sample(m, g, dtype=torch.float64)


def test_the_bound_in_batches_is_a_hand_loop_over_vlb_terms(oracle):
    got = evaluate_bound(oracle, sample_x0, 7, gen(1), batch=3)
    g, parts = gen(1), []
    for m in (3, 3, 1):  # 7 points in batches of at most 3
        parts.append(vlb_terms(oracle, sample_x0(m, g), g))
    for key in TERMS + ("total_nats",):
        v = torch.cat([p[key] for p in parts])
        assert got[key] == pytest.approx(float(v.mean()), rel=1e-12)
        assert got[key + "_se"] == pytest.approx(float(v.std()) / math.sqrt(7), rel=1e-12)
    assert got["total_bpd"] == pytest.approx(got["total_nats"] / (2 * math.log(2)), rel=1e-12)
    assert got["total_bpd_se"] == pytest.approx(got["total_nats_se"] / (2 * math.log(2)), rel=1e-12)
    assert got["n"] == 7


def test_one_point_has_no_standard_error_and_two_have_one(oracle):
    got = evaluate_bound(oracle, sample_x0, 1, gen(2))
    assert math.isfinite(got["total_nats"]) and math.isnan(got["total_nats_se"]) and got["n"] == 1
    assert math.isfinite(evaluate_bound(oracle, sample_x0, 2, gen(2))["total_nats_se"])


def test_the_per_step_table_sums_to_the_terms(oracle):
    x0 = sample_x0(5, gen(3))
    by_step = vlb_terms_by_step(oracle, x0, gen(4), max_rows=10)  # chunks of two steps
    terms = vlb_terms(oracle, x0, gen(4), max_rows=10)
    assert by_step["step_nats"].shape == (12, 5)
    torch.testing.assert_close(terms["decoder_nats"], by_step["step_nats"][0], rtol=0, atol=0)
    torch.testing.assert_close(terms["steps_nats"], by_step["step_nats"][1:].sum(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(terms["total_nats"], terms["prior_nats"] + terms["steps_nats"] + terms["decoder_nats"],
                               rtol=1e-12, atol=1e-12)



def test_the_decoders_x1_is_drawn_in_float64_after_the_steps(oracle):
    """The step terms' x_t come first from the generator (``q_sample_steps``), then x_1's float64 noise."""
    x0 = sample_x0(5, gen(7))
    g = gen(8)
    for _ in q_sample_steps(oracle.schedule, x0, 2, 10, g):
        pass
    t1 = torch.ones(5, dtype=torch.long)
    x1 = q_sample(oracle.schedule, x0, t1, torch.randn(x0.shape, generator=g, dtype=torch.float64))
    decoder = step_term_nats(oracle.schedule, x0, x1, t1, *reverse_step(oracle, x1, t1))
    torch.testing.assert_close(vlb_terms_by_step(oracle, x0, gen(8), max_rows=10)["step_nats"][0], decoder,
                               rtol=1e-12, atol=1e-12)

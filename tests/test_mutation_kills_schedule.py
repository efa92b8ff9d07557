"""Oracles for what the schedule tests left open (issue 27, mutation testing of ``core/schedule.py``):
the bounds of every refusal and what its message names, float64 from a plain list, the point-mass
posterior at t = 1 even where 1 - abar_1 rounds to 0, the clipped log-variance at T = 2, the network
time of a continuous step, respacing by a list of kept steps, and the recorded ``spec``."""
import math

import pytest
import torch

from ddpmlab.core.schedule import NoiseSchedule, make_betas, make_schedule
from ddpmlab.core.utils import DDPMLabError


def refused(call, *named: str) -> None:
    """``call()`` raises DDPMLabError whose message names every string of ``named``."""
    with pytest.raises(DDPMLabError) as err:
        call()
    for word in named:
        assert word in str(err.value), (word, str(err.value))


@pytest.mark.parametrize("beta", [0.0, 1.0, 1.5, -0.1])
def test_constant_beta_outside_the_open_unit_interval_is_refused_by_name(beta):
    refused(lambda: make_betas("constant", 10, beta=beta), "(0, 1)", str(beta))


@pytest.mark.parametrize("start, end", [(0.0, 0.02), (1.0, 0.02), (1.5, 0.02), (1e-4, 0.0), (1e-4, 1.0),
                                        (1e-4, 1.5)])
def test_each_linear_end_is_checked_on_its_own(start, end):
    """One bad end is enough, whichever it is and however the other end is."""
    refused(lambda: make_betas("linear", 10, beta_start=start, beta_end=end), "(0, 1)", str(start), str(end))


def test_the_other_refusals_say_what_is_wrong():
    s = make_schedule("linear", 20, beta_start=1e-3, beta_end=0.2)
    refused(lambda: make_betas("constant", 0), "got 0")
    for betas, message in ((torch.zeros(0), "a schedule needs at least one step"),
                           ([0.0, 0.1], "every beta must lie in (0, 1)")):  # 0 is outside
        with pytest.raises(DDPMLabError) as err:
            NoiseSchedule(betas)
        assert str(err.value) == message
    refused(lambda: s.spaced_steps(21), "1..20", "got 21")
    for keep in ([], [0, 5, 20], [3, 5, 19]):  # empty, a step below 1, the last step missing
        refused(lambda: s.respace(keep), "1..20", "include 20")


def test_a_plain_list_of_betas_is_taken_in_float64():
    """0.1 is not a float32 number: a list must not pass through float32 on its way in."""
    s = NoiseSchedule([0.1, 0.2, 0.3])
    assert s.betas.dtype == torch.float64
    assert s.betas[1:].tolist() == [0.1, 0.2, 0.3]
    assert s.spec is None  # only make_schedule records how it was made


def test_the_posterior_at_t1_is_a_point_mass_even_where_one_minus_abar_rounds_to_zero():
    """beta_1 = 1e-17 leaves abar_1 = 1 in float64: q(x_0 | x_1, x_0) is still the point mass at x_0
    (coef1 = 1, coef2 = 0, variance 0), as it is for any schedule (coef1_1 = beta_1 / (1 - abar_1) = 1)."""
    for s in (NoiseSchedule([1e-17, 0.1, 0.2]), make_schedule("linear", 10, beta_start=1e-3, beta_end=0.2)):
        assert math.isclose(float(s.posterior_mean_coef1[1]), 1.0, rel_tol=1e-12)
        assert float(s.posterior_mean_coef2[1]) == 0.0 and float(s.posterior_variance[1]) == 0.0
        assert torch.isfinite(s.posterior_mean_coef1).all() and torch.isfinite(s.posterior_variance).all()


@pytest.mark.parametrize("T", [2, 3])
def test_the_clipped_log_variance_at_t1_is_beta_tilde_2(T):
    """improved-diffusion's clipping: log beta-tilde_2 stands in for log beta-tilde_1 = log 0, from T = 2 on."""
    s = NoiseSchedule(torch.linspace(0.1, 0.3, T, dtype=torch.float64))
    beta_tilde_2 = (1 - float(s.alphas_cumprod[1])) / (1 - float(s.alphas_cumprod[2])) * float(s.betas[2])
    assert math.isclose(float(s.posterior_log_variance_clipped[1]), math.log(beta_tilde_2), rel_tol=1e-12)
    assert math.isclose(float(s.posterior_log_variance_clipped[2]), math.log(beta_tilde_2), rel_tol=1e-12)


def test_a_continuous_step_has_the_network_time_of_the_step_it_falls_on():
    """model_time(float t) is t / T of the original schedule's time, on a respaced schedule too: a float
    step that is a whole number lands where the integer step does (the kept steps are every 10th here)."""
    s = make_schedule("linear", 100)
    r = s.spaced(10)
    assert r.timesteps.tolist() == list(range(0, 101, 10))
    for sched in (s, r):
        ints = torch.arange(1, sched.T + 1)
        assert torch.allclose(sched.model_time(ints.double()), sched.model_time(ints), rtol=1e-6)
        assert torch.allclose(sched.model_time(torch.tensor([0.5])), torch.tensor([0.5 / sched.T]), rtol=1e-6)
    part = NoiseSchedule([0.1, 0.2], timesteps=torch.tensor([0, 5, 10]), num_train_steps=20)  # 10 of 20 steps
    assert torch.allclose(part.model_time(torch.tensor([1.0, 2.0])), torch.tensor([0.25, 0.5]))
    assert torch.allclose(part.model_time(torch.tensor([1, 2])), torch.tensor([0.25, 0.5]))


def test_spaced_by_a_list_of_kept_steps_respaces_on_them_in_any_order():
    s = make_schedule("linear", 30, beta_start=1e-3, beta_end=0.2)
    assert s.spaced(list(range(1, 31))) is s and s.spaced(tuple(range(30, 0, -1))) is s
    r = s.spaced([30, 4, 17])
    assert r.T == 3 and r.timesteps.tolist() == [0, 4, 17, 30]
    assert torch.allclose(r.alphas_cumprod, s.alphas_cumprod[[0, 4, 17, 30]], rtol=1e-12)


@pytest.mark.parametrize("kind, options", [("linear", dict(beta_start=4e-4, beta_end=0.08)), ("constant", {}),
                                           ("cosine", dict(cosine_s=0.01))])
def test_the_recorded_spec_rebuilds_the_same_schedule(kind, options):
    s = make_schedule(kind, 40, **options)
    spec = dict(s.spec)
    again = make_schedule(spec.pop("kind"), spec.pop("steps"), **spec)
    assert torch.equal(again.betas, s.betas) and again.spec == s.spec

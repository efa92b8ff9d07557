"""Oracles for ``sampling/ode.py`` (issue 27, mutation testing): DPM-Solver++(2M) against a plain loop of
Lu et al.'s Algorithm 2 written out by hand (half log-SNR, the extrapolated x_0, the exponential
integrator step), its callback, the family's default solver and the refusals."""
import math

import pytest
import torch

from conftest import gen
from ddpmlab.core.distributions import GaussianMixture, seed_mixture
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError, NonFiniteError
from ddpmlab.models.conditional_oracle import LabelledMixtureOracle
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.sampling.api import sample
from ddpmlab.sampling.ode import dpm_solver_2m, ode_sample


@pytest.fixture(scope="module")
def oracle():
    return MixtureOracle(seed_mixture(), make_schedule("linear", 60, beta_start=1e-3, beta_end=0.1))


def _plain_dpm_solver(model, x, steps):
    """Algorithm 2 of DPM-Solver++ (2M), one step at a time, in float64, from the model's x_0 predictions."""
    abar = [float(a) for a in model.schedule.alphas_cumprod]
    lam = lambda t: math.log(math.sqrt(abar[t]) / math.sqrt(1 - abar[t]))  # noqa: E731
    history = []  # (x_0 prediction, h) of the earlier steps
    for t, s in zip(steps[:-1], steps[1:]):
        x0 = model.p_mean_variance(x, torch.full((x.shape[0],), t)).pred_x0.double()
        if s == 0:
            return x0
        h = lam(s) - lam(t)
        if not history:
            d = x0
        else:
            r = history[-1][1] / h
            d = (1 + 1 / (2 * r)) * x0 - 1 / (2 * r) * history[-1][0]
        sig_s, sig_t = math.sqrt(1 - abar[s]), math.sqrt(1 - abar[t])
        x = sig_s / sig_t * x - math.sqrt(abar[s]) * (math.exp(-h) - 1) * d
        history.append((x0, h))
    return x


def test_dpm_solver_is_algorithm_2_by_hand(oracle):
    steps = [60, 41, 25, 12, 5, 0]  # uneven: r differs from step to step
    x_T = torch.randn(30, 1, generator=gen(0), dtype=torch.float64)
    got = dpm_solver_2m(oracle, x_T, torch.tensor(steps))
    torch.testing.assert_close(got, _plain_dpm_solver(oracle, x_T, steps), rtol=1e-10, atol=1e-10)


def test_the_callback_sees_every_step(oracle):
    steps = torch.tensor([60, 30, 10, 0])
    seen = []
    x_T = torch.randn(5, 1, generator=gen(1), dtype=torch.float64)
    out = dpm_solver_2m(oracle, x_T, steps, callback=lambda i, s, x: seen.append((i, s, x.clone())))
    assert [(i, s) for i, s, _ in seen] == [(0, 30), (1, 10), (2, 0)]
    torch.testing.assert_close(seen[0][2], _plain_dpm_solver(oracle, x_T, [60, 30]))
    assert torch.equal(seen[-1][2], out)


def test_the_default_solver_is_dpm_solver_and_options_reach_the_solver(oracle):
    x = torch.randn(20, 1, generator=gen(2), dtype=torch.float64)
    grid = torch.tensor([60, 40, 20, 0])
    torch.testing.assert_close(ode_sample(oracle, x, grid), dpm_solver_2m(oracle, x, grid), rtol=0, atol=0)
    loose = ode_sample(oracle, x, grid, solver="rk45", rtol=1e-2, atol=1e-2)
    tight = ode_sample(oracle, x, grid, solver="rk45", rtol=1e-8, atol=1e-8)
    assert float((loose - tight).abs().max()) > 1e-7


def test_refusals_name_the_solver_and_the_option(oracle):
    with pytest.raises(DDPMLabError, match="^ODE solver 'dpm_solver' takes no option atol, rtol$"):
        sample(oracle, 4, "ode", steps=5, solver="dpm_solver", rtol=1e-3, atol=1e-3)


class _NaNOracle(MixtureOracle):
    def p_mean_variance(self, x_t, t, cond=None):
        p = super().p_mean_variance(x_t, t, cond)
        return p._replace(pred_x0=torch.full_like(p.pred_x0, float("nan")))


def test_a_nan_step_is_stopped_and_named():
    bad = _NaNOracle(seed_mixture(), make_schedule("linear", 20))
    with pytest.raises(NonFiniteError, match=r"^ode \(dpm_solver\) sampler: non-finite values \(NaN or inf\) at step "
                                             r"t = 20; "):
        dpm_solver_2m(bad, torch.zeros(3, 1, dtype=torch.float64), torch.tensor([20, 10, 0]))


def test_the_condition_reaches_every_step():
    """Labels c: each example follows the flow of its own class's oracle (component c alone)."""
    dist = GaussianMixture([0.5, 0.5], [[-2.0], [2.0]], [0.3, 0.6])
    sched = make_schedule("linear", 40, beta_start=1e-3, beta_end=0.2)
    labelled = LabelledMixtureOracle(dist, sched)
    x = torch.randn(6, 1, generator=gen(5), dtype=torch.float64)
    grid = torch.tensor([40, 25, 10, 0])
    cond = torch.tensor([0, 1, 0, 1, 1, 0])
    for out in (dpm_solver_2m(labelled, x, grid, cond=cond), ode_sample(labelled, x, grid, cond=cond)):
        for c in (0, 1):
            ref = dpm_solver_2m(MixtureOracle(dist.component(c), sched), x[cond == c], grid)
            torch.testing.assert_close(out[cond == c], ref, rtol=1e-12, atol=1e-12)


def test_a_solver_of_another_family_is_refused_naming_those_that_serve():
    flow = FlowMixtureOracle(seed_mixture())
    grid = torch.tensor([1.0, 0.5, 0.0], dtype=torch.float64)
    with pytest.raises(DDPMLabError, match=r"^ODE solver = 'dpm_solver' does not serve a flow model \(.*\); use ODE "
                                           r"solver = '\w+'( or '\w+')*$"):
        ode_sample(flow, torch.zeros(2, 1), grid, solver="dpm_solver")
    assert ode_sample(flow, torch.zeros(2, 1), grid).shape == (2, 1)  # a flow's default: one of its own
    with pytest.raises(DDPMLabError, match="^ODE solver 'heun' takes no option rtol$"):
        ode_sample(flow, torch.zeros(2, 1), grid, solver="heun", rtol=1e-3)
    tight = ode_sample(flow, torch.ones(2, 1), grid, solver="rk45", rtol=1e-9, atol=1e-9)
    loose = ode_sample(flow, torch.ones(2, 1), grid, solver="rk45", rtol=1e-1, atol=1e-1)
    assert float((tight - loose).abs().max()) > 1e-6

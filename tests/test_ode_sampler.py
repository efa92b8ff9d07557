"""The ODE sampler's solvers against closed forms: for Gaussian data the probability-flow ODE is the
linear map x_0 = m + S (x_T - sqrt(abar_T) m) / r_T; DPM-Solver++(2M) is second order and its first
steps are DDIM's."""
import math

import pytest
import torch

from ddpmlab.core.distributions import GaussianMixture, seed_mixture
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.sampling.api import draw_samples, sample
from ddpmlab.sampling.ode import dpm_solver_2m
from ddpmlab.sampling.samplers import ddim_step
from conftest import gen

M, S = 2.0, 0.5


def _x0_eps(model, x_t, t):
    """x_0 and eps the model's reverse step implies (the contract's pred_x0, pred_eps)."""
    p = model.p_mean_variance(x_t, t)
    return p.pred_x0, p.pred_eps


def _gaussian_oracle(T=100):
    sched = make_schedule("linear", T, beta_start=1e-3, beta_end=0.1)
    return MixtureOracle(GaussianMixture([1.0], [[M]], [S * S]), sched)


def _exact_flow(oracle, x_T, t_min):
    """Along the Gaussian flow x_t = sqrt(abar_t) m + r_t z, z = (x_T - sqrt(abar_T) m) / r_T, with
    r_t^2 = abar_t S^2 + 1 - abar_t; the sampler ends with E[x_0 | x_{t_min}] = m + sqrt(abar) S^2 z / r."""
    ab_T, ab = oracle.schedule.alphas_cumprod[-1].item(), oracle.schedule.alphas_cumprod[t_min].item()
    z = (x_T - math.sqrt(ab_T) * M) / math.sqrt(ab_T * S * S + 1 - ab_T)
    return M + math.sqrt(ab) * S * S * z / math.sqrt(ab * S * S + 1 - ab)


@pytest.mark.parametrize("solver, steps, tol", [("dpm_solver", 25, 1e-2), ("dpm_solver", 100, 2e-3),
                                                ("heun", 50, 2e-3), ("rk45", 100, 3e-4)])
def test_solvers_follow_the_gaussian_flow(solver, steps, tol):
    oracle = _gaussian_oracle()
    x = sample(oracle, 500, "ode", steps=steps, generator=gen(0), solver=solver)
    x_T = torch.randn(500, 1, generator=gen(0))
    t_min = oracle.schedule.spaced_steps(steps)[0]
    err = (x.double() - _exact_flow(oracle, x_T.double(), t_min)).abs().mean().item()
    assert err < tol, err


def test_heun_denoises_from_the_last_kept_step():
    """The last kept step is 4, not 1: denoising as if at step 1 shifts every sample (regression)."""
    oracle = _gaussian_oracle()
    x = sample(oracle, 200, "ode", steps=25, generator=gen(1), solver="heun")
    x_T = torch.randn(200, 1, generator=gen(1)).double()
    err = (x.double() - _exact_flow(oracle, x_T, 4)).abs().mean().item()
    assert err < 0.5 * (x.double() - _exact_flow(oracle, x_T, 1)).abs().mean().item(), err


def test_dpm_solver_is_second_order():
    """From x_T down to step 120 (on every grid; the final x_0 prediction there is a smooth function of
    x_120), the error against a fine solution falls about 4x per doubling of steps; DDIM's about 2x."""
    sched = make_schedule("linear", 800, beta_start=1e-4, beta_end=0.04)
    oracle = MixtureOracle(seed_mixture(), sched)
    x_T = torch.randn(400, 1, generator=gen(2), dtype=torch.float64)

    def kept(k):
        return [t for t in sched.spaced_steps(k) if t >= 120]

    def grid(kept):  # the solver's grid: the kept steps from T down, then 0
        return torch.tensor(kept[::-1] + [0])

    with torch.no_grad():
        ref = dpm_solver_2m(oracle, x_T, grid(kept(800)))
        errs, ddim_errs = [], []
        for k in (40, 80, 160):
            errs.append((dpm_solver_2m(oracle, x_T, grid(kept(k))) - ref).abs().mean().item())
            ddim_errs.append((_ddim(oracle, x_T, kept(k)) - ref).abs().mean().item())
    rates = [errs[i] / errs[i + 1] for i in range(2)]
    ddim_rates = [ddim_errs[i] / ddim_errs[i + 1] for i in range(2)]
    assert min(rates) > 3.2, (errs, rates)
    assert max(ddim_rates) < 2.5, (ddim_errs, ddim_rates)
    assert errs[0] < ddim_errs[0] / 5


def _ddim(model, x, kept):
    """DDIM (eta = 0) down ``kept``, then the x_0 prediction at its smallest step."""
    steps = list(reversed(kept))
    for t, s in zip(steps, steps[1:]):
        x, _ = ddim_step(model, x, t, s)
    return _x0_eps(model, x, torch.full((x.shape[0],), steps[-1]))[0]


def test_two_steps_are_ddim():
    """The first step has no history (first order, DDIM's step) and the last returns x_0: with two kept
    steps DPM-Solver++(2M) and DDIM agree exactly."""
    oracle = MixtureOracle(seed_mixture(), make_schedule("linear", 50, beta_start=1e-3, beta_end=0.2))
    a = sample(oracle, 100, "ode", steps=2, generator=gen(3))
    b = sample(oracle, 100, "ddim", steps=2, generator=gen(3))
    assert torch.allclose(a.double(), b.double(), atol=1e-10)


def test_trajectory_runs_from_x0_to_xT():
    oracle = _gaussian_oracle()
    traj = draw_samples(oracle, 50, "ode", steps=10, generator=gen(4), keep_trajectory=True)
    x = draw_samples(oracle, 50, "ode", steps=10, generator=gen(4))
    assert traj.shape == (11, 50, 1)
    assert torch.equal(traj[0], x)
    assert torch.equal(traj[-1], torch.randn(50, 1, generator=gen(4)))


def test_unknown_solver_is_refused():
    with pytest.raises(DDPMLabError, match="ODE solver"):
        sample(_gaussian_oracle(), 4, "ode", steps=5, solver="rk23")

"""Oracles for two rules that tests at their special cases cannot see (issue 27): DDIM's variance at eta
strictly between 0 and 1 (eta = 0 and eta = 1 give the same sigma for eta and eta^2), and the importance
sampler's running average on a loss that changes from batch to batch (a constant loss is its own
average whatever the weights)."""
import math

import pytest
import torch

from conftest import gen
from ddpmlab.core.schedule import make_schedule
from ddpmlab.data.named import gaussian_1d
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.objectives.timesteps import ImportanceTimesteps
from ddpmlab.sampling.api import sample
from ddpmlab.sampling.samplers import ddim_step

DATA_MEAN, DATA_VAR = 1.0, 0.25  # gaussian_1d: N(1, 0.5^2)


def ddim_moments(abar: list[float], eta: float, mean: float, var: float) -> list[tuple[float, float]]:
    """Mean and variance of DDIM's state at each kept step, from x_T ~ N(mean, var), with the exact
    E[x_0 | x_t] of N(DATA_MEAN, DATA_VAR) data (linear in x_t). Song et al. 2021, eq. 12 and 16:
    x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat + sigma z,
    sigma^2 = eta^2 (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s).
    ``abar`` is listed from the last kept step down to abar_0 = 1; returns the same order."""
    out = [(mean, var)]
    for ab_t, ab_s in zip(abar[:-1], abar[1:]):
        sigma2 = eta ** 2 * (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)
        gain = math.sqrt(ab_t) * DATA_VAR / (ab_t * DATA_VAR + 1 - ab_t)  # x0_hat = m + gain (x_t - sqrt(ab_t) m)
        # x_s = c x_t + d + sigma z, with x0_hat and eps_hat = (x_t - sqrt(ab_t) x0_hat) / sqrt(1 - ab_t)
        c_x0, c_eps = math.sqrt(ab_s), math.sqrt(1 - ab_s - sigma2) / math.sqrt(1 - ab_t)
        c = c_x0 * gain + c_eps * (1 - math.sqrt(ab_t) * gain)
        d = (c_x0 - c_eps * math.sqrt(ab_t)) * (DATA_MEAN - gain * math.sqrt(ab_t) * DATA_MEAN)
        mean, var = c * mean + d, c * c * var + sigma2
        out.append((mean, var))
    return out


@pytest.mark.parametrize("eta", [0.3, 0.7])
def test_ddim_between_deterministic_and_ancestral_has_the_closed_form_variance(eta):
    """The exact oracle on Gaussian data makes every DDIM step linear-Gaussian, so the state's mean and
    variance at each kept step follow in closed form; 20,000 chains match them within 4.5 standard errors."""
    sched = make_schedule("linear", 50, beta_start=1e-3, beta_end=0.2)
    oracle = MixtureOracle(gaussian_1d(), sched, (1,))
    n, steps = 20_000, 6
    x_T = torch.randn(n, 1, generator=gen(0), dtype=torch.float64)
    traj = sample(oracle, n, "ddim", steps, gen(1), keep_trajectory=True, x_T=x_T, eta=eta)  # (K + 1, n, 1)
    kept = [0] + sched.spaced_steps(steps)  # traj[i] is the state at step kept[i]
    abar = [float(sched.alphas_cumprod[t]) for t in reversed(kept)]
    expected = ddim_moments(abar, eta, float(x_T.mean()), float(x_T.var()))[::-1]
    for i, (m, v) in enumerate(expected[:-1]):
        x = traj[i, :, 0]
        se_mean, se_var = math.sqrt(v / n), v * math.sqrt(2 / (n - 1))
        assert abs(float(x.mean()) - m) < 4.5 * se_mean, (kept[i], float(x.mean()), m)
        assert abs(float(x.var()) - v) < 4.5 * se_var, (kept[i], float(x.var()), v)


@pytest.mark.parametrize("eta", [0.3, 0.7])
def test_ddim_variance_is_eta_squared_times_the_respaced_posterior_variance(eta):
    """Between kept steps s < t, sigma^2 / eta^2 is beta-tilde of the respaced schedule (Song et al. 2021,
    eq. 16; the respaced schedule's own posterior variance, built from the kept alpha-bars)."""
    sched = make_schedule("linear", 50, beta_start=1e-3, beta_end=0.2)
    oracle = MixtureOracle(gaussian_1d(), sched, (1,))
    kept = sched.spaced_steps(6)
    spaced = sched.respace(kept)
    x = torch.randn(4, 1, generator=gen(2), dtype=torch.float64)
    for k, (s, t) in enumerate(zip([0] + kept[:-1], kept), start=1):
        _, var = ddim_step(oracle, x, t, s, eta)
        torch.testing.assert_close(var, torch.full_like(x, eta ** 2 * float(spaced.posterior_variance[k])),
                                   rtol=1e-12, atol=0)


def hand_running_average(T: int, history: int, batches) -> tuple[list[float], list[int]]:
    """The documented rule, one number at a time: per step t, the batch's mean squared loss at t; the
    first such mean starts E[L_t^2], each later one moves it by weight 1 / history."""
    moment, count = [0.0] * (T + 1), [0] * (T + 1)
    for t, losses in batches:
        for step in sorted(set(t.tolist())):
            sq = [float(l) ** 2 for s, l in zip(t.tolist(), losses.tolist()) if s == step]
            batch_mean = sum(sq) / len(sq)
            decay = 1 - 1 / history
            moment[step] = batch_mean if count[step] == 0 else decay * moment[step] + (1 - decay) * batch_mean
            count[step] += len(sq)
    return moment, count


def test_importance_running_average_against_a_hand_loop():
    """A loss that differs between batches and within a step, steps repeated within a batch and steps
    a batch misses: the vectorised update keeps the hand loop's E[L_t^2] and counts, and p_t follows."""
    T, history = 6, 3
    sampler = ImportanceTimesteps(T, history=history, uniform_prob=0.1)
    g = gen(7)
    batches = []
    for b in range(12):
        t = torch.randint(1, T + 1 if b % 3 else T, (9,), generator=g)  # every third batch misses step T
        losses = torch.randn(9, generator=g, dtype=torch.float64) * (1 + t) + b  # drifts over the batches
        batches.append((t, losses))
        sampler.update(t, losses)
    moment, count = hand_running_average(T, history, batches)
    assert sampler.counts.tolist() == count and min(count[1:]) >= history
    torch.testing.assert_close(sampler.second_moment, torch.tensor(moment, dtype=torch.float64), rtol=1e-12, atol=0)
    w = torch.tensor(moment[1:], dtype=torch.float64).sqrt()
    torch.testing.assert_close(sampler.probs(), 0.9 * w / w.sum() + 0.1 / T, rtol=1e-12, atol=0)

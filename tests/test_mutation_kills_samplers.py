"""Oracles for what the sampler tests left open (issue 27, mutation testing of ``sampling/samplers.py``):
ancestral and DDIM sampling against plain loops of Ho et al.'s Algorithm 2 and Song et al.'s eq. 12 on
the same noise stream, the condition reaching the model at every call, the callback's (step, grid time,
state), uneven grids kept as given, deterministic DDIM drawing nothing, and the one-line refusals."""
import math

import pytest
import torch

from conftest import gen, mixture_2d
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError, NonFiniteError
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.sampling.samplers import ancestral_sample, ddim_sample, ddim_step, denoise, noise_like, respaced_on

T = 12


class Spy:
    """The exact oracle, recording the condition every reverse step receives (the oracle takes none)."""

    def __init__(self, oracle, seen=None):
        self.oracle, self.seen = oracle, [] if seen is None else seen

    def __getattr__(self, name):
        return getattr(self.oracle, name)

    def p_mean_variance(self, x, t, cond=None):
        self.seen.append(cond)
        return self.oracle.p_mean_variance(x, t)

    def respaced(self, num_steps):
        return Spy(self.oracle.respaced(num_steps), self.seen)


@pytest.fixture(scope="module")
def oracle():
    return MixtureOracle(mixture_2d(), make_schedule("linear", T, beta_start=1e-2, beta_end=0.4))


def x_T(n=6, seed=0):
    return torch.randn(n, 2, generator=gen(seed), dtype=torch.float64)


def test_ancestral_is_algorithm_2_on_the_generator_stream(oracle):
    """x_{t-1} = mu + sigma z, z drawn from the CPU generator in order: a plain loop gives the same chain."""
    grid = torch.arange(T, -1, -1)
    got = ancestral_sample(oracle, x_T(), grid, gen(3))
    x, g = x_T(), gen(3)
    for t in range(T, 0, -1):
        p = oracle.p_mean_variance(x, torch.full((6,), t))
        x = p.mean + p.variance.sqrt() * torch.randn(x.shape, generator=g).double()
    torch.testing.assert_close(got, x, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("eta", [0.0, 0.4, 1.0])
def test_ddim_is_song_eq_12_on_the_generator_stream(oracle, eta):
    """x_s = sqrt(abar_s) x0 + sqrt(1 - abar_s - sigma^2) eps + sigma z (eq. 12, 16) on an uneven grid."""
    grid = torch.tensor([T, 9, 4, 1, 0])
    got = ddim_sample(oracle, x_T(), grid, gen(4), eta=eta)
    x, g, abar = x_T(), gen(4), oracle.schedule.alphas_cumprod
    for t, s in zip(grid.tolist()[:-1], grid.tolist()[1:]):
        p = oracle.p_mean_variance(x, torch.full((6,), t))
        ab_t, ab_s = float(abar[t]), float(abar[s])
        sigma2 = eta ** 2 * (1 - ab_s) / (1 - ab_t) * (1 - ab_t / ab_s)
        x = math.sqrt(ab_s) * p.pred_x0 + math.sqrt(max(0.0, 1 - ab_s - sigma2)) * p.pred_eps
        if eta > 0:
            x = x + math.sqrt(sigma2) * torch.randn(x.shape, generator=g).double()
    torch.testing.assert_close(got, x, rtol=1e-12, atol=1e-12)


def test_deterministic_ddim_draws_nothing_and_its_step_defaults_to_eta_zero(oracle):
    g = gen(5)
    before = g.get_state()
    ddim_sample(oracle, x_T(), torch.tensor([T, 6, 0]), g)  # eta = 0
    assert torch.equal(g.get_state(), before)
    _, var = ddim_step(oracle, x_T(), T, 6)
    assert torch.all(var == 0)


def test_the_condition_reaches_every_reverse_step(oracle):
    cond = torch.tensor([1, 0, 1, 0, 1, 0])
    calls = [lambda m: ancestral_sample(m, x_T(), torch.arange(T, -1, -1), gen(0), cond=cond),
             lambda m: ancestral_sample(m, x_T(), torch.tensor([T, 5, 0]), gen(0), cond=cond),
             lambda m: ddim_sample(m, x_T(), torch.tensor([T, 5, 0]), gen(0), cond=cond, eta=0.5),
             lambda m: ddim_step(m, x_T(), T, 5, 0.5, cond),
             lambda m: denoise(m, x_T(), 3, cond)]
    for call in calls:
        spy = Spy(oracle)
        call(spy)
        assert spy.seen and all(c is cond for c in spy.seen)


def test_denoise_is_the_models_x0_at_step_t_for_the_whole_batch(oracle):
    x = x_T(5)
    torch.testing.assert_close(denoise(oracle, x, 3), oracle.p_mean_variance(x, torch.full((5,), 3)).pred_x0)


def test_an_uneven_grid_is_kept_as_given_and_an_even_one_by_number(oracle):
    assert respaced_on(oracle, [T, 9, 4, 1, 0]).schedule.timesteps.tolist() == [0, 1, 4, 9, T]
    even = [T] + oracle.schedule.spaced_steps(3)[::-1][1:] + [0]
    assert respaced_on(oracle, even).schedule.timesteps.tolist() == [0] + oracle.schedule.spaced_steps(3)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_the_callback_sees_each_step_its_grid_time_and_state(oracle, sampler):
    grid = torch.tensor([T, 9, 4, 1, 0])
    seen = []
    run = ancestral_sample if sampler == "ancestral" else ddim_sample
    x = run(oracle, x_T(), grid, gen(0), callback=lambda i, t, state: seen.append((i, t, state.clone())))
    assert [(i, t) for i, t, _ in seen] == list(enumerate(grid.tolist()[1:]))
    assert torch.equal(seen[-1][2], x)


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_a_non_finite_state_stops_with_one_line_naming_sampler_and_step(oracle, sampler):
    x = x_T()
    x[2, 0] = float("nan")
    run = ancestral_sample if sampler == "ancestral" else ddim_sample
    with pytest.raises(NonFiniteError) as err:
        run(oracle, x, torch.tensor([T, 4, 0]), gen(0))
    msg = str(err.value)
    assert msg.startswith(f"{sampler} sampler: non-finite") and f"at step t = {T};" in msg
    assert msg.endswith("; the model or its schedule is broken there") and "\n" not in msg


def test_an_eta_outside_0_1_is_refused_by_name(oracle):
    with pytest.raises(DDPMLabError, match=r"^DDIM's eta must be in \[0, 1\], got 1.5$"):
        ddim_sample(oracle, x_T(), torch.tensor([T, 0]), gen(0), eta=1.5)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_noise_is_the_cpu_generators_stream_in_the_states_dtype(dtype):
    x = torch.zeros(3, 4, dtype=dtype)
    z = noise_like(x, gen(9))
    assert z.dtype == dtype and z.device == x.device
    assert torch.equal(z, torch.randn(3, 4, generator=gen(9)).to(dtype))

import math

import pytest
import torch

from ddpmlab.core.schedule import NoiseSchedule, make_betas, make_schedule
from ddpmlab.core.utils import DDPMLabError


@pytest.mark.parametrize("kind", ["constant", "linear", "cosine"])
def test_schedule_arrays_follow_the_paper_index(kind):
    s = make_schedule(kind, 50)
    assert s.betas.dtype == torch.float64 and s.betas.shape == (51,)
    assert s.betas[0] == 0 and s.alphas_cumprod[0] == 1
    # abar_t = prod_{s<=t} (1 - beta_s), computed here by a plain loop
    prod = 1.0
    for t in range(1, 51):
        prod *= 1 - float(s.betas[t])
        assert math.isclose(float(s.alphas_cumprod[t]), prod, rel_tol=1e-12)
    # posterior variance = (1 - abar_{t-1}) / (1 - abar_t) beta_t ; zero at t = 1
    t = 7
    expect = (1 - float(s.alphas_cumprod[t - 1])) / (1 - float(s.alphas_cumprod[t])) * float(s.betas[t])
    assert math.isclose(float(s.posterior_variance[t]), expect, rel_tol=1e-12)
    assert float(s.posterior_variance[1]) == 0.0


def test_cosine_matches_its_definition():
    T, s_ = 100, 0.008
    s = make_schedule("cosine", T)
    f = lambda u: math.cos((u / T + s_) / (1 + s_) * math.pi / 2) ** 2
    for t in (1, 10, 50, 99):
        assert math.isclose(float(s.alphas_cumprod[t]), f(t) / f(0), rel_tol=1e-9)


def test_respace_keeping_every_step_is_the_original():
    s = make_schedule("linear", 40)
    r = s.respace(range(1, 41))
    for name in ("betas", "alphas_cumprod", "posterior_variance", "posterior_mean_coef1", "posterior_mean_coef2"):
        assert torch.allclose(getattr(r, name), getattr(s, name), rtol=1e-12, atol=0)
    assert torch.equal(r.timesteps, s.timesteps)


def test_respace_keeps_the_marginals_of_kept_steps():
    s = make_schedule("cosine", 100)
    r = s.spaced(10)
    assert r.T == 10 and int(r.timesteps[-1]) == 100
    assert torch.allclose(r.alphas_cumprod, s.alphas_cumprod[r.timesteps], rtol=1e-12)
    # network time of kept step i equals the original step's time
    assert torch.allclose(r.model_time(torch.arange(1, 11)), s.model_time(r.timesteps[1:]))


@pytest.mark.parametrize("kwargs", [dict(kind="constant", num_steps=10, beta=1.5),
                                    dict(kind="constant", num_steps=10, beta=0.0),
                                    dict(kind="constant", num_steps=0),
                                    dict(kind="wiggly", num_steps=10)])
def test_bad_schedules_are_refused(kwargs):
    with pytest.raises(DDPMLabError):
        make_betas(**kwargs)


def test_betas_outside_unit_interval_refused():
    with pytest.raises(DDPMLabError):
        NoiseSchedule(torch.tensor([0.1, 1.0]))


def _abar_T(T: int, scale: float) -> str:
    """alpha-bar_T of Ho et al.'s linear betas times ``scale`` at T steps, as the docs quote it."""
    abar = float(make_schedule("linear", T, beta_start=1e-4 * scale, beta_end=0.02 * scale).alphas_cumprod[-1])
    return f"{abar:.2f}" if abar > 0.1 else f"{abar:.3f}" if abar > 0.01 else f"{abar:.1e}".replace("e-0", "e-")


def test_linear_betas_are_used_as_given_and_the_configs_scale_them():
    """``make_schedule("linear", T)`` is Ho et al.'s 1e-4..0.02 at every T (never rescaled); every packaged
    linear config stores those betas times 1000 / T; the docstring, docs/api.md and the README quote the
    alpha-bar_T of each way as computed here."""
    from pathlib import Path

    from ddpmlab.config.schema import CONFIG_DIR, load_config
    from ddpmlab.core import schedule as module

    ho = torch.linspace(1e-4, 0.02, 100, dtype=torch.float64)
    assert torch.equal(make_schedule("linear", 100).betas[1:], ho)
    def packaged(name):  # a config that distils a teacher leaves it to be named (validation does not load it)
        needs = 'teacher = ""' in (CONFIG_DIR / f"{name}.toml").read_text()
        return load_config(name, ["train.teacher='a-run'"] if needs else [])

    linear = [c.schedule for c in map(packaged, sorted(p.stem for p in CONFIG_DIR.glob("*.toml")))
              if c.schedule.kind == "linear"]
    assert linear
    for s in linear:
        assert math.isclose(s.beta_start, 1e-4 * 1000 / s.steps) and math.isclose(s.beta_end, 0.02 * 1000 / s.steps)
    root = Path(__file__).resolve().parents[1]
    quoted = {"docstring": (module.linear_betas.__doc__, [(100, 1), (1000, 1), (250, 4), (100, 10)]),
              "docs/api.md": ((root / "docs/api.md").read_text(), [(100, 1), (1000, 1), (250, 4), (100, 10)]),
              "README.md": ((root / "README.md").read_text(), [(250, 1), (250, 4)])}
    for where, (text, cases) in quoted.items():
        for T, scale in cases:
            assert f"alpha-bar_T = {_abar_T(T, scale)}" in " ".join(text.split()), (where, T, scale)

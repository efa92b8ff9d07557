"""The guidance lab (issue 26): the exact tilted target p(x|c)^g p(x)^(1-g) (its grid density, its
samples), the known gap of exact-score CFG (ddpmlab's w = 0 is g = 1, at the floor; w = 2 is g = 3, off
it: Chidambaram et al. 2024), interval guidance, CFG++ and autoguidance against their definitions written
out, and ``ddpmlab evaluate --guidance-method``."""
import json
import math

import numpy as np
import pytest
import torch

import ddpmlab as dl
from ddpmlab.cli import main
from ddpmlab.core.distributions import GaussianMixture, seed_mixture
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.evaluation.guidance import evaluate_classes
from ddpmlab.evaluation.tilted import TiltedTarget
from ddpmlab.models.conditional_oracle import LabelledFlowMixtureOracle, LabelledMixtureOracle
from ddpmlab.models.guidance import Guided
from ddpmlab.models.guidance_methods import GUIDANCE_METHODS, guide
from conftest import gen

SCHED = dl.make_schedule("linear", 250, beta_start=4e-4, beta_end=0.08)  # the default recipe's
OVERLAP_1D = GaussianMixture([0.4, 0.6], [[-1.0], [1.0]], [1.0, 0.5])  # overlapping: the tilt is no component
OVERLAP_2D = GaussianMixture([0.5, 0.5], [[-0.8, 0.0], [0.8, 0.3]], [[0.6, 0.4], [0.5, 0.8]])


def _normal_logpdf(x, mu, var):
    return -0.5 * ((x - mu) ** 2 / var + np.log(2 * np.pi * var))


# -- the tilted target -------------------------------------------------------------------------------------
@pytest.mark.parametrize("dist", [OVERLAP_1D, OVERLAP_2D], ids=["1d", "2d"])
def test_tilted_grid_density_normalises_and_is_the_component_at_g1_and_the_mixture_at_g0(dist):
    for g, exact in ((1.0, dist.component(0)), (0.0, dist)):
        axes, p, log_z = TiltedTarget(dist, 0, g).on_grid()
        mesh = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, dist.dim)
        assert abs(log_z) < 1e-6  # both are normalised densities already
        assert torch.allclose(p.reshape(-1), exact.log_prob(mesh).exp(), atol=1e-9)
    axes, p, _ = TiltedTarget(dist, 1, 3.0).on_grid()
    for i, a in reversed(list(enumerate(axes))):
        p = torch.trapezoid(p, a, dim=i)
    assert abs(float(p) - 1.0) < 1e-9


def test_tilted_log_density_is_the_closed_form_by_hand():
    x = np.linspace(-4, 4, 33)
    g = 3.0
    comp = [_normal_logpdf(x, m, v) for m, v in ((-1.0, 1.0), (1.0, 0.5))]
    mix = np.logaddexp(np.log(0.4) + comp[0], np.log(0.6) + comp[1])
    by_hand = g * comp[1] + (1 - g) * mix
    ours = TiltedTarget(OVERLAP_1D, 1, g).log_density(torch.tensor(x)).numpy()
    assert np.allclose(ours, by_hand, atol=1e-12)


def test_tilted_samples_follow_the_grid_cdf():
    n = 20_000
    target = TiltedTarget(OVERLAP_1D, 0, 3.0)
    (x,), p, _ = target.on_grid()
    cdf = torch.cumulative_trapezoid(p, x)
    s = torch.sort(target.sample(n, gen(1)).reshape(-1)).values
    ks = np.abs(np.arange(1, n + 1) / n - np.interp(s.numpy(), x[1:].numpy(), cdf.numpy())).max()
    assert ks < 1.63 / math.sqrt(n)  # the KS test at 1%
    assert not torch.allclose(s.mean(), torch.tensor(-1.0, dtype=torch.float64), atol=0.1)  # the tilt moved it


def test_tilted_2d_samples_follow_the_grid_marginals():
    n = 10_000
    target = TiltedTarget(OVERLAP_2D, 0, 3.0)
    (xs, ys), p, _ = target.on_grid()
    s = target.sample(n, gen(2))
    for axis, (grid, marginal) in enumerate(((xs, torch.trapezoid(p, ys, dim=1)), (ys, torch.trapezoid(p, xs, dim=0)))):
        cdf = np.concatenate([[0.0], torch.cumulative_trapezoid(marginal, grid).numpy()])
        v = np.sort(s[:, axis].numpy())
        ks = np.abs(np.arange(1, n + 1) / n - np.interp(v, grid.numpy(), cdf)).max()
        assert ks < 1.63 / math.sqrt(n) * 1.5, (axis, ks)  # resampling's duplicates widen the band a little


def test_tilted_refuses_bad_input():
    with pytest.raises(DDPMLabError, match="out of range"):
        TiltedTarget(OVERLAP_1D, 2, 1.0)
    with pytest.raises(DDPMLabError, match=">= 0"):
        TiltedTarget(OVERLAP_1D, 0, float("nan"))


# -- the known gap of exact-score CFG ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def seed_oracle():
    return LabelledMixtureOracle(seed_mixture(), SCHED)


def test_exact_cfg_is_at_the_floor_at_w0_and_off_the_tilted_target_at_w2(seed_oracle):
    """ddpmlab's w = 0 is the issue's w = 1 (g = 1), its w = 2 the issue's w = 3 (g = 3)."""
    rows = {w: evaluate_classes(seed_oracle, seed_mixture(), [0], w, 2000, gen(3), "ancestral", oracle=False,
                                n_ref=50_000)[0] for w in (0.0, 2.0)}
    assert rows[0.0]["g"] == 1.0 and rows[2.0]["g"] == 3.0
    at, off = rows[0.0], rows[2.0]
    assert at["model"]["w1_tilted"] < 3 * at["tilted_floor"]
    assert off["model"]["w1_tilted"] > 5 * off["tilted_floor"]


# -- interval guidance ------------------------------------------------------------------------------------
def _ddim(model, cond, n=300, steps=25):
    return dl.sample(model, n, "ddim", steps, gen(4), cond=torch.full((n,), cond, dtype=torch.long))


def test_interval_empty_is_w0_full_is_cfg_and_partial_switches_by_noise_level(seed_oracle):
    w = 2.0
    assert torch.equal(_ddim(Guided(seed_oracle, w, interval=(1e6, 1e7)), 0), _ddim(Guided(seed_oracle, 0.0), 0))
    assert torch.equal(_ddim(Guided(seed_oracle, w, interval=(0.0, math.inf)), 0), _ddim(Guided(seed_oracle, w), 0))
    part = Guided(seed_oracle, w, interval=(0.5, 3.0))
    x = torch.linspace(-6, 6, 13)[:, None].double()
    for t in (3, 40, 120, 249):
        sigma = math.sqrt((1 - float(SCHED.alphas_cumprod[t])) / float(SCHED.alphas_cumprod[t]))
        want = Guided(seed_oracle, w if 0.5 <= sigma <= 3.0 else 0.0)
        steps = torch.full((13,), t)
        assert torch.equal(part.p_mean_variance(x, steps, 0).mean, want.p_mean_variance(x, steps, 0).mean), t


def test_interval_on_a_flow_uses_its_time(seed_oracle):
    flow = LabelledFlowMixtureOracle(seed_mixture())
    x = torch.linspace(-6, 6, 13)[:, None].double()
    for t in (0.1, 0.5, 0.9):
        inside = 0.5 <= t / (1 - t) <= 3.0
        got = Guided(flow, 2.0, interval=(0.5, 3.0)).velocity(x, t, 1)
        assert torch.equal(got, Guided(flow, 2.0 if inside else 0.0).velocity(x, t, 1)), t
    with pytest.raises(DDPMLabError, match="sigma_lo <= sigma_hi"):
        Guided(flow, 1.0, interval=(3.0, 1.0))


# -- CFG++ -------------------------------------------------------------------------------------------------
def test_cfgpp_at_lambda0_is_the_unconditional_ddim(seed_oracle):
    plain = _ddim(seed_oracle, seed_oracle.num_classes)  # the null class: the unconditional model
    assert torch.equal(_ddim(guide(seed_oracle, 0.0, "cfg++"), 0), plain)
    assert not torch.equal(_ddim(guide(seed_oracle, 0.7, "cfg++"), 0), plain)


def test_cfgpp_is_algorithm_1_written_out(seed_oracle):
    """Chung et al. 2024, Algorithm 1 (DDIM), on the oracle's eps, by hand."""
    lam, n, steps = 0.7, 200, [250, 180, 120, 60, 20, 5, 0]
    abar = SCHED.alphas_cumprod.double()
    x = torch.randn(n, 1, generator=gen(5), dtype=torch.float64)
    ours = x.clone()
    for t, s in zip(steps[:-1], steps[1:]):
        tt = torch.full((n,), t)
        e_c = seed_oracle.p_mean_variance(x, tt, 0).pred_eps
        e_u = seed_oracle.p_mean_variance(x, tt, seed_oracle.num_classes).pred_eps
        x0 = (x - (1 - abar[t]).sqrt() * (e_u + lam * (e_c - e_u))) / abar[t].sqrt()
        x = abar[s].sqrt() * x0 + (1 - abar[s]).sqrt() * e_u  # abar_0 = 1: x_0 itself at the end
    got = dl.sample(guide(seed_oracle, lam, "cfg++"), n, "ddim", grid=torch.tensor(steps), cond=0, x_T=ours)
    assert torch.allclose(got, x, atol=1e-10)


def test_cfgpp_refuses_the_ode_and_flows(seed_oracle):
    with pytest.raises(DDPMLabError, match="not a velocity field"):
        dl.sample(guide(seed_oracle, 0.5, "cfg++"), 10, "ode", 5, cond=0, solver="heun")
    with pytest.raises(DDPMLabError, match="serves the ddim"):
        GUIDANCE_METHODS.get("cfg_pp").check_sampler("cfg_pp", "ode")
    with pytest.raises(DDPMLabError, match="does not serve a flow"):
        guide(LabelledFlowMixtureOracle(seed_mixture()), 1.0, "cfg++")


# -- autoguidance ------------------------------------------------------------------------------------------
def test_autoguidance_with_itself_is_w0_and_else_the_weak_models_extrapolation(seed_oracle):
    x = torch.linspace(-6, 6, 13)[:, None].double()
    t = torch.full((13,), 60)
    same = Guided(seed_oracle, 2.0, guide=seed_oracle).p_mean_variance(x, t, 0)
    plain = seed_oracle.p_mean_variance(x, t, 0)
    assert torch.allclose(same.pred_eps, plain.pred_eps, atol=1e-12)
    weak = LabelledMixtureOracle(GaussianMixture([1.0, 2.0], [[-3.0], [3.5]], [2.0, 1.5]), SCHED)
    got = guide(seed_oracle, 2.0, "autoguidance", weak=weak).p_mean_variance(x, t, 0).pred_eps
    assert torch.allclose(got, 3.0 * plain.pred_eps - 2.0 * weak.p_mean_variance(x, t, 0).pred_eps, atol=1e-12)
    with pytest.raises(DDPMLabError, match="noise schedule"):
        Guided(seed_oracle, 1.0, guide=LabelledMixtureOracle(seed_mixture(), dl.make_schedule("linear", 100)))
    with pytest.raises(DDPMLabError, match="needs a weaker model"):
        guide(seed_oracle, 1.0, "autoguidance")


# -- the command line ---------------------------------------------------------------------------------------
TINY = ["--set", "schedule.steps=10", "--set", "model.width=16", "--set", "model.depth=1",
        "--set", "train.batch_size=32", "--set", "data.labels=true", "--set", "train.label_dropout=0.2"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    for name, iters in (("main", 6), ("weak", 2)):
        assert main(["train", "--config", "default", "--out", str(root / name), "--no-progress", *TINY,
                     "--set", f"train.iters={iters}"]) == 0
    return root


@pytest.mark.parametrize("extra, method, g", [
    (["--guidance-method", "interval", "--guidance-interval", "0.5,3"], "interval", [1.0, 2.0]),
    (["--guidance-method", "cfg++", "--sampler", "ddim"], "cfg_pp", [0.0, 1.0]),
    (["--guidance-method", "autoguidance", "--guide-with", "WEAK"], "autoguidance", [1.0, 2.0])])
def test_evaluate_by_method_writes_tilted_distances(runs, capsys, extra, method, g):
    extra = [str(runs / "weak") if a == "WEAK" else a for a in extra]
    assert main(["evaluate", str(runs / "main"), "--class", "0", "--guidance", "0,1", "--samples", "100", *extra]) == 0
    ev = json.loads((runs / "main" / "evaluation_classes.json").read_text())
    rows = [ev[w]["0"] for w in ("0.0", "1.0")]
    assert [r["method"] for r in rows] == [method] * 2 and [r["g"] for r in rows] == g
    assert all(r["model"]["w1_tilted"] > 0 and r["oracle"]["w1_tilted"] > 0 and r["tilted_floor"] > 0 for r in rows)
    assert "tilt oracle" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    (["--guidance-method", "autoguidance"], "--guide-with RUN goes with"),
    (["--guidance-method", "cfg", "--guide-with", "WEAK"], "--guide-with RUN goes with"),
    (["--guidance-method", "cfg++", "--sampler", "ode"], "serves the ddim"),
    (["--guidance-method", "interval", "--guidance-interval", "3,1"], "sigma_lo <= sigma_hi"),
    (["--guidance-method", "nope"], "unknown guidance method")])
def test_evaluate_method_refusals_are_one_line(runs, capsys, extra, message):
    extra = [str(runs / "weak") if a == "WEAK" else a for a in extra]
    assert main(["evaluate", str(runs / "main"), "--class", "0", "--samples", "50", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and err.startswith("ddpmlab evaluate: error:")

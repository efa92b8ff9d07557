"""``dl.log_prob`` and ``ddpmlab logprob`` (issue 26, item 3): log p(x) of any model beside the exact log q(x).

Oracles: the exact reverse process reproduces log q(x) of its mixture; exact and Hutchinson divergences
agree within the probe's standard error; the bound lies below log q; a run's density integrates to 1 in
the units of its data; the trained default recipe's mean log p on true samples is within 0.05 nats of
-entropy.
"""
import math

import numpy as np
import pytest
import torch

import ddpmlab as dl
from conftest import gen, mixture_2d, oracle_ode_nll_nats
from ddpmlab.core.distributions import GaussianMixture, seed_mixture
from ddpmlab.evaluation.logprob import EXACT_TRACE_MAX_DIMS, resolve_divergence
from ddpmlab.evaluation.metrics import mixture_entropy_1d
from hostile_support import TINY, run_main, spoil_weights_with_nan, tree


def default_schedule():
    cfg = dl.load_config("default")
    s = cfg.schedule
    return dl.make_schedule(s.kind, s.steps, beta_start=s.beta_start, beta_end=s.beta_end)


def mean_se(v: torch.Tensor) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / math.sqrt(v.numel()))


class TestOracle:
    def test_equals_log_q_on_the_default_schedule_with_its_own_prior(self):
        """The oracle of the seed's mixture on the default schedule, its path ended in its own q(x_T)
        (``prior="exact"``): the prior term is accounted for exactly, so log_prob is log q(x) up to the
        solver's tolerance, within 1e-3 nats at every point (true samples and the far tails)."""
        dist = seed_mixture()
        x = torch.cat([dist.sample(200, gen(0)), torch.tensor([[-9.0], [0.0], [9.0]])])
        lp = dl.log_prob(dl.MixtureOracle(dist, default_schedule()), x, prior="exact")
        assert lp.shape == (203,) and lp.dtype == torch.float64
        assert float((lp - dist.log_prob(x.double())).abs().max()) < 1e-3

    def test_equals_log_q_where_the_prior_term_vanishes(self):
        """The default prior N(0, I) on the cosine schedule of 1000 steps (alpha-bar_T = 2e-9): there
        log N(x_T) - log q(x_T) is below 3e-4 nats for |x_T| <= 5, so the oracle's own ODE density is log q
        to 1e-3 at every point. (On the default schedule it is not: that difference reaches 1e-2 there,
        though its mean, KL(q(x_T) || N(0, 1)), is 3e-5 nats.)"""
        dist = seed_mixture()
        x = dist.sample(200, gen(1))
        lp = dl.log_prob(dl.MixtureOracle(dist, dl.make_schedule("cosine", 1000)), x)
        assert float((lp - dist.log_prob(x.double())).abs().max()) < 1e-3

    def test_the_flow_oracle_equals_log_q(self):
        """Every model: the exact flow of the seed's mixture, whose linear path ends in N(0, 1) exactly."""
        dist = seed_mixture()
        x = dist.sample(100, gen(2))
        lp = dl.log_prob(dl.FlowMixtureOracle(dist), x)
        assert float((lp - dist.log_prob(x.double())).abs().max()) < 1e-3


class TestDivergence:
    def test_auto_is_exact_up_to_the_documented_size(self):
        assert resolve_divergence("auto", (EXACT_TRACE_MAX_DIMS,)) == "exact"
        assert resolve_divergence("auto", (1, 4, 4)) == "exact"
        assert resolve_divergence("auto", (EXACT_TRACE_MAX_DIMS + 1,)) == "hutchinson"
        assert resolve_divergence("auto", (1, 8, 8)) == "hutchinson"
        assert resolve_divergence("hutchinson", (1,)) == "hutchinson"
        with pytest.raises(dl.DDPMLabError, match="divergence must be one of"):
            resolve_divergence("trace", (2,))

    def test_exact_and_hutchinson_agree_within_their_se(self):
        """In 2-D the probe is an estimate (in 1-D it is exact): per point it differs from the exact trace,
        yet the mean difference is within 4 standard errors of 0 and auto is the exact trace here."""
        dist = mixture_2d()
        oracle = dl.MixtureOracle(dist, default_schedule())
        x = dist.sample(128, gen(3))
        exact = dl.log_prob(oracle, x, prior="exact", divergence="exact")
        hutch = dl.log_prob(oracle, x, prior="exact", divergence="hutchinson", generator=gen(4))
        assert torch.equal(dl.log_prob(oracle, x, prior="exact"), exact)
        assert float((exact - dist.log_prob(x.double())).abs().max()) < 1e-3
        mean, se = mean_se(hutch - exact)
        assert float((hutch - exact).abs().max()) > 1e-2  # an estimate, not the trace
        assert abs(mean) < 4 * se, (mean, se)

    def test_hutchinson_above_the_size_is_unbiased(self):
        """A 17-D Gaussian (auto: Hutchinson): log_prob - log q is 0 within 4 standard errors."""
        d = EXACT_TRACE_MAX_DIMS + 1
        a = torch.randn(d, d, generator=gen(5), dtype=torch.float64) / math.sqrt(d)
        dist = GaussianMixture([1.0], [torch.linspace(-1, 1, d).tolist()], [(a @ a.T + 0.5 * torch.eye(d)).tolist()])
        x = dist.sample(64, gen(6))
        diff = dl.log_prob(dl.MixtureOracle(dist, default_schedule()), x, prior="exact", generator=gen(7)) \
            - dist.log_prob(x.double())
        mean, se = mean_se(diff)
        assert float(diff.abs().max()) > 1e-2 and abs(mean) < 4 * se, (mean, se)


class TestBoundAndRefusals:
    def test_the_oracle_bound_lies_below_log_q(self):
        """-L is a lower bound: on the oracle its mean is below log q (within 3 SE of the paired gap) and
        close to it, within 0.02 nats (the exact reverse process loses only its Gaussian steps' error;
        measured on 50,000 points: -0.001 +- 0.005). One x_t per step makes -L noisy (1.1 nats per point),
        hence 20,000 points (SE 0.008)."""
        dist = seed_mixture()
        x = dist.sample(20_000, gen(8))
        lb = dl.log_prob(dl.MixtureOracle(dist, default_schedule()), x, method="bound", generator=gen(9))
        gap, se = mean_se(dist.log_prob(x.double()) - lb)
        assert -3 * se < gap < 0.02 + 3 * se, (gap, se)

    @pytest.mark.parametrize("kwargs, needle", [
        ({"method": "bound"}, "needs a family with a discrete bound"),
        ({"method": "exact"}, "method must be one of ode, bound"),
        ({"divergence": "trace"}, "divergence must be one of"),
        ({"chunk": 0}, "chunk must be >= 1"),
        ({"cond": torch.zeros(3, dtype=torch.long)}, "one condition per example, (4, ...)"),
    ])
    def test_refusals_are_one_line(self, kwargs, needle):
        x = seed_mixture().sample(4, gen(0))
        with pytest.raises(dl.DDPMLabError) as info:
            dl.log_prob(dl.FlowMixtureOracle(seed_mixture()), x, **kwargs)
        assert needle in str(info.value) and "\n" not in str(info.value)

    def test_bad_examples_are_refused(self):
        oracle = dl.MixtureOracle(seed_mixture(), default_schedule())
        with pytest.raises(dl.DDPMLabError, match="NaN or infinite"):
            dl.log_prob(oracle, torch.tensor([[0.0], [float("nan")]]))
        with pytest.raises(dl.DDPMLabError, match=r"examples of shape \(2,\), but the model's data_shape is \(1,\)"):
            dl.log_prob(oracle, torch.zeros(3, 2))
        with pytest.raises(dl.DDPMLabError, match="the bound takes no condition"):
            dl.log_prob(oracle, torch.zeros(3, 1), method="bound", cond=torch.zeros(3, dtype=torch.long))


@pytest.fixture(scope="module")
def file_run(tmp_path_factory):
    """A tiny run on a 1-D file standardised at training time (scale about 20)."""
    root = tmp_path_factory.mktemp("logprob_file")
    rng = np.random.default_rng(0)
    np.save(root / "data.npy", np.r_[rng.normal(50, 10, 200), rng.normal(90, 5, 100)][:, None])
    code, _, err = run_main("train", "--out", root / "run", "--data", root / "data.npy", *TINY)
    assert code == 0, err
    return root / "run"


def test_a_run_density_integrates_to_one_in_data_units(file_run):
    """The change of variables: a run trained on standardised data gives the density of the data's own
    units, whose integral over the line is 1 (without the log-det it would be the scale, about 20)."""
    run = dl.load_run(file_run)
    assert run.info["data"]["scale"][0] > 10
    grid = torch.linspace(-100.0, 250.0, 701, dtype=torch.float64)[:, None]
    lp = dl.log_prob(run, grid)
    assert abs(np.trapezoid(lp.exp().numpy(), grid[:, 0].numpy()) - 1) < 1e-3


@pytest.fixture(scope="module")
def default_run(tmp_path_factory):
    """The default recipe as ``ddpmlab train`` runs it (1000 steps; about 5 s), trained once."""
    out = tmp_path_factory.mktemp("logprob_default") / "run"
    code, _, err = run_main("train", "--out", out, "--no-progress", "--threads", "1")
    assert code == 0, err
    return out


def test_default_run_mean_log_prob_is_within_005_of_the_entropy(default_run):
    """E[log p(x)] over q is -H - KL(q || p) exactly, so |mean log p + H| <= 0.05 is KL(q || p) <= 0.05,
    estimated paired (log q - log p on the same points: without the points' own spread, SE about 0.003
    here). KL(q || p) holds the ODE's prior term KL(q(x_T) || N(0, 1)), the best any model on this
    schedule can do, checked here to be negligible (below 1e-3 nats: 3e-5). The direct mean is also
    within 0.05 + 3 of its standard errors."""
    run = dl.load_run(default_run)
    dist = run.dist
    entropy = mixture_entropy_1d(dist)
    assert oracle_ode_nll_nats(dist, float(run.model.schedule.alphas_cumprod[-1])) - entropy < 1e-3
    x = dist.sample(512, gen(10))
    lp = dl.log_prob(run, x)
    kl, kl_se = mean_se(dist.log_prob(x.double()) - lp)
    assert kl < 0.05 and kl - 3 * kl_se < 0.02, (kl, kl_se)  # measured: 0.004 +- 0.003
    mean, se = mean_se(lp)
    assert abs(mean + entropy) < 0.05 + 3 * se, (mean, se, entropy)


class TestCommand:
    def test_writes_log_p_and_prints_it_beside_log_q(self, default_run, tmp_path):
        x = seed_mixture().sample(32, gen(11)).numpy()
        np.save(tmp_path / "x.npy", x[:, 0])  # one column: the run's examples of shape (1,)
        out = tmp_path / "new" / "lp.npy"
        code, stdout, err = run_main("logprob", default_run, "--data", tmp_path / "x.npy", "--out", out)
        assert code == 0, err
        lp = np.load(out)
        assert lp.shape == (32,) and lp.dtype == np.float64
        expected = dl.log_prob(dl.load_run(default_run), torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(lp, expected, rtol=0, atol=1e-9)
        log_q = seed_mixture().log_prob(torch.from_numpy(x).double()).numpy()
        line, = stdout.strip().splitlines()
        assert f"mean {lp.mean():.4f} +- {lp.std(ddof=1) / math.sqrt(32):.4f}" in line
        assert f"exact log q(x) of seed_mixture: mean {log_q.mean():.4f}" in line and "data units" in line

    def test_bound_from_a_csv(self, default_run, tmp_path):
        x = seed_mixture().sample(50, gen(12)).numpy()
        np.savetxt(tmp_path / "x.csv", x, delimiter=",", header="x", comments="")
        out = tmp_path / "lb.npy"
        code, stdout, err = run_main("logprob", default_run, "--data", tmp_path / "x.csv", "--out", out,
                                     "--method", "bound", "--seed", "3")
        assert code == 0, err
        expected = dl.log_prob(dl.load_run(default_run), torch.from_numpy(x), method="bound", generator=gen(3))
        np.testing.assert_allclose(np.load(out), expected.numpy(), rtol=0, atol=1e-5)  # the csv's float32 text
        assert "-L (a lower bound on log p(x))" in stdout

    @pytest.mark.parametrize("case", ["wrong-dims", "nan-in-data", "missing-file", "out-exists", "out-not-npy",
                                      "not-a-run", "nan-weights"])
    def test_refusals_are_one_line_and_write_nothing(self, default_run, tmp_path, case):
        run = default_run
        data = tmp_path / "x.npy"
        np.save(data, seed_mixture().sample(5, gen(0)).numpy())
        out = tmp_path / "lp.npy"
        code, needle = 2, {"wrong-dims": "examples of shape (2,), but the run's data have shape (1,)",
                           "nan-in-data": "NaN at line 3", "missing-file": "no such file",
                           "out-exists": "exists; pass --force", "out-not-npy": "must name a .npy file",
                           "not-a-run": "is not a finished run", "nan-weights": "NaN or infinite"}[case]
        if case == "wrong-dims":
            np.save(data, np.zeros((5, 2)))
        elif case == "nan-in-data":
            data = tmp_path / "x.csv"
            data.write_text("1.0\n2.0\nnan\n")
        elif case == "missing-file":
            data = tmp_path / "none.npy"
        elif case == "out-exists":
            out.write_bytes(b"mine")
        elif case == "out-not-npy":
            out = tmp_path / "lp.txt"
        elif case == "not-a-run":
            run = tmp_path
        elif case == "nan-weights":
            import shutil

            run = tmp_path / "spoiled"
            shutil.copytree(default_run, run)
            spoil_weights_with_nan(run)
            code = 3
        before = tree(tmp_path)
        status, stdout, err = run_main("logprob", run, "--data", data, "--out", out)
        assert (status, stdout) == (code, "")
        line, = err.strip().splitlines()
        assert line.startswith("ddpmlab logprob: error: ") and needle in line, line
        assert tree(tmp_path) == before

"""The empirical optimum (the training set smoothed by the forward kernel) against brute-force float64
loops over the training points, chunked against unchunked, its samples against its training set; the copy
metrics against hand computations; the optimum distances against the optima themselves."""
import math
import subprocess
import sys

import numpy as np
import pytest
import torch

import ddpmlab as dl
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.continuous import ContinuousSchedule
from ddpmlab.core.paths import LinearPath, VPPath
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.evaluation.memorisation import copy_fraction, copy_threshold, crossover_t, optimum_distances
from ddpmlab.models.empirical_oracle import EmpiricalOracle, FlowEmpiricalOracle
from ddpmlab.models.empirical_sums import nearest_neighbours
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.objectives.flow_matching import stable_target
from ddpmlab.sampling.api import sample
from conftest import gen

SCHEDULE = make_schedule("linear", 20, beta_start=1e-3, beta_end=0.2)  # sigma_1 = 0.03 ... sigma_20 = 0.94


def _data(n: int, d: int, seed: int = 0) -> torch.Tensor:
    return 2.0 * torch.randn(n, d, generator=gen(seed), dtype=torch.float64)


def _training_points() -> torch.Tensor:
    """64 points of N(0, I) in 2-D: a copy radius (5th percentile of their own NN distances) of about 0.1."""
    return torch.randn(64, 2, generator=gen(0), dtype=torch.float64)


def brute_posterior(x: torch.Tensor, train: torch.Tensor, a: float, s: float):
    """log sum_i exp(-|x - a x_i|^2 / (2 s^2)), E[x_0 | x] and Var[x_0 | x] for one row x, by a plain loop
    over the training points in Python floats."""
    xs, pts = x.tolist(), train.tolist()
    logits = [-sum((xk - a * yk) ** 2 for xk, yk in zip(xs, y)) / (2 * s * s) for y in pts]
    top = max(logits)
    w = [math.exp(v - top) for v in logits]
    z = sum(w)
    mean = [sum(wi * y[k] for wi, y in zip(w, pts)) / z for k in range(len(xs))]
    var = [sum(wi * (y[k] - mean[k]) ** 2 for wi, y in zip(w, pts)) / z for k in range(len(xs))]
    return top + math.log(z), mean, var


class TestEmpiricalDenoiser:
    @pytest.mark.parametrize("d", [1, 2])
    def test_reverse_step_equals_brute_force_loop(self, d):
        train, x = _data(23, d), _data(6, d, seed=1)
        oracle = EmpiricalOracle(train, SCHEDULE)
        for t in (1, 2, 7, 20):
            p = oracle.p_mean_variance(x, torch.full((6,), t))
            a, s = SCHEDULE.sqrt_alphas_cumprod[t].item(), SCHEDULE.sqrt_one_minus_alphas_cumprod[t].item()
            c1, c2 = SCHEDULE.posterior_mean_coef1[t].item(), SCHEDULE.posterior_mean_coef2[t].item()
            for b in range(6):
                _, x0, var0 = brute_posterior(x[b], train, a, s)
                for k in range(d):
                    xb = x[b, k].item()
                    assert p.pred_x0[b, k].item() == pytest.approx(x0[k], abs=1e-9)
                    assert p.pred_eps[b, k].item() == pytest.approx((xb - a * x0[k]) / s, abs=1e-9)
                    assert p.mean[b, k].item() == pytest.approx(c1 * x0[k] + c2 * xb, abs=1e-9)
                    assert p.variance[b, k].item() == pytest.approx(
                        SCHEDULE.posterior_variance[t].item() + c1 * c1 * var0[k], abs=1e-9)

    def test_mixed_steps_in_one_batch_are_each_their_own(self):
        train, x = _data(23, 2), _data(4, 2, seed=1)
        oracle = EmpiricalOracle(train, SCHEDULE)
        t = torch.tensor([1, 20, 5, 1])
        mixed = oracle.p_mean_variance(x, t)
        for b in range(4):
            alone = oracle.p_mean_variance(x[b:b + 1], t[b:b + 1])
            for f, g in zip(mixed, alone):
                assert torch.allclose(f[b], g[0], rtol=0, atol=1e-12)

    @pytest.mark.parametrize("d", [1, 2])
    def test_log_density_and_score_equal_brute_force(self, d):
        train, x = _data(17, d), _data(5, d, seed=2)
        oracle = EmpiricalOracle(train, SCHEDULE)
        for ab in (0.999, 0.6, 0.05):
            a, s = math.sqrt(ab), math.sqrt(1 - ab)
            log_q, score = oracle.q_log_prob(x, ab), oracle.q_score(x, ab)
            for b in range(5):
                lse, x0, _ = brute_posterior(x[b], train, a, s)
                want = lse - math.log(17) - 0.5 * d * math.log(2 * math.pi * s * s)
                assert log_q[b].item() == pytest.approx(want, rel=1e-12, abs=1e-9)
                for k in range(d):
                    assert score[b, k].item() == pytest.approx(-(x[b, k].item() - a * x0[k]) / (s * s), abs=1e-9)

    def test_score_is_the_gradient_of_the_log_density(self):
        train = _data(30, 2)
        x = _data(5, 2, seed=4).requires_grad_(True)
        oracle = EmpiricalOracle(train, SCHEDULE)
        (grad,) = torch.autograd.grad(oracle.q_log_prob(x, 0.3).sum(), x)
        assert torch.allclose(grad, oracle.q_score(x.detach(), 0.3), atol=1e-10)

    @pytest.mark.parametrize("chunk", [1, 4, 7])
    def test_chunked_equals_unchunked(self, chunk):
        train, x = _data(29, 2), _data(9, 2, seed=1)
        whole = EmpiricalOracle(train, SCHEDULE, chunk_size=29)
        chunked = EmpiricalOracle(train, SCHEDULE, chunk_size=chunk)
        for t in (1, 3, 20):
            p, q = whole.p_mean_variance(x, t), chunked.p_mean_variance(x, t)
            for name in ("mean", "variance", "pred_x0", "pred_eps"):  # the log of a ~0 variance is noise
                assert torch.allclose(getattr(p, name), getattr(q, name), rtol=1e-12, atol=1e-12), (t, name)
        assert torch.allclose(whole.q_log_prob(x, 0.5), chunked.q_log_prob(x, 0.5), rtol=1e-13)
        d1, i1 = nearest_neighbours(x, train, chunk_size=29)
        d2, i2 = nearest_neighbours(x, train, chunk_size=chunk)
        assert torch.equal(i1, i2) and torch.allclose(d1, d2, rtol=0, atol=1e-14)

    def test_respaced_optimum_keeps_each_kept_step(self):
        train, x = _data(15, 2), _data(4, 2, seed=1)
        oracle = EmpiricalOracle(train, SCHEDULE)
        fewer = oracle.respaced(5)
        for i, step in enumerate(SCHEDULE.spaced_steps(5), start=1):  # the same alpha-bar: the same E[x_0 | x_t]
            assert torch.allclose(fewer.p_mean_variance(x, i).pred_x0, oracle.p_mean_variance(x, step).pred_x0,
                                  atol=1e-12)
        assert oracle.respaced(SCHEDULE.T) is oracle

    def test_one_image_shape(self):
        train = _data(12, 4).reshape(12, 1, 2, 2)
        oracle = EmpiricalOracle(train, SCHEDULE)
        flat = EmpiricalOracle(train.reshape(12, 4), SCHEDULE, data_shape=(1, 2, 2))
        x = _data(3, 4, seed=1).reshape(3, 1, 2, 2)
        assert oracle.data_shape == (1, 2, 2) and oracle.p_mean_variance(x, 3).pred_x0.shape == (3, 1, 2, 2)
        assert torch.equal(oracle.p_mean_variance(x, 3).mean, flat.p_mean_variance(x, 3).mean)

    def test_bad_input_is_one_line(self):
        oracle = EmpiricalOracle(_data(5, 2), SCHEDULE)
        with pytest.raises(DDPMLabError, match="t = 1..20"):
            oracle.p_mean_variance(_data(2, 2), 0)
        with pytest.raises(DDPMLabError, match="no condition"):
            oracle.p_mean_variance(_data(2, 2), 1, cond=torch.zeros(2).long())
        with pytest.raises(DDPMLabError, match="NaN"):
            EmpiricalOracle(torch.tensor([[0.0, math.nan], [1.0, 2.0]]), SCHEDULE)
        with pytest.raises(DDPMLabError, match="NoiseSchedule"):
            EmpiricalOracle(_data(5, 2), LinearPath())
        with pytest.raises(DDPMLabError, match="chunk_size"):
            EmpiricalOracle(_data(5, 2), SCHEDULE, chunk_size=0)
        with pytest.raises(DDPMLabError, match="data shape"):
            EmpiricalOracle(_data(5, 2), SCHEDULE, data_shape=(3,))

    def test_exported_and_picked_by_family(self):
        assert dl.EmpiricalOracle is EmpiricalOracle and dl.FlowEmpiricalOracle is FlowEmpiricalOracle
        train = _data(5, 2)
        ddpm = MixtureOracle(GaussianMixture([1.0], [[0.0, 0.0]], [1.0]), SCHEDULE)
        assert isinstance(dl.family_of(ddpm).empirical_oracle(ddpm, train), EmpiricalOracle)
        exact_flow = FlowMixtureOracle(GaussianMixture([1.0], [[0.0, 0.0]], [1.0]))
        flow = dl.family_of(exact_flow).empirical_oracle(exact_flow, train)
        assert isinstance(flow, FlowEmpiricalOracle) and flow.family == "flow"


class TestEmpiricalFlow:
    @pytest.mark.parametrize("d", [1, 2])
    def test_velocity_equals_brute_force_loop(self, d):
        train, x = _data(19, d), _data(5, d, seed=1)
        oracle = FlowEmpiricalOracle(train)
        for t in (0.01, 0.3, 0.9, 1.0):
            v = oracle.velocity(x, t)
            for b in range(5):
                _, x0, _ = brute_posterior(x[b], train, 1 - t, t)
                for k in range(d):  # v = E[eps - x_0 | x] with eps = (x - (1 - t) x_0) / t
                    want = (x[b, k].item() - (1 - t) * x0[k]) / t - x0[k]
                    assert v[b, k].item() == pytest.approx(want, abs=1e-9), (t, b, k)

    def test_at_the_data_the_posterior_is_the_nearest_point(self):
        train = _data(19, 2)
        x = torch.cat([_data(5, 2, seed=1), torch.tensor([[100.0, -80.0]], dtype=torch.float64)])  # and far off
        x0, eps = FlowEmpiricalOracle(train).posterior_means(x, 0.0)
        _, idx = nearest_neighbours(x, train)
        assert torch.equal(x0, train[idx]) and torch.equal(eps, torch.zeros_like(eps))

    def test_velocity_equals_the_stable_target_of_the_same_batch(self):
        """The stable target (Xu et al. 2023, ``objectives.flow_matching``) is the exact velocity of the batch's
        empirical distribution, computed independently (its own row once, softmax in float32)."""
        x0 = _data(64, 2, seed=5).float()
        eps = torch.randn(64, 2, generator=gen(6))
        for tv in (0.2, 0.7):
            t = torch.full((64,), tv, dtype=torch.float64)
            x_t = ((1 - tv) * x0.double() + tv * eps.double())
            ours = FlowEmpiricalOracle(x0).velocity(x_t, tv)
            assert torch.allclose(stable_target(LinearPath(), x0, eps, t).double(), ours, atol=2e-4), tv

    def test_per_row_times_equal_one_time_each(self):
        train, x = _data(19, 2), _data(3, 2, seed=1)
        oracle = FlowEmpiricalOracle(train)
        t = torch.tensor([0.1, 0.5, 0.95], dtype=torch.float64)
        v = oracle.velocity(x, t)
        for b in range(3):
            assert torch.allclose(v[b], oracle.velocity(x[b:b + 1], float(t[b]))[0], atol=1e-12)

    def test_refuses_what_a_flow_has_not(self):
        oracle = FlowEmpiricalOracle(_data(5, 2))
        assert not isinstance(oracle, dl.ReverseModel) and isinstance(oracle, dl.VelocityModel)
        with pytest.raises(DDPMLabError, match="sampler = 'ode'"):
            dl.sample(oracle, 2, "ancestral", 4)
        with pytest.raises(DDPMLabError, match="no density"):
            oracle.q_log_prob(_data(2, 2), 0.0)


class TestSamplesAreCopies:
    """The empirical optimum's samples are its training points: at the smallest step its posterior sits on
    one point (or a pair closer than the noise there), so every sampler ends on one."""

    @pytest.mark.parametrize("sampler", ["ancestral", "ddim", "ode"])
    def test_ddpm_samplers_end_on_training_points(self, sampler):
        train = _training_points()
        samples = sample(EmpiricalOracle(train, make_schedule("linear", 100)), 300, sampler, 0, gen(1))
        assert copy_fraction(samples, train, copy_threshold(train)) == 1.0
        dist, idx = nearest_neighbours(samples, train)
        assert float(dist.median()) < 1e-6 and len(set(idx.tolist())) >= 50  # on the points, and many of them

    def test_flow_euler_ends_on_training_points(self):
        train = _training_points()
        samples = sample(FlowEmpiricalOracle(train), 300, "ode", 50, gen(1), solver="euler")
        assert copy_fraction(samples, train) == 1.0

    def test_true_samples_are_seldom_copies(self):
        train = _training_points()
        assert copy_fraction(torch.randn(2000, 2, generator=gen(2)), train) < 0.3


class TestCopyMetrics:
    POINTS = torch.tensor([[0.0], [1.0], [3.0], [6.0], [10.5]], dtype=torch.float64)  # own NN: 1, 1, 2, 3, 4.5

    def test_threshold_by_hand(self):
        # sorted distances 1, 1, 2, 3, 4.5; the q-quantile sits at position q (n - 1) = 4 q
        assert copy_threshold(self.POINTS) == pytest.approx(1.0)  # 0.05: position 0.2, between 1 and 1
        assert copy_threshold(self.POINTS, 0.3) == pytest.approx(1.2)  # position 1.2: 1 + 0.2 (2 - 1)
        assert copy_threshold(self.POINTS, 0.9) == pytest.approx(3.9)  # position 3.6: 3 + 0.6 (4.5 - 3)
        assert copy_threshold(torch.tensor([[0.0], [0.0], [5.0]])) == 0.0  # duplicates are each other's copies

    def test_threshold_equals_numpy_on_leave_one_out_distances(self):
        x = _data(40, 3, seed=7)
        loo = [min(np.linalg.norm(x[i] - x[j]) for j in range(40) if j != i) for i in range(40)]
        assert copy_threshold(x) == pytest.approx(float(np.percentile(loo, 5)), abs=1e-12)

    def test_fraction_by_hand(self):
        samples = torch.tensor([[0.4], [2.9], [5.0], [20.0]], dtype=torch.float64)  # nearest: 0.4, 0.1, 1, 9.5
        assert copy_fraction(samples, self.POINTS, 0.5) == 0.5
        assert copy_fraction(samples, self.POINTS, 0.4) == 0.5  # at the threshold counts
        assert copy_fraction(samples, self.POINTS, 0.39) == 0.25
        assert copy_fraction(samples, self.POINTS, 10.0) == 1.0
        assert copy_fraction(samples, self.POINTS) == 0.75  # the default threshold, 1.0: 0.4, 0.1 and 1.0

    def test_nearest_neighbours_equal_brute_force(self):
        x, train = _data(33, 2, seed=8), _data(57, 2, seed=9)
        dist, idx = nearest_neighbours(x, train, chunk_size=5)
        for b in range(33):
            d = [math.dist(x[b].tolist(), y) for y in train.tolist()]
            assert idx[b].item() == int(np.argmin(d)) and dist[b].item() == pytest.approx(min(d), abs=1e-12)

    def test_bad_input_is_one_line(self):
        with pytest.raises(DDPMLabError, match="cannot be compared"):
            copy_fraction(torch.zeros(3, 2), self.POINTS, 1.0)
        with pytest.raises(DDPMLabError, match=">= 0"):
            copy_fraction(self.POINTS, self.POINTS, -1.0)
        with pytest.raises(DDPMLabError, match=r"\[0, 1\]"):
            copy_threshold(self.POINTS, 5)
        with pytest.raises(DDPMLabError, match="N >= 2"):
            copy_threshold(self.POINTS[:1])


class TestOptimumDistances:
    MIX = GaussianMixture([1.0, 2.0], [[-2.0, 0.0], [1.5, 1.0]], [0.3, 0.5])

    def _optima(self):
        train = self.MIX.sample(40, gen(1), dtype=torch.float64)
        return train, MixtureOracle(self.MIX, SCHEDULE), EmpiricalOracle(train, SCHEDULE)

    def test_each_optimum_against_itself(self):
        _, pop, emp = self._optima()
        held = self.MIX.sample(50, gen(2), dtype=torch.float64)
        ts = [1, 3, 10, 20]
        as_pop = optimum_distances(pop, pop, emp, held, ts, gen(3))
        as_emp = optimum_distances(emp, pop, emp, held, ts, gen(3))
        assert as_pop["model_vs_population"] == [0.0] * 4 and as_emp["model_vs_empirical"] == [0.0] * 4
        assert as_pop["model_vs_empirical"] == as_pop["population_vs_empirical"] == as_emp["model_vs_population"]
        assert crossover_t(as_pop) == 1 and crossover_t(as_emp) is None
        assert as_pop["t"] == ts and as_pop["n"] == 50

    def test_distance_by_hand(self):
        """population_vs_empirical at one step: the same x_t drawn by hand, the two posterior means compared."""
        _, pop, emp = self._optima()
        held = self.MIX.sample(30, gen(2), dtype=torch.float64)
        r = optimum_distances(pop, pop, emp, held, [4], gen(5))
        eps = torch.randn(held.shape, generator=gen(5), dtype=torch.float64)
        x_t = SCHEDULE.sqrt_alphas_cumprod[4] * held + SCHEDULE.sqrt_one_minus_alphas_cumprod[4] * eps
        diff = pop.p_mean_variance(x_t, 4).pred_x0 - emp.p_mean_variance(x_t, 4).pred_x0
        per_example = diff.square().mean(1)
        assert r["population_vs_empirical"][0] == pytest.approx(float(per_example.mean()), rel=1e-12)
        se = float(per_example.std()) / math.sqrt(30)
        assert r["population_vs_empirical_se"][0] == pytest.approx(se, rel=1e-9)
        assert r["difference_se"][0] == pytest.approx(se, rel=1e-9)  # model = population: 0 - the same

    @pytest.mark.parametrize("path", [LinearPath(), VPPath(ContinuousSchedule(SCHEDULE))], ids=["linear", "vp"])
    def test_flow_optima(self, path):
        train = self.MIX.sample(40, gen(1), dtype=torch.float64)
        pop, emp = FlowMixtureOracle(self.MIX, path), FlowEmpiricalOracle(train, path)
        held = self.MIX.sample(30, gen(2), dtype=torch.float64)
        r = optimum_distances(emp, pop, emp, held, [0.05, 0.5, 1.0], gen(3))
        assert max(r["model_vs_empirical"]) < 1e-20 and crossover_t(r) is None
        eps = torch.randn(held.shape, generator=gen(3), dtype=torch.float64)
        x_t = path.alpha(0.05) * held + path.sigma(0.05) * eps  # the x_0 each velocity implies: each posterior mean
        diff = pop.posterior_means(x_t, 0.05)[0] - emp.posterior_means(x_t, 0.05)[0]
        assert r["population_vs_empirical"][0] == pytest.approx(float(diff.square().mean()), rel=1e-9)

    def test_crossover_by_hand(self):
        r = {"t": [1, 2, 3, 4], "model_vs_population": [0.5, 0.2, 0.1, 0.0], "model_vs_empirical": [0.1, 0.2, 0.3, 0.4]}
        assert crossover_t(r) == 3  # at t = 2 a tie: not yet nearer the population optimum
        assert crossover_t({**r, "model_vs_population": [1.0] * 4}) is None

    def test_far_apart_where_little_noise_together_where_much(self):
        _, pop, emp = self._optima()
        held = self.MIX.sample(200, gen(2), dtype=torch.float64)
        gap = optimum_distances(pop, pop, emp, held, [1, 20], gen(3))["population_vs_empirical"]
        assert gap[0] > 10 * gap[1]

    def test_bad_times(self):
        _, pop, emp = self._optima()
        held = self.MIX.sample(5, gen(2), dtype=torch.float64)
        for ts in ([0], [21], [1.5], [], "late"):
            with pytest.raises(DDPMLabError):
                optimum_distances(pop, pop, emp, held, ts)
        flow = FlowMixtureOracle(self.MIX)
        with pytest.raises(DDPMLabError, match=r"\(0, 1\]"):
            optimum_distances(flow, flow, FlowEmpiricalOracle(held), held, [0.0])


MEMORY_PROBE = """
import resource, torch
from ddpmlab.core.schedule import make_schedule
from ddpmlab.models.empirical_oracle import EmpiricalOracle
from ddpmlab.models.empirical_sums import nearest_neighbours
torch.set_num_threads(1)
g = torch.Generator().manual_seed(0)
oracle = EmpiricalOracle(torch.randn(50_000, 2, generator=g), make_schedule("linear", 100))
x = torch.randn(500, 2, generator=g)
oracle.p_mean_variance(x[:2], 5)  # warm up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
p = oracle.p_mean_variance(x, 5)
nearest_neighbours(x, oracle.train)
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)
"""


def test_fifty_thousand_points_in_bounded_memory():
    """500 rows against 50,000 points: whole (500, 50,000) matrices would take 200 MB each; in chunks the
    peak grows by a few of ``CHUNK_ENTRIES``' 8 MB (about 50 MB; 570 MB unchunked)."""
    r = subprocess.run([sys.executable, "-c", MEMORY_PROBE], capture_output=True, text=True, timeout=120,
                       env={"OMP_NUM_THREADS": "1", "PATH": ""})
    assert r.returncode == 0, r.stderr
    grown_mb = float(r.stdout.strip().splitlines()[-1])
    assert grown_mb < 120, grown_mb

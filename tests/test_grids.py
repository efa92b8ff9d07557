"""Time grids (``ddpmlab.sampling.grids``) against their closed forms, every sampler on every grid that applies
on the exact oracles, callbacks, and the grid's path from the config and the command line."""
import math

import numpy as np
import pytest
import torch

import ddpmlab as dl
from conftest import gen, mixture_2d
from ddpmlab.cli import main
from ddpmlab.config.schema import from_dict, load_config
from ddpmlab.core.distributions import seed_mixture
from ddpmlab.evaluation.metrics import w1_to_mixture_1d
from ddpmlab.sampling.grids import EDM_SIGMA_RANGE, ESSER_SHIFT, TIME_GRIDS, build_grid
from ddpmlab.sampling.registry import ODE_SOLVERS

T = 100
DDPM_GRIDS = ("uniform", "karras", "log_snr")  # the shifted grid is a flow's


def ddpm_oracle(kind="linear", steps=T):
    options = dict(beta_start=1e-3, beta_end=0.1) if kind == "linear" else {}
    return dl.MixtureOracle(seed_mixture(), dl.make_schedule(kind, steps, **options))


def flow_oracle():
    return dl.FlowMixtureOracle(mixture_2d())


def log_sigmas(schedule) -> torch.Tensor:
    """log sigma_t = 1/2 log((1 - abar_t) / abar_t) for t = 0..T (-inf at t = 0)."""
    abar = schedule.alphas_cumprod
    return 0.5 * ((1 - abar).log() - abar.log())


def edm_sigmas(n, sigma_min, sigma_max, rho):
    """Karras et al. 2022, eq. 5, one noise level at a time."""
    return [(sigma_max ** (1 / rho) + i / (n - 1) * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
            for i in range(n)]


def sigma_bounds(schedule):
    ls = log_sigmas(schedule)
    return max(math.exp(ls[1].item()), EDM_SIGMA_RANGE[0]), min(math.exp(ls[-1].item()), EDM_SIGMA_RANGE[1])


class TestClosedForms:
    @pytest.mark.parametrize("steps", [1, 7, 25, T])
    def test_uniform_ddpm_grid_is_the_evenly_kept_steps(self, steps):
        """The steps every sampler used before grids existed (``spaced_steps``), each within half a step of
        T (K - i) / K."""
        sched = ddpm_oracle().schedule
        g = build_grid(ddpm_oracle(), "uniform", steps).tolist()
        assert g == sched.spaced_steps(steps)[::-1] + [0]
        assert all(abs(s - T * (steps - i) / steps) <= 0.5 for i, s in enumerate(g[:-1]))
        assert build_grid(ddpm_oracle(), "uniform", 0).tolist() == list(range(T, -1, -1))  # 0 steps: all T

    @pytest.mark.parametrize("grid, shift", [("uniform", 1.0), ("uniform", 0.5), ("shifted", ESSER_SHIFT),
                                             ("shifted", 7.0)])
    def test_flow_time_grids(self, grid, shift):
        """t_i = k u / (1 + (k - 1) u), u = 1 - i / K (Esser et al. 2024, eq. 23); k = 1 is uniform in t,
        and the shifted grid's default k is 3."""
        K = 12
        options = {} if (grid, shift) in (("uniform", 1.0), ("shifted", ESSER_SHIFT)) else {"shift": shift}
        g = build_grid(flow_oracle(), grid, K, **options)
        u = 1 - torch.arange(K + 1, dtype=torch.float64) / K
        torch.testing.assert_close(g, shift * u / (1 + (shift - 1) * u), rtol=0, atol=1e-15)

    @pytest.mark.parametrize("rho", [7.0, 3.0])
    def test_karras_flow_grid(self, rho):
        """t = sigma / (1 + sigma) of EDM's sigmas over EDM's range, after the prior's t = 1, then t = 0."""
        K = 10
        g = build_grid(flow_oracle(), "karras", K, **({} if rho == 7.0 else {"rho": rho}))
        sig = torch.tensor(edm_sigmas(K, *EDM_SIGMA_RANGE, rho), dtype=torch.float64)
        assert g[0] == 1 and g[-1] == 0 and g.numel() == K + 1
        torch.testing.assert_close(g[1:K], (sig / (1 + sig))[1:], rtol=1e-13, atol=0)

    def test_log_snr_flow_grid_is_even_in_log_snr(self):
        """lambda = 2 log((1 - t) / t) evenly spaced from -2 log 80 to -2 log 0.002."""
        K = 9
        t = build_grid(flow_oracle(), "log_snr", K)[1:K]
        lam = 2 * torch.log((1 - t) / t)
        ends = [-2 * math.log(EDM_SIGMA_RANGE[1]), -2 * math.log(EDM_SIGMA_RANGE[0])]
        torch.testing.assert_close(lam, torch.linspace(*ends, K, dtype=torch.float64)[1:], rtol=0, atol=1e-11)

    @pytest.mark.parametrize("kind", ["linear", "cosine"])
    @pytest.mark.parametrize("grid", ["karras", "log_snr"])
    def test_ddpm_noise_grids_take_the_nearest_steps(self, kind, grid):
        """Step T first (the prior), then each sigma_i's nearest step in log sigma (by brute force over every
        step), sigma_i from EDM's formula / evenly in log-SNR over sigma(1)..sigma(T) within EDM's range."""
        oracle = ddpm_oracle(kind)
        K, (lo, hi) = 12, sigma_bounds(oracle.schedule)
        if grid == "karras":
            sig = edm_sigmas(K, lo, hi, 7.0)
        else:
            sig = [math.exp(-0.5 * lam) for lam in np.linspace(-2 * math.log(hi), -2 * math.log(lo), K)]
        ls = log_sigmas(oracle.schedule)[1:]
        nearest = [int((ls - math.log(s)).abs().argmin()) + 1 for s in sig]
        g = build_grid(oracle, grid, K).tolist()
        assert g[0] == T and g[-1] == 0 and len(g) == K + 1
        assert len(set(nearest[1:])) == K - 1  # no two collide at this K: the grid is the nearest steps
        assert g[1:-1] == nearest[1:]

    @pytest.mark.parametrize("steps", [40, 99, 100])
    def test_ddpm_noise_grids_keep_every_step_distinct(self, steps):
        """Where the nearest steps collide (dense steps at low noise), K steps stay K distinct steps."""
        for grid in ("karras", "log_snr"):
            g = build_grid(ddpm_oracle(), grid, steps).tolist()
            assert len(g) == steps + 1 and g[0] == T and g[-1] == 0 and len(set(g)) == len(g)

    def test_every_grid_runs_down_to_the_data(self):
        for model, names in ((ddpm_oracle("cosine"), DDPM_GRIDS), (flow_oracle(), TIME_GRIDS.names())):
            for name in names:
                for steps in (1, 2, 5, 30):
                    g = build_grid(model, name, steps)
                    assert g.numel() == steps + 1 and bool((g[1:] < g[:-1]).all()), (name, steps, g)
                    assert g[-1] == 0


def exact_w1(dist, sampler, grid, steps, seed, **options):
    return w1_to_mixture_1d(dist, dl.sample(ORACLE_25, 10_000, sampler, steps, gen(seed), grid=grid, **options))


ORACLE_25 = dl.MixtureOracle(seed_mixture(), dl.make_schedule("linear", 250, beta_start=4e-4, beta_end=0.08))


class TestSamplers:
    @pytest.mark.parametrize("grid", DDPM_GRIDS)
    @pytest.mark.parametrize("sampler, solver", [("ancestral", None), ("ddim", None)]
                             + [("ode", s) for s in ODE_SOLVERS.names()])
    def test_every_ddpm_sampler_on_every_grid(self, sampler, solver, grid):
        """On the exact oracle, finite samples near the data (W1 well below the modes' distance of 8),
        and the callback sees every step of the grid, the last state being the sample."""
        oracle, K, seen = ddpm_oracle(), 8, []
        options = {"solver": solver} if solver else {}
        x = dl.sample(oracle, 400, sampler, K, gen(1), grid=grid, callback=lambda i, t, x: seen.append((i, t, x)),
                      **options)
        g = build_grid(oracle, grid, K).tolist()
        assert [(i, t) for i, t, _ in seen] == list(enumerate(g[1:]))
        assert torch.equal(seen[-1][2], x) and bool(torch.isfinite(x).all())
        assert w1_to_mixture_1d(oracle.dist, x) < 1.0

    @pytest.mark.parametrize("grid", TIME_GRIDS.names())
    @pytest.mark.parametrize("solver", ["euler", "midpoint", "heun", "rk45"])
    def test_every_flow_solver_on_every_grid(self, solver, grid):
        oracle, K, seen = flow_oracle(), 6, []
        x = dl.sample(oracle, 200, "ode", K, gen(2), grid=grid, solver=solver,
                      callback=lambda i, t, x: seen.append((i, t, x)))
        assert [(i, t) for i, t, _ in seen] == list(enumerate(build_grid(oracle, grid, K).tolist()[1:]))
        assert torch.equal(seen[-1][2], x) and bool(torch.isfinite(x).all())
        d = oracle.dist
        assert (x.mean(0) - (d.weights[:, None] * d.means).sum(0) / d.weights.sum()).abs().max() < 0.5

    def test_the_trajectory_is_the_callbacks_states(self):
        """keep_trajectory is built on the callbacks: x_T, then each step's state, reversed (x_0 first)."""
        oracle, seen = ddpm_oracle(), []
        traj = dl.sample(oracle, 50, "ddim", 6, gen(3), grid="karras", keep_trajectory=True, eta=0.5,
                         callback=lambda i, t, x: seen.append(x))
        assert traj.shape == (7, 50, 1)
        assert torch.equal(traj, torch.stack([torch.randn(50, 1, generator=gen(3)).double()] + seen).flip(0))

    def test_ancestral_on_a_noise_grid_is_the_respaced_chain(self):
        """Ancestral sampling on karras steps is the chain of the schedule respaced onto them (improved-
        diffusion's respace: the kept alpha-bars), step for step."""
        oracle, K = ddpm_oracle(), 9
        g = build_grid(oracle, "karras", K).tolist()
        respaced = dl.MixtureOracle(oracle.dist, oracle.schedule.respace(g[:-1]))
        a = dl.sample(oracle, 300, "ancestral", K, gen(4), grid="karras")
        b = dl.sample(respaced, 300, "ancestral", generator=gen(4))
        assert torch.equal(a, b)

    def test_a_grid_given_as_a_tensor_is_the_named_one(self):
        oracle = ddpm_oracle()
        g = build_grid(oracle, "log_snr", 7)
        assert torch.equal(dl.sample(oracle, 100, "ode", generator=gen(5), grid=g),
                           dl.sample(oracle, 100, "ode", 7, gen(5), grid="log_snr"))
        f = flow_oracle()
        t = torch.tensor([1.0, 0.6, 0.3, 0.1, 0.0])
        assert dl.sample(f, 20, "ode", generator=gen(5), grid=t, solver="euler").shape == (20, 2)

    def test_karras_at_25_ddim_steps_is_within_noise_of_uniform(self):
        """Sanity, not a tight bound: on the exact oracle, 25 DDIM steps on EDM's spacing land within three
        noise floors (W1 of 10,000 true draws) of the uniform grid's W1, averaged over two seeds."""
        dist = ORACLE_25.dist
        floor = np.mean([w1_to_mixture_1d(dist, dist.sample(10_000, gen(s), dtype=torch.float64)) for s in (0, 1)])
        uniform = np.mean([exact_w1(dist, "ddim", "uniform", 25, s) for s in (0, 1)])
        karras = np.mean([exact_w1(dist, "ddim", "karras", 25, s) for s in (0, 1)])
        assert abs(karras - uniform) < 3 * floor, (karras, uniform, floor)
        assert karras < 10 * floor  # far from the prior's W1 (about 4)


class TestRefusals:
    @pytest.mark.parametrize("call, message", [
        (lambda: build_grid(ddpm_oracle(), "nope", 5), "unknown time grid 'nope'; choose one of uniform"),
        (lambda: build_grid(ddpm_oracle(), "shifted", 5), "flow option"),
        (lambda: build_grid(ddpm_oracle(), "uniform", 5, shift=2.0), "flow option"),
        (lambda: build_grid(flow_oracle(), "karras", 5, shift=2.0), "the karras grid takes no option shift"),
        (lambda: build_grid(flow_oracle(), "karras", 5, rho=0.5), "rho must be in [1, 100]"),
        (lambda: build_grid(flow_oracle(), "log_snr", 0), "a flow's ODE needs the number of steps"),
        (lambda: build_grid(ddpm_oracle(), "karras", T + 1), f"steps must lie in 1..{T}"),
        (lambda: build_grid(ddpm_oracle(), torch.tensor([T, 50, 60, 0])), "a grid runs strictly down"),
        (lambda: build_grid(ddpm_oracle(), torch.tensor([T - 1, 50, 0])), "a grid runs strictly down"),
        (lambda: build_grid(ddpm_oracle(), torch.tensor([1.0, 0.5, 0.0])), "a DDPM's grid is whole steps"),
        (lambda: build_grid(flow_oracle(), torch.tensor([3, 1, 0])), "a flow's grid is times"),
        (lambda: build_grid(flow_oracle(), torch.tensor([1.0, 0.5, 0.0]), 2), "takes no steps"),
        (lambda: dl.sample(ddpm_oracle(), 5, "ddim", 5, grid="karras", rho=3.0, eta=2.0), "eta must be in"),
        (lambda: dl.sample(ddpm_oracle(), 5, "ddim", 5, grid="uniform", rho=3.0), "uniform grid takes no option rho"),
    ])
    def test_one_line(self, call, message):
        with pytest.raises(dl.DDPMLabError, match=message.replace("(", r"\(").replace("[", r"\[")):
            call()

    def test_the_config_validates_the_grid_before_training(self):
        assert load_config("default").sample.grid == "uniform"
        old = load_config("default").to_dict()
        del old["sample"]["grid"]  # a run written before sample.grid
        assert from_dict(old).sample.grid == "uniform"
        assert load_config("flow", ["sample.grid=karras"]).sample.grid == "karras"
        for config, overrides, message in [
                ("default", ["sample.grid=shifted"], "sample.grid = 'shifted': the time shift"),
                ("flow", ["sample.grid=log_snr", "sample.time_shift=3"], "the log_snr grid takes no option shift"),
                ("default", ["sample.grid=fine"], "sample.grid = 'fine' is not one of uniform")]:
            with pytest.raises(dl.DDPMLabError, match=message):
                load_config(config, overrides)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    tiny = ["--set", "schedule.steps=20", "--set", "model.width=16", "--set", "model.depth=1", "--set",
            "train.iters=3", "--set", "train.batch_size=32"]
    assert main(["train", "--config", "default", "--out", str(out), "--no-progress", *tiny]) == 0
    return out


def test_sample_cli_takes_a_grid(run_dir, tmp_path, capsys):
    """``--grid`` picks the grid (karras differs from uniform on the same seed); a flow grid on a DDPM run
    and a time shift on the karras grid are refused in one line, writing nothing."""
    outs = {}
    for grid in ("uniform", "karras"):
        outs[grid] = tmp_path / f"{grid}.npy"
        assert main(["sample", str(run_dir), "-n", "30", "--sampler", "ddim", "--steps", "6", "--grid", grid,
                     "--out", str(outs[grid])]) == 0
    assert not np.array_equal(np.load(outs["uniform"]), np.load(outs["karras"]))
    assert main(["sample", str(run_dir), "-n", "5", "--grid", "shifted", "--out", str(tmp_path / "x.npy")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ddpmlab sample: error: --grid shifted: sample.grid = 'shifted'")
    assert not (tmp_path / "x.npy").exists()

"""Flow matching beside DDPM (issue 15): the exact velocity oracle against Monte Carlo and against the
DDPM oracle's probability-flow drift, the exact flow's ODE likelihood against the data's entropy, the
solvers' orders, refusals, and a tiny flow trained, saved, loaded and sampled from the command line."""
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import ddpmlab as dl
from conftest import gen, mixture_2d
from ddpmlab.config.schema import load_config
from ddpmlab.core.continuous import ContinuousSchedule
from ddpmlab.core.distributions import seed_mixture
from ddpmlab.core.paths import VPPath, shifted_grid
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.evaluation.metrics import mixture_entropy_1d
from ddpmlab.evaluation.ode import ode_log_likelihood
from ddpmlab.models.flow_model import FlowModel
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.objectives.flow_matching import FlowMatching
from ddpmlab.training.trainer import Trainer
from hostile_support import run_main

SRC = str(Path(__file__).resolve().parents[1] / "src")


def test_oracle_flow_ode_likelihood_is_the_exact_entropy():
    """int q(x) log p_ODE(x) dx by quadrature on a fine grid, with the exact prior (N(0, I) at t = 1 on
    the linear path), equals the entropy by scipy quad to 1e-3 nats; pointwise log p = log q."""
    dist = seed_mixture()
    oracle = FlowMixtureOracle(dist)
    x = torch.linspace(-11.0, 11.0, 441, dtype=torch.float64)[:, None]
    r = ode_log_likelihood(oracle, x, prior="exact", rtol=1e-8, atol=1e-8)
    ll = r["log_likelihood"]
    q = dist.log_prob(x).exp()
    h = float(x[1, 0] - x[0, 0])
    entropy_ode = -float(torch.trapezoid(q * ll, dx=h))
    assert abs(entropy_ode - mixture_entropy_1d(dist)) < 1e-3
    assert float((ll - dist.log_prob(x)).abs().max()) < 1e-4
    normal = -0.5 * (r["x_T"][:, 0] ** 2 + math.log(2 * math.pi))  # q(x_1) is N(0, 1) exactly
    torch.testing.assert_close(r["prior_log_prob"], normal, atol=1e-12, rtol=0)


def test_solver_orders_on_the_exact_flow():
    """Against a tight rk45 solution: Euler's error halves, Heun's and the midpoint's quarter per doubling."""
    oracle = FlowMixtureOracle(seed_mixture())
    x_T = torch.randn(1000, 1, generator=gen(1), dtype=torch.float64)
    exact = dl.sample(oracle, 1000, "ode", steps=8, solver="rk45", x_T=x_T, rtol=1e-10, atol=1e-10)
    ratios = {}
    for solver in ("euler", "heun", "midpoint"):
        err = [float((dl.sample(oracle, 1000, "ode", steps=k, solver=solver, x_T=x_T) - exact).abs().mean())
               for k in (16, 32, 64)]
        ratios[solver] = [err[i] / err[i + 1] for i in range(2)]
    assert all(1.8 < r < 2.2 for r in ratios["euler"]), ratios
    assert all(3.4 < r < 4.6 for r in ratios["heun"] + ratios["midpoint"]), ratios


def test_velocity_oracle_matches_monte_carlo_in_bins():
    """E[eps - x_0 | x_t in bin] estimated by Monte Carlo equals the bin's average exact velocity within
    its standard error, in 2-D at t = 0.4 (the same draws, so only the conditional noise remains)."""
    dist = mixture_2d()
    oracle = FlowMixtureOracle(dist)
    n, t = 200_000, 0.4
    x0 = dist.sample(n, gen(0), dtype=torch.float64)
    eps = torch.randn(n, 2, generator=gen(1), dtype=torch.float64)
    x_t = (1 - t) * x0 + t * eps
    target = eps - x0
    v = oracle.velocity(x_t, t)
    edges = torch.linspace(-3, 3, 9, dtype=torch.float64)
    ix = torch.bucketize(x_t[:, 0].contiguous(), edges)
    iy = torch.bucketize(x_t[:, 1].contiguous(), edges)
    z, bins = [], 0
    for a in range(1, 9):
        for b in range(1, 9):
            m = (ix == a) & (iy == b)
            if int(m.sum()) < 400:
                continue
            bins += 1
            resid = target[m] - v[m]  # mean zero given x_t
            z += (resid.mean(0) / (resid.std(0) / math.sqrt(int(m.sum())))).tolist()
    z = torch.tensor(z)
    assert bins >= 15
    assert float(z.abs().max()) < 4.5, z
    assert 0.5 < float(z.square().mean()) < 1.6  # the z-scores have unit variance: the oracle is exact
    # the test can fail: a velocity 5% off is caught in some bin
    m = (ix == 5) & (iy == 5)
    off = target[m] - 1.05 * v[m]
    assert float((off.mean(0) / (off.std(0) / math.sqrt(int(m.sum())))).abs().max()) > 4.5


def test_vp_path_velocity_is_the_ddpm_oracle_drift():
    """The flow oracle on the VP path gives the DDPM oracle's probability-flow drift -1/2 beta (x + score)."""
    dist = mixture_2d()
    schedule = dl.make_schedule("linear", 100, beta_start=1e-3, beta_end=0.1)
    flow = FlowMixtureOracle(dist, path=VPPath(ContinuousSchedule(schedule)))
    ddpm = dl.MixtureOracle(dist, schedule).velocity_field()
    x = torch.randn(64, 2, generator=gen(2), dtype=torch.float64) * 2
    for t in (0.05, 0.3, 0.77, 1.0):
        torch.testing.assert_close(flow.velocity(x, t), ddpm(x, t), rtol=1e-9, atol=1e-9)


def test_hutchinson_likelihood_of_the_exact_flow_is_unbiased_in_3d():
    """Above 2 dimensions the divergence is Hutchinson's estimate: over many probes its log-likelihood
    averages to the exact one (= log q for the exact flow) within the standard error."""
    dist = dl.GaussianMixture([1.0, 1.0], [[-1.0, 0.0, 1.0], [1.0, 1.0, -1.0]], [0.3, 0.5])
    oracle = FlowMixtureOracle(dist)
    x = dist.sample(4, gen(6), dtype=torch.float64).repeat_interleave(100, 0)  # (400, 3): 100 probes each
    r = ode_log_likelihood(oracle, x, prior="exact", generator=gen(7), rtol=1e-5, atol=1e-5)
    ll = r["log_likelihood"].reshape(4, 100)
    se = ll.std(1) / 10
    assert bool((ll.std(1) > 1e-3).all())  # the estimate is random per probe...
    z = (ll.mean(1) - dist.log_prob(x[::100])) / se
    assert float(z.abs().max()) < 4.0, z  # ...and unbiased


def test_shifted_grid():
    g = shifted_grid(4, 3.0)
    assert g[0] == 1.0 and g[-1] == 0.0 and all(a > b for a, b in zip(g, g[1:]))
    assert g[2] == pytest.approx(3 * 0.5 / (1 + 2 * 0.5))
    assert shifted_grid(4) == [1.0, 0.75, 0.5, 0.25, 0.0]


def _flow(width=32, dim=1):
    torch.manual_seed(0)
    return FlowModel(MLPDenoiser(dim, width=width, depth=1, time_dim=16), data_shape=(dim,))


def test_refusals_name_the_way_out():
    flow = _flow()
    for call, needle in [
        (lambda: dl.sample(flow, 4, "ancestral"), "use sampler = 'ode'"),
        (lambda: dl.sample(flow, 4, "ddim", steps=5), "use sampler = 'ode'"),
        (lambda: dl.sample(flow, 4, "ode", steps=5, solver="dpm_solver"), "'euler' or 'heun' or 'midpoint' or 'rk45'"),
        (lambda: dl.sample(flow, 4, "ode", steps=0), "steps"),
        (lambda: dl.objectives.Simple()(flow, torch.zeros(4, 1)), "flow_matching"),
        (lambda: FlowMatching()(dl.MixtureOracle(seed_mixture(), dl.make_schedule("linear", 10)),
                                torch.zeros(4, 1)), "does not serve a ddpm model"),
        (lambda: dl.sample(dl.MixtureOracle(seed_mixture(), dl.make_schedule("linear", 10)), 4, "ode", steps=5,
                           solver="heun", shift=3.0), "flow option"),
        (lambda: dl.sample(dl.MixtureOracle(seed_mixture(), dl.make_schedule("linear", 10)), 4, "ode", steps=5,
                           shift=2.0), "flow option"),  # dpm_solver, which has no shift at all
        (lambda: dl.sample(flow, 4, "ode", steps=5, solver="heun", rtol=1e-3), "takes no option rtol"),
        (lambda: load_config("default", ["train.time_sampling=logit_normal"]), "flow option"),
        (lambda: load_config("default", ["sample.time_shift=3"]), "flow option"),
        (lambda: load_config("default", ["train.objective=flow_matching"]), "does not serve a ddpm model"),
        (lambda: load_config("flow", ["sample.sampler=ancestral"]), "sample.sampler = 'ode'"),
        (lambda: load_config("flow", ["sample.ode_solver=dpm_solver"]), "does not serve a flow model"),
        (lambda: load_config("flow", ["train.objective=simple"]), "flow_matching"),
    ]:
        with pytest.raises(DDPMLabError, match=needle) as exc:
            call()
        assert "\n" not in str(exc.value)


def test_tiny_flow_trains_saves_loads_and_samples_from_the_cli(tmp_path):
    cfg = load_config("flow", ["train.iters=150", "model.width=32", "model.depth=1", "train.batch_size=256",
                                "train.time_sampling=logit_normal"])
    trainer = Trainer.from_config(cfg, out=tmp_path / "run")
    trainer.run(progress=False)
    assert np.mean(trainer.loss_history[-20:]) < np.mean(trainer.loss_history[:20])
    trainer.save()
    run = dl.load_run(tmp_path / "run")
    assert run.model.family == "flow" and run.cfg.train.time_sampling == "logit_normal"
    x = dl.sample(run.model, 300, "ode", steps=10, solver="heun", generator=gen(0))
    out = tmp_path / "s.npy"
    env = {**os.environ, "PYTHONPATH": SRC}
    p = subprocess.run([sys.executable, "-m", "ddpmlab", "sample", str(tmp_path / "run"), "-n", "300", "--steps",
                        "10", "--ode-solver", "heun", "--seed", "0", "--out", str(out)], env=env,
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    np.testing.assert_allclose(np.load(out), x.numpy(), rtol=1e-6, atol=1e-6)
    # the refusal and the evaluation in this process (main() is what `python -m ddpmlab` runs)
    code, _, err = run_main("sample", tmp_path / "run", "-n", "3", "--sampler", "ancestral",
                            "--out", tmp_path / "a.npy")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "sampler = 'ode'" in err
    code, out, err = run_main("evaluate", tmp_path / "run", "--n-ode", "32", "--samples", "500")
    assert code == 0, err
    assert "exact oracle" in out and "ODE NLL" in out


def test_library_trainer_records_a_flow(tmp_path):
    """Trainer(FlowModel, FlowMatching(), tensor) records family, objective and time sampling; the run
    loads with the network passed in and gives the same velocity."""
    x = seed_mixture().sample(2000, gen(5))
    model = FlowModel(MLPDenoiser(1, width=16, depth=1, time_dim=8), data_shape=(1,))
    trainer = Trainer(model, FlowMatching("logit_normal"), x, out=tmp_path / "lib", batch_size=128)
    trainer.run(30, progress=False)
    trainer.save()
    assert trainer.cfg.model.family == "flow" and trainer.cfg.train.objective == "flow_matching"
    run = dl.load_run(tmp_path / "lib", net=MLPDenoiser(1, width=16, depth=1, time_dim=8))
    xt = torch.randn(5, 1)
    torch.testing.assert_close(run.model.velocity(xt, 0.3), trainer.sampling_model.velocity(xt, 0.3))


class _CondNet(torch.nn.Module):
    """A conditional network (x, tau, class label) that records the labels it saw."""

    def __init__(self):
        super().__init__()
        self.embed = torch.nn.Embedding(2, 4)
        self.lin = torch.nn.Linear(1 + 1 + 4, 1)
        self.seen = []

    def forward(self, x, tau, cond=None):
        self.seen.append(None if cond is None else cond.clone())
        e = self.embed(cond) if cond is not None else torch.zeros(x.shape[0], 4)
        return self.lin(torch.cat([x, tau[:, None].to(x.dtype), e.to(x.dtype)], dim=1))


def test_conditions_reach_the_velocity_in_training_and_every_solver():
    torch.manual_seed(0)
    net = _CondNet()
    flow = FlowModel(net, data_shape=(1,))
    x = torch.cat([torch.randn(32, 1) - 3, torch.randn(32, 1) + 3])
    labels = torch.cat([torch.zeros(32, dtype=torch.long), torch.ones(32, dtype=torch.long)])
    dl.Trainer(flow, FlowMatching(), x, labels=labels, batch_size=16).run(3, progress=False)
    assert net.seen and all(c is not None and c.shape == (16,) for c in net.seen)
    net.seen.clear()
    cond = torch.tensor([0, 1, 1, 0])
    for solver in ("euler", "midpoint", "heun"):
        dl.sample(flow, 4, "ode", steps=3, solver=solver, cond=cond, generator=gen(0))
    assert net.seen and all(torch.equal(c, cond) for c in net.seen)
    # the DDPM's velocity solvers pass the condition too (through the score of a float64 copy)
    ddpm = dl.DiffusionModel(_CondNet(), dl.make_schedule("linear", 10), "epsilon", data_shape=(1,))
    for model in (flow, ddpm):
        for solver in ("heun", "rk45"):
            a = dl.sample(model, 4, "ode", steps=3, solver=solver, cond=torch.zeros(4, dtype=torch.long),
                          x_T=torch.zeros(4, 1))
            b = dl.sample(model, 4, "ode", steps=3, solver=solver, cond=torch.ones(4, dtype=torch.long),
                          x_T=torch.zeros(4, 1))
            assert not torch.allclose(a, b), (model.family, solver)


def _zero_flow(mean: float, std: float, dim: int = 1):
    torch.manual_seed(0)
    net = MLPDenoiser(dim, width=16, depth=1, time_dim=8).double()
    torch.nn.init.zeros_(net.out[-1].weight)
    torch.nn.init.zeros_(net.out[-1].bias)
    return FlowModel(net, data_shape=(dim,), precondition=True, data_moments=(mean, std)).double()


def test_preconditioned_flow_with_a_zero_network_is_the_exact_gaussian_flow():
    """Under the Gaussian fit a zero residual is the exact velocity field of N(m, S^2 I) (the mixture
    oracle of one component, an independent formula), at every t and for a per-row t."""
    m, S = 1.5, 2.5
    model = _zero_flow(m, S, dim=2)
    oracle = FlowMixtureOracle(dl.GaussianMixture([1.0], [[m, m]], [[[S * S, 0.0], [0.0, S * S]]]))
    x = torch.randn(64, 2, generator=gen(20), dtype=torch.float64) * 3
    for t in (0.02, 0.3, 0.7, 0.98):
        assert torch.allclose(model.velocity(x, t), oracle.velocity(x, t), rtol=1e-10, atol=1e-10), t
    rows = torch.rand(64, generator=gen(21), dtype=torch.float64)
    per_row = torch.stack([oracle.velocity(x[i:i + 1], float(rows[i]))[0] for i in range(64)])
    assert torch.allclose(model.velocity(x, rows), per_row, rtol=1e-10, atol=1e-10)


def test_preconditioned_flow_residual_has_the_assumed_spread():
    """Gaussian data: the target eps - x_0 minus its Gaussian-fit mean has standard deviation c_out = S / r,
    and the network's input c / r has unit variance (Monte-Carlo)."""
    m, S, n = -0.5, 3.0, 200_000
    model = _zero_flow(m, S)
    p = model.precond
    x0 = m + S * torch.randn(n, 1, generator=gen(22), dtype=torch.float64)
    eps = torch.randn(n, 1, generator=gen(23), dtype=torch.float64)
    for t in (0.1, 0.5, 0.9):
        x_t = (1 - t) * x0 + t * eps
        coef = p.coefficients(torch.full((1, 1), t, dtype=torch.float64))
        residual = (eps - x0) - model.velocity(x_t, t)
        assert abs(residual.mean().item()) < 4 * residual.std().item() / math.sqrt(n)
        assert residual.std().item() == pytest.approx(coef[4].item(), rel=0.01)
        assert p.scale_input(x_t, coef).std().item() == pytest.approx(1.0, rel=0.01)


def test_preconditioned_flow_needs_its_moments():
    net = MLPDenoiser(1, width=8, depth=1, time_dim=8)
    model = FlowModel(net, data_shape=(1,), precondition=True)
    assert model.needs_data_moments
    with pytest.raises(DDPMLabError, match="mean and standard deviation"):
        model.velocity(torch.zeros(3, 1), 0.5)
    trainer = Trainer(model, FlowMatching(), seed_mixture().sample(500, gen(24)), batch_size=64, iters=2)
    assert not model.needs_data_moments and trainer.model.precond.data_std.item() > 1

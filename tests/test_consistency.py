"""The consistency family (Song et al. 2023; Song & Dhariwal 2023), added as one module and one
registration: the boundary condition f(x, t_min) = x bit for bit, both objectives against the same draws
done by hand per example, the distillation target's teacher step against the exact flow map, multistep
consistency sampling written out and at the floor for the exact map, and a run that saves, reloads and
samples the same."""
import math

import numpy as np
import pytest
import torch

import ddpmlab as dl
from ddpmlab.cli import main
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.evaluation.metrics import w1
from ddpmlab.models.consistency import T_MIN, ConsistencyMixtureOracle, ConsistencyModel
from ddpmlab.models.flow_map import exact_flow_map
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.objectives.consistency import (SIGMA_MAX, ConsistencyDistillation, ConsistencyTraining,
                                            karras_levels, lognormal_weights)
from ddpmlab.training.teacher import TeacherFlow

MIXTURE = dl.GaussianMixture([0.3, 0.7], [[-1.5], [1.0]], [0.2, 0.4])
MOMENTS = (0.25, 1.3)  # the mixture's mean and (about) its standard deviation


def _model(dtype=torch.float64, precondition=True):
    torch.manual_seed(0)
    net = MLPDenoiser(1, width=16, depth=1, time_dim=8)
    moments = MOMENTS if precondition else None
    return ConsistencyModel(net, (1,), precondition=precondition, data_moments=moments).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("precondition", [True, False])
def test_the_boundary_condition_holds_bit_for_bit(dtype, precondition):
    """f(x, t_min) = x exactly (c_skip = 1, c_mean = c_out = 0 in floating point), for a float time and
    per-row times, whatever the network says; f is not the identity above t_min."""
    m = _model(dtype, precondition)
    with torch.no_grad():
        for p in m.net.parameters():
            p.mul_(50.0)  # a loud network: its output must still vanish at t_min
    x = torch.cat([torch.randn(64, 1, generator=torch.Generator().manual_seed(1)) * 10, torch.tensor([[0.0], [-3e6]])])
    x = x.to(dtype)
    with torch.no_grad():
        assert torch.equal(m.consistency(x, T_MIN), x)
        assert torch.equal(m.flow_map(x, torch.full((66,), T_MIN, dtype=torch.float64), 0.0), x)
        assert torch.equal(m.consistency(x, 0.5 * T_MIN), x)  # the identity below t_min too
        assert not torch.allclose(m.consistency(x, 0.1), x)


def test_a_zero_network_is_the_gaussian_fits_exact_map_at_the_prior():
    """With F = 0, f(x, 1) = m + S x: the exact flow map of N(m, S^2) from the prior (c_skip = S, c_mean =
    1, c_out = S at t = 1)."""
    m = _model()
    with torch.no_grad():
        for p in m.net.parameters():
            p.zero_()
        x = torch.randn(8, 1, dtype=torch.float64)
        gaussian = ConsistencyMixtureOracle(dl.GaussianMixture([1.0], [[MOMENTS[0]]], [MOMENTS[1] ** 2]))
        assert torch.allclose(m.consistency(x, 1.0), gaussian.consistency(x, 1.0), atol=1e-12)


def test_the_discretisation_and_its_lognormal_weights_written_out():
    """Karras et al.'s levels of sigma = t / (1 - t) mapped to t (t_1 = t_min, t_N = 1), and P(i) of the
    discretised log-normal of sigma (Song & Dhariwal 2023, sec. 3.5), by plain Python."""
    n, rho, smax, p_mean, p_std = 11, 7.0, 80.0 * 2.6, -1.1 + math.log(2.6), 2.0
    t, sigma = karras_levels(n, rho, smax)
    lo, hi = (T_MIN / (1 - T_MIN)) ** (1 / rho), smax ** (1 / rho)
    levels = [(lo + i / (n - 1) * (hi - lo)) ** rho for i in range(n)]
    times = [T_MIN] + [s / (1 + s) for s in levels[1:-1]] + [1.0]
    assert t[0] == T_MIN and t[-1] == 1.0
    np.testing.assert_allclose(t.numpy(), times, rtol=1e-12)
    np.testing.assert_allclose(sigma.numpy(), levels, rtol=1e-12)
    cdf = [0.5 * (1 + math.erf((math.log(s) - p_mean) / (math.sqrt(2) * p_std))) for s in levels[:-1]] + [1.0]
    p = [b - a for a, b in zip(cdf[:-1], cdf[1:])]
    np.testing.assert_allclose(lognormal_weights(t, p_mean, p_std).numpy(), [v / sum(p) for v in p], rtol=1e-6)


def test_the_curriculum_doubles_and_is_checkpointed():
    obj = ConsistencyTraining(s0=10, s1=1280, double_every=3)
    seen = []
    for k in range(30):
        obj.step = k
        seen.append(obj.points())
    assert seen == [min(10 * 2 ** (k // 3), 1280) + 1 for k in range(30)]
    assert seen[0] == 11 and seen[-1] == 1281
    again = ConsistencyTraining(s0=10, s1=1280, double_every=3)
    again.load_state_dict(obj.state_dict())
    assert again.step == 29
    m, x0 = _model(), MIXTURE.sample(4, torch.Generator().manual_seed(0), dtype=torch.float64)
    obj(m, x0)
    assert obj.step == 30  # one call, one training step


def _by_hand(m, x0, t, sigma, i, z, c, neighbour):
    """The loss per example, one example at a time: x at t_{i+1}, the target's input by ``neighbour``,
    the pseudo-Huber distance to f of it under no_grad, weighted by 1 / (sigma_{i+1} - sigma_i)."""
    out = []
    for j in range(x0.shape[0]):
        a, b = float(t[i[j]]), float(t[i[j] + 1])
        x_hi = (1 - b) * x0[j:j + 1] + b * z[j:j + 1]
        with torch.no_grad():
            target = m.consistency(neighbour(x0[j:j + 1], z[j:j + 1], x_hi, a, b), a)
        d = (m.consistency(x_hi, b) - target).square().sum()
        out.append(((d + c * c).sqrt() - c) / (float(sigma[i[j] + 1]) - float(sigma[i[j]])))
    return torch.stack(out)


def _draws(obj, m, x0, seed):
    """The objective's draws: i by its log-normal weights, then z, from one generator."""
    g = torch.Generator().manual_seed(seed)
    t, sigma, p = obj.levels(obj.scale(m))
    i = torch.multinomial(p, x0.shape[0], replacement=True, generator=g)
    return t, sigma, i, torch.randn(x0.shape, generator=g, dtype=x0.dtype)


def _check_against_loop(obj, m, x0, neighbour):
    t, sigma, i, z = _draws(obj, m, x0, 5)
    c = obj.huber * (MOMENTS[1] / 0.5)  # huber k sqrt(d), d = 1
    loss = obj(m, x0, torch.Generator().manual_seed(5))
    loop = _by_hand(m, x0, t, sigma, i, z, c, neighbour)
    assert len(set(i.tolist())) > 3
    torch.testing.assert_close(loss, loop, rtol=1e-6, atol=1e-10)  # sqrt(d + c^2) - c cancels
    grads = torch.autograd.grad(loss.sum(), list(m.parameters()))  # the target is under stop-gradient
    for a, b in zip(grads, torch.autograd.grad(loop.sum(), list(m.parameters()))):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-9)


def test_consistency_training_is_its_loss_written_out():
    m, obj = _model(), ConsistencyTraining(s0=10, double_every=2)
    obj.step = 5  # N = 41
    x0 = MIXTURE.sample(24, torch.Generator().manual_seed(4), dtype=torch.float64)
    _check_against_loop(obj, m, x0, lambda x0, z, x_hi, a, b: (1 - a) * x0 + a * z)


def test_consistency_distillation_is_its_loss_written_out():
    """x_hat = one Heun step of the teacher's velocity (the exact flow's) from t_{i+1} to t_i."""
    m, obj = _model(), ConsistencyDistillation(n_steps=12)
    oracle = FlowMixtureOracle(MIXTURE)
    obj.attach_teacher(TeacherFlow(oracle))
    x0 = MIXTURE.sample(24, torch.Generator().manual_seed(4), dtype=torch.float64)

    def heun(x0, z, x, a, b):
        v = oracle.velocity(x, b)
        return x + (a - b) * 0.5 * (v + oracle.velocity(x + (a - b) * v, a))

    _check_against_loop(obj, m, x0, heun)


def test_the_distillation_step_with_the_exact_velocity_is_the_exact_map():
    """With the exact velocity as the teacher (float64), 64 Heun substeps across each interval of the
    18-point discretisation land within 1e-5 of the exact map Phi_{t_{i+1} -> t_i} (closed form in 1-D);
    one step is second order (halving the step quarters the error); a single Heun step is 2e-2 off on
    the widest interval, so the test states the substeps it needs."""
    oracle = FlowMixtureOracle(MIXTURE)
    t, _ = karras_levels(18, 7.0, SIGMA_MAX * MOMENTS[1] / 0.5)
    g = torch.Generator().manual_seed(6)
    errors = {}
    for substeps in (32, 64):
        obj = ConsistencyDistillation(n_steps=18, substeps=substeps)
        obj.attach_teacher(TeacherFlow(oracle))
        worst = 0.0
        for i in range(17):
            x0, z = MIXTURE.sample(40, g, dtype=torch.float64), torch.randn(40, 1, generator=g, dtype=torch.float64)
            b, a = float(t[i + 1]), float(t[i])
            x = (1 - b) * x0 + b * z
            t_hi, t_lo = (torch.full((40,), v, dtype=torch.float64) for v in (b, a))
            step = obj.teacher_step(x, t_hi, t_lo)
            worst = max(worst, float((step - exact_flow_map(oracle, x, b, a)).abs().max()))
        errors[substeps] = worst
    assert errors[64] < 1e-5, errors
    assert errors[32] / errors[64] > 3, errors


def test_multistep_consistency_sampling_written_out():
    """Algorithm 1: x = f(x_1, 1); then noise back to 1/2 with z from the generator and map again."""
    m = _model(torch.float32)
    x_T = torch.randn(6, 1, generator=torch.Generator().manual_seed(7))
    got = dl.sample(m, 6, "consistency", 2, x_T=x_T, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        x = m.consistency(x_T, 1.0)
        z = torch.randn(6, 1, generator=torch.Generator().manual_seed(8))
        want = m.consistency(0.5 * x + 0.5 * z, 0.5)
    torch.testing.assert_close(got, want)
    for steps in (1, 4):
        assert torch.isfinite(dl.sample(m, 6, steps=steps, generator=torch.Generator().manual_seed(8))).all()
    assert dl.family_of(m).name == "consistency" and isinstance(m, dl.FlowMapModel)


@pytest.mark.parametrize("steps", [1, 2, 4])
def test_the_exact_maps_samples_are_at_the_floor(steps):
    oracle = ConsistencyMixtureOracle(MIXTURE)
    g = torch.Generator().manual_seed(2)
    x = dl.sample(oracle, 20_000, steps=steps, generator=g)  # the family's default sampler: consistency
    ref = MIXTURE.sample(100_000, g, dtype=torch.float64).reshape(-1)
    floor = w1(MIXTURE.sample(20_000, g, dtype=torch.float64).reshape(-1), ref)
    assert float(w1(x.reshape(-1).double(), ref)) < 2 * float(floor)


def test_refusals():
    m = _model()
    meanflow = dl.MeanFlowModel(MLPDenoiser(1, width=8, depth=1), data_shape=(1,)).double()
    x0 = MIXTURE.sample(8, torch.Generator().manual_seed(0), dtype=torch.float64)
    with pytest.raises(DDPMLabError, match="objective = 'consistency_training' does not serve a meanflow model"):
        ConsistencyTraining()(meanflow, x0)
    with pytest.raises(DDPMLabError, match="needs a teacher"):
        ConsistencyDistillation()(m, x0)
    with pytest.raises(DDPMLabError, match="solver must be one of euler, heun"):
        ConsistencyDistillation(solver="rk4")
    with pytest.raises(DDPMLabError, match="no guidance"):
        dl.Guided(m, 1.0)
    bare = ConsistencyModel(MLPDenoiser(1, width=8, depth=1), (1,), precondition=True)
    with pytest.raises(DDPMLabError, match="mean and standard deviation"):
        bare.consistency(x0.float(), 0.5)


def test_a_consistency_run_saves_reloads_and_samples_the_same(tmp_path, capsys):
    run = tmp_path / "run"
    sets = ["train.iters=20", "model.width=16", "model.depth=1", "train.batch_size=128"]
    assert main(["train", "--config", "consistency_train", *[a for s in sets for a in ("--set", s)],
                 "--out", str(run)]) == 0
    loaded = dl.load_run(run)
    assert isinstance(loaded.model, ConsistencyModel) and loaded.cfg.train.objective == "consistency_training"
    for steps in (1, 2, 4):
        out = tmp_path / f"x{steps}.npy"
        assert main(["sample", str(run), "-n", "50", "--seed", "3", "--steps", str(steps), "--out", str(out)]) == 0
        again = loaded.to_data_units(dl.sample(loaded.model, 50, steps=steps,
                                               generator=torch.Generator().manual_seed(3)))
        np.testing.assert_allclose(np.load(out), again.numpy(), rtol=1e-5, atol=1e-6)
    assert main(["train", "--config", "consistency_distill", "--out", str(tmp_path / "cd")]) == 2
    assert "needs a teacher" in capsys.readouterr().err

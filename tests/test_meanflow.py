"""The MeanFlow family (Geng et al. 2025), added as one module and one registration: its forward-mode
derivative against finite differences, the MeanFlow identity on the exact model, one-step samples of the
exact map at the floor, and a run that saves, reloads and samples the same."""
import numpy as np
import pytest
import torch
import torch.autograd.forward_ad as fwad

import ddpmlab as dl
from ddpmlab.cli import main
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.evaluation.metrics import w1
from ddpmlab.models.meanflow import MeanFlowMixtureOracle, MeanFlowModel
from ddpmlab.models.mlp import MLPDenoiser

MIXTURE = dl.GaussianMixture([0.3, 0.7], [[-1.5], [1.0]], [0.2, 0.4])


def _model(dtype=torch.float64):
    torch.manual_seed(0)
    return MeanFlowModel(MLPDenoiser(1, width=16, depth=1, time_dim=8), data_shape=(1,)).to(dtype)


def test_forward_mode_derivative_is_the_total_time_derivative():
    """d/dt u(z_t, r, t) along dz/dt = v, by dual numbers, equals the central difference in float64."""
    m = _model()
    g = torch.Generator().manual_seed(1)
    z, v = torch.randn(6, 1, generator=g, dtype=torch.float64), torch.randn(6, 1, generator=g, dtype=torch.float64)
    r, t = torch.full((6,), 0.2, dtype=torch.float64), torch.linspace(0.3, 0.9, 6, dtype=torch.float64)
    with fwad.dual_level():
        _, dudt = fwad.unpack_dual(m.average_velocity(fwad.make_dual(z, v), r, fwad.make_dual(t, torch.ones_like(t))))
    h = 1e-6
    fd = (m.average_velocity(z + h * v, r, t + h) - m.average_velocity(z - h * v, r, t - h)) / (2 * h)
    assert torch.allclose(dudt, fd, atol=1e-5 * (1 + float(fd.abs().max().detach())))


def test_the_exact_model_satisfies_the_meanflow_identity():
    """u(z, r, t) = v(z, t) - (t - r) d/dt u(z_t, r, t) (Geng et al. eq. 6) for the exact average velocity
    (from the exact flow map), the derivative along the exact flow taken by central differences."""
    oracle = MeanFlowMixtureOracle(MIXTURE)
    z = torch.tensor([[-2.0], [-0.5], [0.3], [1.7]], dtype=torch.float64)
    r, t, h = 0.25, 0.8, 1e-4
    v = oracle.velocity(z, t)
    u = oracle.average_velocity(z, r, t)
    dudt = (oracle.average_velocity(z + h * v, r, t + h) - oracle.average_velocity(z - h * v, r, t - h)) / (2 * h)
    assert torch.allclose(u, v - (t - r) * dudt, atol=1e-6), (u, v - (t - r) * dudt)
    assert not torch.allclose(u, v, atol=1e-3)  # the average over [r, t] is not the velocity at t


def test_one_step_of_the_exact_map_is_at_the_floor():
    oracle = MeanFlowMixtureOracle(MIXTURE)
    g = torch.Generator().manual_seed(2)
    x = dl.sample(oracle, 20_000, generator=g)  # the family's default: flow_map, 1 step
    ref = MIXTURE.sample(100_000, g, dtype=torch.float64).reshape(-1)
    floor = w1(MIXTURE.sample(20_000, g, dtype=torch.float64).reshape(-1), ref)
    assert float(w1(x.reshape(-1).double(), ref)) < 2 * float(floor)


def test_flow_map_sampling_and_refusals():
    m = _model(torch.float32)
    x = torch.randn(5, 1)
    with torch.no_grad():
        two = m.flow_map(m.flow_map(x, 1.0, 0.5), 0.5, 0.0)
        assert torch.allclose(dl.sample(m, 5, "flow_map", 2, x_T=x), two)
    assert dl.family_of(m).name == "meanflow" and isinstance(m, dl.FlowMapModel) and isinstance(m, dl.VelocityModel)
    flow = dl.FlowModel(MLPDenoiser(1, width=8, depth=1), data_shape=(1,))
    with pytest.raises(DDPMLabError, match="sampler = 'flow_map' does not serve a flow model"):
        dl.sample(flow, 4, "flow_map", 1)
    with pytest.raises(DDPMLabError, match="no guidance"):
        dl.Guided(m, 1.0)


def test_a_meanflow_run_saves_reloads_and_samples_the_same(tmp_path):
    run = tmp_path / "run"
    sets = ["train.iters=20", "model.width=16", "model.depth=1", "train.batch_size=128"]
    assert main(["train", "--config", "meanflow", *[a for s in sets for a in ("--set", s)], "--out", str(run)]) == 0
    loaded = dl.load_run(run)
    assert isinstance(loaded.model, MeanFlowModel) and loaded.cfg.train.objective == "meanflow"
    out = tmp_path / "x.npy"
    assert main(["sample", str(run), "-n", "50", "--seed", "3", "--out", str(out)]) == 0
    again = loaded.to_data_units(dl.sample(loaded.model, 50, generator=torch.Generator().manual_seed(3)))
    np.testing.assert_allclose(np.load(out), again.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [0.0, 1.0])
def test_the_objective_is_the_identity_regression_written_out(p):
    """The objective's per-example loss against the same draws done by hand: times, noise, z_t, the
    conditional velocity, d/dt u by central differences, the stop-gradient target and the weight."""
    m, c = _model(), 1e-3
    x0 = MIXTURE.sample(32, torch.Generator().manual_seed(4), dtype=torch.float64)
    obj = dl.objectives.MeanFlow(p=p, c=c, ratio=0.5)
    loss = obj(m, x0, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    r, t = obj.times(32, g)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    z, v = (1 - t[:, None]) * x0 + t[:, None] * eps, eps - x0
    h = 1e-6
    with torch.no_grad():
        u = m.average_velocity(z, r, t)
        dudt = (m.average_velocity(z + h * v, r, t + h) - m.average_velocity(z - h * v, r, t - h)) / (2 * h)
    error = (u - (v - (t - r)[:, None] * dudt)).square().mean(1)
    assert bool((r < t).any()) and bool((r == t).any())
    assert torch.allclose(loss.detach(), error / (error + c) ** p, rtol=1e-4, atol=1e-8)

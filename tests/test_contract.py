"""The model contract (issue 10): every model satisfies it, samplers and objectives use nothing else,
conditions pass through, bad networks and forgotten moments are refused, dtypes are kept."""
import pytest
import torch
from torch import nn

import ddpmlab as dl
from ddpmlab.config.build import build_model
from ddpmlab.config.schema import load_config
from ddpmlab.core.distributions import seed_mixture
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.runs.format import load_run
from conftest import gen


class CondNet(nn.Module):
    """A conditional network that records the conditions it saw."""

    def __init__(self, dim=1, classes=2):
        super().__init__()
        self.embed = nn.Embedding(classes, 8)
        self.lin = nn.Linear(dim + 1 + 8, dim)
        self.seen = []

    def forward(self, x, tau, cond=None):
        self.seen.append(None if cond is None else cond.clone())
        e = self.embed(cond) if cond is not None else torch.zeros(x.shape[0], 8, dtype=x.dtype)
        return self.lin(torch.cat([x, tau[:, None].to(x.dtype), e.to(x.dtype)], dim=1))


def _models():
    sched = dl.make_schedule("linear", 20, beta_start=1e-3, beta_end=0.2)
    cfg = load_config(None, ["schedule.kind='linear'", "schedule.steps=20", "model.width=8", "model.depth=1"])
    seed_cfg = load_config("tutorial", ["schedule.steps=20"])
    return [build_model(cfg, (1,)), build_model(seed_cfg, (1,)), dl.MixtureOracle(seed_mixture(), sched)]


@pytest.mark.parametrize("i", range(3))
def test_every_model_satisfies_the_contract(i):
    model = _models()[i]
    assert isinstance(model, dl.ReverseModel)
    x = torch.randn(5, 1, generator=gen(0)).to(model.dtype)
    p = model.p_mean_variance(x, torch.full((5,), 7))
    assert isinstance(p, dl.PMeanVariance) and all(v.shape == x.shape for v in p)
    torch.testing.assert_close(p.log_variance, p.variance.log())
    # the implied x_0 and eps reproduce the mean through the posterior (eq. 7) and eq. 4
    sched = model.schedule
    ab = sched.alphas_cumprod[7]
    torch.testing.assert_close(p.pred_x0 * ab.sqrt() + p.pred_eps * (1 - ab).sqrt(), x.to(p.pred_x0.dtype),
                               rtol=1e-4, atol=1e-4)
    mean, _, _ = dl.q_posterior_mean_variance(sched, p.pred_x0, x, torch.full((5,), 7))
    torch.testing.assert_close(mean, p.mean, rtol=1e-4, atol=1e-4)
    for sampler, opts in (("ancestral", {}), ("ddim", {"eta": 0.5}), ("ode", {"solver": "dpm_solver"})):
        steps = 0 if sampler == "ancestral" else 5  # the seed's networks cannot be respaced
        assert dl.sample(model, 4, sampler, steps=steps, generator=gen(1), **opts).shape == (4, 1)


def test_diffusion_model_forward_and_bad_output_shape():
    sched = dl.make_schedule("linear", 20)
    net = _TimeMLP(2, 2)
    model = dl.DiffusionModel(net, sched, "epsilon", "fixed_small", data_shape=(2,))
    x, t = torch.randn(3, 2, generator=gen(0)), torch.tensor([1, 4, 20])
    with torch.no_grad():  # forward is the bare network at tau = t / T (no preconditioning asked for),
        torch.testing.assert_close(model(x, t), net(x, t / 20))  # and its output is the predicted noise
        torch.testing.assert_close(model.p_mean_variance(x, t).pred_eps, net(x, t / 20), rtol=1e-4, atol=1e-5)
    with pytest.raises(DDPMLabError, match="network's output has shape"):  # (B, 2) fits a fixed variance,
        dl.DiffusionModel(_TimeMLP(2, 2), sched, "epsilon", "learned", data_shape=(2,))(  # but a learned
            torch.zeros(3, 2), torch.full((3,), 4))  # variance needs 4 outputs


class _TimeMLP(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.lin = nn.Linear(d_in + 1, d_out)

    def forward(self, x, tau):
        return self.lin(torch.cat([x, tau[:, None]], 1))


def test_preconditioning_takes_the_mean_type_and_needs_moments():
    sched = dl.make_schedule("linear", 20)
    model = dl.DiffusionModel(_TimeMLP(1, 1), sched, "v", data_shape=(1,), precondition=True)
    assert model.precond.mean_kind is dl.MEAN_TYPES.get("v")
    with pytest.raises(DDPMLabError, match="mean and standard deviation"):
        model.p_mean_variance(torch.zeros(3, 1), torch.full((3,), 4))
    model.set_data_moments(1.0, 2.0)
    assert torch.isfinite(model.p_mean_variance(torch.zeros(3, 1), torch.full((3,), 4)).mean).all()
    with pytest.raises(DDPMLabError, match="previous_x"):
        dl.DiffusionModel(_TimeMLP(1, 1), sched, "previous_x", data_shape=(1,), precondition=True)


def test_condition_reaches_the_network_in_training_and_sampling(tmp_path):
    torch.manual_seed(0)
    net = CondNet()
    model = dl.DiffusionModel(net, dl.make_schedule("linear", 10), "epsilon", data_shape=(1,))
    x = torch.cat([torch.randn(64, 1) - 3, torch.randn(64, 1) + 3])
    labels = torch.cat([torch.zeros(64, dtype=torch.long), torch.ones(64, dtype=torch.long)])
    trainer = dl.Trainer(model, dl.objectives.Simple(), x, labels=labels, batch_size=16, out=tmp_path / "r")
    trainer.run(3, progress=False)
    assert all(c is not None and c.shape == (16,) for c in net.seen)  # every training batch carried labels
    net.seen.clear()
    cond = torch.tensor([0, 1, 1, 0])
    for sampler in ("ancestral", "ddim", "ode"):
        dl.sample(model, 4, sampler, steps=5, cond=cond, generator=gen(0))
    assert net.seen and all(torch.equal(c, cond) for c in net.seen)
    for objective in (dl.objectives.VLB(), dl.objectives.Hybrid()):
        net.seen.clear()
        objective(model, x[:8], gen(1), cond=labels[:8])
        assert torch.equal(net.seen[-1], labels[:8])


def test_float64_model_keeps_float64_everywhere():
    torch.manual_seed(0)
    model = dl.DiffusionModel(_TimeMLP(2, 2), dl.make_schedule("linear", 10), "epsilon", data_shape=(2,)).double()
    assert model.dtype == torch.float64
    for sampler in ("ancestral", "ddim", "ode"):
        assert dl.sample(model, 3, sampler, steps=4, generator=gen(0)).dtype == torch.float64
    x = torch.randn(32, 2, dtype=torch.float64)
    for objective in (dl.objectives.Simple(), dl.objectives.VLB(), dl.objectives.TrajectoryBound()):
        assert objective(model, x, gen(1)).dtype == torch.float64
    trainer = dl.Trainer(model, dl.objectives.Simple(), x, batch_size=8)
    trainer.run(2, progress=False)
    assert all(p.dtype == torch.float64 for p in trainer.model.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_cuda_model_samples_and_trains_on_cuda():
    """Every draw comes from the CPU generator, so a CUDA model samples and trains what the same model does
    on the CPU (to float32 rounding), and its weights stay on the device and move."""
    def model():
        torch.manual_seed(0)
        return dl.DiffusionModel(_TimeMLP(2, 2), dl.make_schedule("linear", 10), "epsilon", data_shape=(2,))

    data = torch.randn(32, 2, generator=gen(1))
    initial = [p.detach().clone() for p in model().parameters()]
    samples, weights = {}, {}
    for device in ("cpu", "cuda"):
        samples[device] = dl.sample(model().to(device), 64, "ancestral", generator=gen(0))
        trainer = dl.Trainer(model().to(device), dl.objectives.Simple(), data, batch_size=8, device=device)
        trainer.run(3, progress=False)
        assert all(p.device.type == device for p in trainer.model.parameters())
        weights[device] = [p.detach().cpu() for p in trainer.model.parameters()]
    assert samples["cuda"].device.type == "cuda"
    torch.testing.assert_close(samples["cuda"].cpu(), samples["cpu"], rtol=1e-4, atol=1e-4)
    for w_gpu, w_cpu, w0 in zip(weights["cuda"], weights["cpu"], initial):
        torch.testing.assert_close(w_gpu, w_cpu, rtol=1e-4, atol=1e-5)
        assert not torch.equal(w_cpu, w0)  # training moved them


def test_run_naming_a_class_is_not_imported_without_trust(tmp_path):
    torch.manual_seed(0)
    model = dl.DiffusionModel(_TimeMLP(2, 2), dl.make_schedule("linear", 10), "epsilon", data_shape=(2,),
                              net_kwargs={"d_in": 2, "d_out": 2})
    trainer = dl.Trainer(model, dl.objectives.Simple(), torch.randn(32, 2), batch_size=8, out=tmp_path / "r")
    trainer.run(2, progress=False)
    trainer.save()
    assert trainer.cfg.model.arch == "test_contract:_TimeMLP"
    with pytest.raises(DDPMLabError, match="trust"):
        load_run(tmp_path / "r")
    run = load_run(tmp_path / "r", trust_code=True)
    x = torch.randn(4, 2)
    t = torch.full((4,), 3)
    torch.testing.assert_close(run.model.p_mean_variance(x, t).mean, trainer.sampling_model.p_mean_variance(x, t).mean)
    run2 = load_run(tmp_path / "r", net=_TimeMLP(2, 2))
    torch.testing.assert_close(run2.model.p_mean_variance(x, t).mean, run.model.p_mean_variance(x, t).mean)


def test_registries_feed_config_validation():
    from ddpmlab.config.validation import validate

    cfg = load_config(None)
    ddpm = dl.FAMILIES.get("ddpm")
    for name in dl.SAMPLERS.names():  # each sampler the default's family serves validates; the others say so
        cfg.sample.sampler = name
        if ddpm.serves(dl.SAMPLERS.get(name)):
            validate(cfg)
        else:
            with pytest.raises(DDPMLabError, match=f"sample.sampler = '{name}' does not serve a ddpm model"):
                validate(cfg)
    cfg.sample.sampler = "nope"
    with pytest.raises(DDPMLabError, match="ancestral"):
        validate(cfg)
    assert set(dl.OBJECTIVES.names()) == {"trajectory_bound", "vlb", "simple", "hybrid", "flow_matching", "meanflow",
                                           "consistency_training", "consistency_distill", "shortcut", "reflow"}
    assert set(dl.SCHEDULES.names()) == {"constant", "linear", "cosine"}

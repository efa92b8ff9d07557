"""The fast path (``ddpmlab.models.fast_path``) against the plain call ``net(x, tau)`` on every row: the
same network outputs, gradients, samples and training losses to float rounding."""
import pytest
import torch

from conftest import gen
from ddpmlab.config.build import build_model
from ddpmlab.config.schema import load_config
from ddpmlab.models import fast_path
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.models.unet import UNet
from ddpmlab.sampling.api import sample
from ddpmlab.training.trainer import Trainer


def _perturbed(net):
    with torch.no_grad():
        for i, p in enumerate(net.parameters()):
            p.add_(0.1 * torch.randn(p.shape, generator=gen(100 + i), dtype=p.dtype))
    return net


def _mlp(dtype=torch.float64):
    torch.manual_seed(0)
    return _perturbed(MLPDenoiser(2, width=32, depth=2, time_dim=16).to(dtype))


def test_split_call_is_the_plain_call():
    net = _mlp()
    x, tau = torch.randn(7, 2, generator=gen(1), dtype=torch.float64), torch.rand(7, generator=gen(2))
    assert torch.equal(net(x, tau), net.forward_embedded(x, net.embed_time(tau)))
    shared = net.forward_embedded(x, net.embed_time(tau[:1]))  # (1, E) broadcast to every row
    assert torch.allclose(shared, net(x, tau[:1].expand(7)), rtol=0, atol=1e-12)
    unet = _perturbed(UNet(1, 1, base=8, time_dim=8).double())
    xi = torch.randn(3, 1, 6, 6, generator=gen(3), dtype=torch.float64)
    assert torch.equal(unet(xi, tau[:3]), unet.forward_embedded(xi, unet.embed_time(tau[:3])))
    assert torch.allclose(unet.forward_embedded(xi, unet.embed_time(tau[:1])), unet(xi, tau[:1].expand(3)), atol=1e-12)


def test_shared_value_is_strict():
    assert fast_path.shared_value(torch.full((5,), 3)).tolist() == [3]
    assert fast_path.shared_value(torch.tensor([3, 4, 3])) is None  # first equals last, not all
    assert fast_path.shared_value(torch.tensor([2, 3])) is None
    assert fast_path.shared_value(torch.tensor(3)) is None and fast_path.shared_value(torch.tensor([])) is None


@pytest.mark.parametrize("case", ["shared", "shared_chunked", "few_times", "many_times"])
def test_call_net_matches_the_plain_call_with_gradients(case, monkeypatch):
    net = _mlp()
    n = 600
    x = torch.randn(n, 2, generator=gen(4), dtype=torch.float64)
    tau = {"shared": torch.full((n,), 0.37), "shared_chunked": torch.full((n,), 0.37),
           "few_times": torch.randint(1, 21, (n,), generator=gen(5)) / 20,
           "many_times": torch.rand(n, generator=gen(6))}[case]
    monkeypatch.setattr(fast_path, "MIN_CHUNK_ROWS", 1)
    monkeypatch.setattr(fast_path, "CACHE_FLOATS", 32 * 128)  # 128 rows a chunk for width 32
    if case == "shared_chunked":
        with torch.no_grad():
            assert fast_path.chunk_rows(net, x) == 128
            assert torch.allclose(fast_path.call_net(net, x, tau), net(x, tau), rtol=0, atol=1e-12)
        return
    plain = net(x, tau)
    grads = torch.autograd.grad(plain.square().sum(), list(net.parameters()))
    fast = fast_path.call_net(net, x, tau)
    fast_grads = torch.autograd.grad(fast.square().sum(), list(net.parameters()))
    assert torch.allclose(fast, plain, rtol=0, atol=1e-12)
    for a, b in zip(fast_grads, grads):
        assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("mean_type", ["epsilon", "x0", "v"])
def test_preconditioned_model_fast_equals_plain(mean_type):
    cfg = load_config("default", ["model.width=32", "schedule.steps=50", f"model.mean_type='{mean_type}'"])
    torch.manual_seed(0)
    model = _perturbed(build_model(cfg, (2,)).double())
    model.set_data_moments(0.7, 2.3)
    x = torch.randn(300, 2, generator=gen(7), dtype=torch.float64)
    for t in (torch.full((300,), 1), torch.full((300,), 31), torch.randint(1, 51, (300,), generator=gen(8))):
        fast = model(x, t)
        with fast_path.plain():
            plain = model(x, t)
        assert torch.allclose(fast, plain, rtol=1e-12, atol=1e-12), (mean_type, (fast - plain).abs().max())
        assert torch.equal(model.p_mean_variance(x, t).mean, model.diffusion.p_mean_variance(fast, x, t).mean)


@pytest.mark.parametrize("sampler, steps", [("ancestral", 0), ("ode", 10), ("ddim", 10)])
def test_samples_match_the_plain_path(sampler, steps):
    cfg = load_config("default", ["model.width=32", "schedule.steps=40"])
    torch.manual_seed(0)
    model = _perturbed(build_model(cfg, (1,)))
    model.set_data_moments(1.3, 3.9)
    fast = sample(model, 3000, sampler, steps, generator=gen(9))
    with fast_path.plain():
        plain = sample(model, 3000, sampler, steps, generator=gen(9))
    assert torch.allclose(fast, plain, rtol=1e-4, atol=1e-4), (fast - plain).abs().max()


def test_training_losses_and_weights_match_the_plain_path():
    cfg = load_config("default", ["model.width=32", "schedule.steps=50", "train.iters=15", "train.batch_size=512"])

    def train():
        trainer = Trainer.from_config(cfg)
        trainer.run(progress=False)
        return trainer

    fast = train()
    with fast_path.plain():
        plain = train()
    assert fast.loss_history == pytest.approx(plain.loss_history, rel=1e-5)
    for a, b in zip(fast.model.parameters(), plain.model.parameters()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-5)


def test_call_net_at_steps_matches_the_plain_call_and_follows_its_grid():
    """The time MLP on a grid of every step's time, gathered to the rows, against the plain call on
    each row's time: outputs and gradients; the grid's kept features follow an in-place change of it."""
    net = _mlp()
    n, grid = 600, torch.rand(41, generator=gen(10))
    x, step = torch.randn(n, 2, generator=gen(11), dtype=torch.float64), torch.randint(0, 41, (n,), generator=gen(12))
    for _ in range(2):
        plain = net(x, grid[step])
        grads = torch.autograd.grad(plain.square().sum(), list(net.parameters()))
        fast = fast_path.call_net_at_steps(net, x, step, grid, None)
        fast_grads = torch.autograd.grad(fast.square().sum(), list(net.parameters()))
        assert torch.allclose(fast, plain, rtol=0, atol=1e-12)
        for a, b in zip(fast_grads, grads):
            assert torch.allclose(a, b, rtol=1e-10, atol=1e-10)
        grid.mul_(0.5)  # the same tensor, new values: the kept features must not be reused
    assert net._kept_features[0] is grid
    few = fast_path.call_net_at_steps(net, x[:100], step[:100], grid, None)  # too few rows for the grid: plain
    assert torch.allclose(few, net(x[:100], grid[step[:100]]), rtol=0, atol=1e-12)
    one = torch.full((n,), 7)
    shared = fast_path.call_net_at_steps(net, x, one, grid, fast_path.shared_value(one))  # every row at step 7
    assert torch.allclose(shared, net(x, grid[one]), rtol=0, atol=1e-12)

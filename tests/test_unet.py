"""The small U-Net: shapes (odd sizes too), zero output at initialisation, per-example independence,
time dependence, and the model ``build_model`` makes from it."""
import pytest
import torch

from conftest import gen
from ddpmlab.config.build import build_model
from ddpmlab.config.schema import load_config
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.unet import UNet


def _perturbed(net):
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=gen(7)))
    return net


@pytest.mark.parametrize("shape, out_channels", [((1, 8, 8), 1), ((1, 8, 8), 2), ((3, 7, 9), 3), ((2, 4, 4), 4)])
def test_shapes(shape, out_channels):
    net = UNet(shape[0], out_channels, base=8, time_dim=8)
    y = net(torch.randn((5,) + shape), torch.rand(5))
    assert y.shape == (5, out_channels) + shape[1:]


def test_zero_at_initialisation_and_time_dependent_after():
    net = UNet(1, 1, base=8, time_dim=8)
    x = torch.randn(4, 1, 8, 8, generator=gen(0))
    assert torch.all(net(x, torch.rand(4)) == 0)
    _perturbed(net)
    a, b = net(x, torch.full((4,), 0.1)), net(x, torch.full((4,), 0.9))
    assert not torch.allclose(a, b)


def test_examples_are_independent():
    net = _perturbed(UNet(1, 2, base=8, time_dim=8))
    x, tau = torch.randn(6, 1, 8, 8, generator=gen(1)), torch.rand(6, generator=gen(2))
    whole = net(x, tau)
    one = torch.cat([net(x[i:i + 1], tau[i:i + 1]) for i in range(6)])
    assert torch.allclose(whole, one, atol=1e-5)


def test_build_model_with_unet_and_a_training_step():
    cfg = load_config("digits", ["model.width=8", "model.time_dim=8", "schedule.steps=10", "sample.steps=0"])
    model = build_model(cfg, (1, 8, 8))
    assert isinstance(model.net, UNet)
    x_t, t = torch.randn(3, 1, 8, 8), torch.tensor([1, 5, 10])
    mean, var = model.p_mean_variance(x_t, t)[:2]
    assert mean.shape == var.shape == (3, 1, 8, 8)
    loss = model(x_t, t).square().mean() + 1.0
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(DDPMLabError, match="image data"):
        build_model(cfg, (2,))

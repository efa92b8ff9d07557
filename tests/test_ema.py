"""``EMA`` against the plain per-tensor average it replaces: one flat average gives the same shadow bit
for bit, its views are released into separate storage, and buffers follow the model's."""
import pytest
import torch
from safetensors.torch import save as st_save

from ddpmlab.models.ema import EMA
from ddpmlab.models.mlp import MLPDenoiser


def _net(seed=0, width=16):
    torch.manual_seed(seed)
    return MLPDenoiser(3, width=width, depth=2, time_dim=8)


def _flatten(net) -> torch.Tensor:
    """The net's parameters as views of one buffer, as ``FlatAdamW`` lays them out; returns the buffer."""
    params = list(net.parameters())
    flat = torch.cat([p.detach().reshape(-1) for p in params])
    for p, view in zip(params, flat.split([p.numel() for p in params])):
        p.data = view.view_as(p)
    return flat


def _perturb(net, flat, i):
    with torch.no_grad():
        flat.add_(torch.randn(flat.shape, generator=torch.Generator().manual_seed(i)) * 0.1)


@pytest.mark.parametrize("decay", [0.99, 0.5, 0.0])
def test_flat_average_equals_the_per_tensor_average(decay):
    net, twin = _net(), _net()
    flat, twin_flat = _flatten(net), _flatten(twin)
    fast, plain = EMA(net, decay), EMA(twin, decay)
    for i in range(7):
        _perturb(net, flat, i)
        _perturb(twin, twin_flat, i)
        fast.update(net, flat)
        plain.update(twin)
    assert fast._flat is not None and plain._flat is None  # the fast one took the flat path
    for (name, a), b in zip(fast.state_dict().items(), plain.state_dict().values()):
        assert torch.equal(a, b), name


def test_release_gives_own_storage_and_a_later_update_reattaches():
    net = _net()
    flat = _flatten(net)
    ema = EMA(net, 0.9)
    ema.update(net, flat)
    ptrs = {p.untyped_storage().data_ptr() for p in ema.shadow.parameters()}
    assert len(ptrs) == 1  # views of one buffer while attached
    before = {k: v.clone() for k, v in ema.state_dict().items()}
    ema.release()
    ptrs = [p.untyped_storage().data_ptr() for p in ema.shadow.parameters()]
    assert len(set(ptrs)) == len(ptrs)
    assert all(torch.equal(before[k], v) for k, v in ema.state_dict().items())
    st_save(ema.state_dict())
    twin = EMA(net, 0.9)
    twin.load_state_dict(before)
    _perturb(net, flat, 1)
    ema.update(net, flat)
    twin.update(net)
    assert ema._flat is not None
    assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), twin.state_dict().values()))


def test_a_moved_shadow_is_averaged_where_it_now_lives():
    """``shadow.to(...)`` gives the parameters new storage: the flat buffer no longer backs them, so the
    next flat update lays them out again instead of averaging a buffer nobody reads."""
    net = _net()
    flat = _flatten(net)
    ema, plain = EMA(net, 0.9), EMA(_net(), 0.9)
    ema.update(net, flat)
    ema.shadow.to(torch.float64).to(torch.float32)  # new storage, the same values
    plain.shadow.load_state_dict(ema.state_dict())
    _perturb(net, flat, 2)
    ema.update(net, flat)
    plain.update(net)
    assert all(torch.equal(a, b) for a, b in zip(ema.state_dict().values(), plain.state_dict().values()))


def test_a_flat_buffer_of_another_layout_is_averaged_per_tensor():
    net = _net()
    ema = EMA(net, 0.9)
    ema.update(net, torch.zeros(5))  # not the parameters' layout: ignored
    assert ema._flat is None


def test_buffers_follow_the_model_and_a_loaded_shadow():
    net = torch.nn.BatchNorm1d(4)
    ema = EMA(net, 0.9)
    net.running_mean.fill_(2.0)
    ema.update(net)
    assert torch.equal(ema.shadow.running_mean, net.running_mean)
    ema.update(net)  # unchanged on both sides: nothing to copy
    state = ema.state_dict()
    state["running_mean"] = torch.full((4,), 7.0)
    ema.load_state_dict(state)  # the shadow changed, the model did not
    ema.update(net)
    assert torch.equal(ema.shadow.running_mean, net.running_mean)

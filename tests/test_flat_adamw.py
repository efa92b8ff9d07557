"""``FlatAdamW`` against ``torch.optim.AdamW(fused=True)`` on the same parameters: the same weights and
moments bit for bit, the same per-parameter state dict, either loading the other's state, and the
trainer's runs unchanged by it."""
import pytest
import torch
from safetensors.torch import save as st_save

from conftest import gen
from ddpmlab.config.schema import load_config
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.training.flat_adamw import FlatAdamW
from ddpmlab.training.trainer import Trainer

OPTIONS = dict(lr=3e-3, weight_decay=0.01)


def _net(seed=0):
    torch.manual_seed(seed)
    return MLPDenoiser(2, width=16, depth=2, time_dim=8)


def _optimizer(kind, net):
    return FlatAdamW(net.parameters(), **OPTIONS) if kind is FlatAdamW else \
        torch.optim.AdamW(net.parameters(), fused=True, **OPTIONS)


def _train(net, opt, steps, start=0, no_grad=(), replace=()):
    """Steps of a fixed regression. Parameters named in ``no_grad`` get a zero gradient (torch's AdamW:
    zeroed; FlatAdamW: set to None, which it reads as zero); ``replace``: a new gradient tensor."""
    for i in range(start, start + steps):
        x, tau = torch.randn(64, 2, generator=gen(i)), torch.rand(64, generator=gen(1000 + i))
        opt.zero_grad(set_to_none=True)
        for g in opt.param_groups:
            g["lr"] = OPTIONS["lr"] * (1 - i / 100)  # the trainer sets the rate every step
        net(x, tau).square().mean().backward()
        for name, p in net.named_parameters():
            if name in no_grad:
                p.grad = None if isinstance(opt, FlatAdamW) else torch.zeros_like(p)
            if name in replace:
                p.grad = 2 * p.grad
        opt.step()


@pytest.mark.parametrize("no_grad, replace", [((), ()), (("out.2.weight",), ("blocks.0.lin1.bias",))])
def test_flat_steps_equal_torch_adamw_bit_for_bit(no_grad, replace):
    ours, theirs = _net(), _net()
    flat, plain = _optimizer(FlatAdamW, ours), _optimizer(torch.optim.AdamW, theirs)
    for opt, net in ((flat, ours), (plain, theirs)):
        _train(net, opt, 3)
        _train(net, opt, 5, 3, no_grad, replace)
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), name
    mine, torch_state = flat.state_dict(), plain.state_dict()
    assert mine["param_groups"] == torch_state["param_groups"]
    assert mine["state"].keys() == torch_state["state"].keys()
    for i, s in torch_state["state"].items():
        for k, v in s.items():
            assert torch.equal(mine["state"][i][k], v), (i, k)


@pytest.mark.parametrize("first, second", [(torch.optim.AdamW, FlatAdamW), (FlatAdamW, torch.optim.AdamW)])
def test_state_dicts_cross_load_and_resume_identically(first, second):
    """A state saved by either optimiser continues in the other exactly as an unbroken run."""
    ref = _net()
    _train(ref, _optimizer(torch.optim.AdamW, ref), 6)
    a = _net()
    opt_a = _optimizer(first, a)
    _train(a, opt_a, 3)
    b = _net(seed=1)  # other weights, overwritten by the state
    b.load_state_dict({k: v.clone() for k, v in a.state_dict().items()})
    opt_b = _optimizer(second, b)
    opt_b.load_state_dict(opt_a.state_dict())
    _train(b, opt_b, 3, 3)
    for (name, x), y in zip(b.state_dict().items(), ref.state_dict().values()):
        assert torch.equal(x, y), name


def test_views_while_attached_and_own_storage_after_detach():
    net = _net()
    opt = FlatAdamW(net.parameters(), **OPTIONS)
    params = list(net.parameters())
    flat_ptr = opt.flat.untyped_storage().data_ptr()
    assert all(p.untyped_storage().data_ptr() == flat_ptr for p in params)
    _train(net, opt, 2)
    assert all(p.grad.untyped_storage().data_ptr() == opt.flat.grad.untyped_storage().data_ptr() for p in params)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt.detach()
    assert len({p.untyped_storage().data_ptr() for p in params}) == len(params)
    st_save(dict(net.state_dict()))  # safetensors refuses shared storage
    for (name, a), b in zip(net.state_dict().items(), before.values()):
        assert torch.equal(a, b), name
    with torch.no_grad():
        params[0].add_(1.0)  # changed while detached: the next step starts from the changed value
    expected = params[0].detach().clone()
    opt.zero_grad()  # re-attaches
    assert opt.attached and torch.equal(params[0], expected)


def test_unequal_per_parameter_states_are_refused():
    net = _net()
    opt = FlatAdamW(net.parameters(), **OPTIONS)
    _train(net, opt, 1)
    state = opt.state_dict()
    state["state"][0]["step"] = state["state"][0]["step"] + 1
    with pytest.raises(ValueError, match="unequally"):
        opt.load_state_dict(state)


def test_trainer_run_is_the_torch_adamw_run(monkeypatch):
    """The default recipe trained with FlatAdamW and with torch's fused AdamW: the same weights, EMA and
    losses bit for bit; after ``run`` the parameters hold their own storage again."""
    cfg = load_config("default", ["train.iters=30", "train.batch_size=256", "schedule.steps=50"])
    flat = Trainer.from_config(cfg)
    assert isinstance(flat.optimizer, FlatAdamW)
    flat.run(progress=False)
    monkeypatch.setattr("ddpmlab.training.optimization.flattenable", lambda params: False)
    plain = Trainer.from_config(cfg)
    assert not isinstance(plain.optimizer, FlatAdamW)
    plain.run(progress=False)
    assert flat.loss_history == plain.loss_history
    for a, b in zip(list(flat.model.state_dict().values()) + list(flat.ema.state_dict().values()),
                    list(plain.model.state_dict().values()) + list(plain.ema.state_dict().values())):
        assert torch.equal(a, b)
    ptrs = [p.untyped_storage().data_ptr() for p in flat.model.parameters()]
    assert len(set(ptrs)) == len(ptrs)


def test_zero_grad_zeroes_a_gradient_replaced_after_the_step():
    net = _net()
    opt = FlatAdamW(net.parameters(), **OPTIONS)
    _train(net, opt, 1)
    p = next(net.parameters())
    p.grad = torch.ones_like(p)  # replaced outside backward, after the step
    opt.zero_grad()
    assert torch.count_nonzero(opt.flat.grad) == 0 and p.grad.data_ptr() == opt.flat.grad.data_ptr()

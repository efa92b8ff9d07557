"""The training step's fast parts against the plain code they replace: ``FlatAdamW.step`` calls torch's
fused AdamW kernel itself after the first step (which is torch's own, creating the moments), and must
give ``torch.optim.AdamW(fused=True)``'s weights and moments bit for bit under every option."""
import pytest
import torch

from conftest import gen
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.training.flat_adamw import FlatAdamW


def _net(dtype=torch.float32):
    torch.manual_seed(0)
    return MLPDenoiser(2, width=16, depth=2, time_dim=8).to(dtype)


def _steps(net, opt, steps: int, start: int = 0) -> None:
    """Steps of a fixed regression, the learning rate set every step as the trainer does."""
    for i in range(start, start + steps):
        x = torch.randn(64, 2, generator=gen(i), dtype=next(net.parameters()).dtype)
        tau = torch.rand(64, generator=gen(1000 + i))
        opt.zero_grad(set_to_none=True)
        for group in opt.param_groups:
            group["lr"] = 3e-3 * (1 - i / 100)
        net(x, tau).square().mean().backward()
        opt.step()


def _assert_same(net_a, opt_a, net_b, opt_b) -> None:
    for (name, a), b in zip(net_a.state_dict().items(), net_b.state_dict().values()):
        assert torch.equal(a, b), name
    state_a, state_b = opt_a.state_dict()["state"], opt_b.state_dict()["state"]
    assert state_a.keys() == state_b.keys()
    for i, s in state_b.items():
        assert s.keys() == state_a[i].keys()
        for k, v in s.items():
            assert torch.equal(state_a[i][k], v), (i, k)


@pytest.mark.parametrize("options", [
    dict(weight_decay=0.01),
    dict(weight_decay=0.0, amsgrad=True),
    dict(weight_decay=0.1, betas=(0.8, 0.95), eps=1e-6, maximize=True),
    dict(weight_decay=0.01, amsgrad=True, dtype=torch.float64),
], ids=["default", "amsgrad", "betas-eps-maximize", "float64"])
def test_direct_steps_equal_torch_fused_adamw(options):
    options = dict(options)
    dtype = options.pop("dtype", torch.float32)
    ours, theirs = _net(dtype), _net(dtype)
    flat = FlatAdamW(ours.parameters(), lr=3e-3, **options)
    plain = torch.optim.AdamW(theirs.parameters(), lr=3e-3, fused=True, **options)
    for net, opt in ((ours, flat), (theirs, plain)):
        _steps(net, opt, 6)
    _assert_same(ours, flat, theirs, plain)


def test_only_the_first_step_is_torchs_own(monkeypatch):
    """The kernel is called directly from the second step on, and straight away after loading a state;
    what it computes is torch's step (``test_direct_steps_equal_torch_fused_adamw``)."""
    calls = []
    torch_step = torch.optim.AdamW.step
    monkeypatch.setattr(torch.optim.AdamW, "step", lambda self, *a, **k: calls.append(1) or torch_step(self, *a, **k))
    net = _net()
    opt = FlatAdamW(net.parameters(), lr=3e-3, weight_decay=0.01)
    _steps(net, opt, 4)
    assert len(calls) == 1
    resumed_net = _net()
    resumed_net.load_state_dict(net.state_dict())
    resumed = FlatAdamW(resumed_net.parameters(), lr=3e-3, weight_decay=0.01)
    resumed.load_state_dict(opt.state_dict())
    _steps(resumed_net, resumed, 2, start=4)
    _steps(net, opt, 2, start=4)
    assert len(calls) == 1
    _assert_same(resumed_net, resumed, net, opt)


def test_step_hooks_and_the_profiler_still_see_the_step():
    """``FlatAdamW.step`` skips torch's per-call wrapper only while nothing would see it: a hook on this
    optimiser, a global one, and a running profiler each get what torch's wrapper gives them."""
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    net = _net()
    opt = FlatAdamW(net.parameters(), lr=3e-3)
    _steps(net, opt, 2)  # the kernel's path from here on
    seen = []
    for register, name in ((opt.register_step_pre_hook, "pre"), (opt.register_step_post_hook, "post"),
                           (register_optimizer_step_pre_hook, "global pre"),
                           (register_optimizer_step_post_hook, "global post")):
        handle = register(lambda o, a, k, name=name: seen.append(name))
        _steps(net, opt, 1, start=2)
        handle.remove()
        _steps(net, opt, 1, start=3)  # removed: not called again
    assert seen == ["pre", "post", "global pre", "global post"]
    with torch.profiler.profile() as prof:
        _steps(net, opt, 1, start=4)
    assert "Optimizer.step#FlatAdamW.step" in {e.name for e in prof.events()}
    with torch.profiler.profile() as prof:  # the plain optimiser's label, for comparison
        torch.optim.AdamW(_net().parameters(), lr=1e-3).step()
    assert "Optimizer.step#AdamW.step" in {e.name for e in prof.events()}


def test_unobserved_steps_equal_observed_ones():
    """The step without torch's wrapper is the step with it, bit for bit."""
    from torch.optim.optimizer import register_optimizer_step_pre_hook

    bare, hooked = _net(), _net()
    opt_bare, opt_hooked = FlatAdamW(bare.parameters(), lr=3e-3), FlatAdamW(hooked.parameters(), lr=3e-3)
    _steps(bare, opt_bare, 5)
    handle = register_optimizer_step_pre_hook(lambda o, a, k: None)
    try:
        _steps(hooked, opt_hooked, 5)
    finally:
        handle.remove()
    _assert_same(bare, opt_bare, hooked, opt_hooked)

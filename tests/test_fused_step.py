"""The one-pass training step against autograd's: ``MLPTape`` (the MLP's forward keeping its activations and
its backward by hand) must give autograd's gradients, ``Simple.value_and_grad`` the loss and gradients of
``Simple.__call__(...).mean().backward()`` from the same draws, and a trainer that takes it the plain
trainer's run; models, steps and trainers it does not compute take autograd's path."""
import pytest
import torch

from conftest import gen
from ddpmlab.config.schema import load_config
from ddpmlab.core.schedule import make_schedule
from ddpmlab.models import fast_path
from ddpmlab.models.diffusion_model import DiffusionModel
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.models.mlp_backward import MLPTape, tape_supports
from ddpmlab.objectives.losses import Simple
from ddpmlab.training.callbacks import Callback
from ddpmlab.training.trainer import Trainer


def _net(data_dim=2, depth=2, width=16, dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    net = MLPDenoiser(data_dim, width=width, depth=depth, time_dim=8).to(dtype)
    with torch.no_grad():  # LayerNorm's affine away from its initial 1 and 0, so their gradients matter
        for p in net.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen(p.numel()), dtype=dtype))
    return net


def _batch(net, rows=200, steps=9, seed=1):
    dtype = next(net.parameters()).dtype
    x = torch.randn(rows, net.data_dim, generator=gen(seed), dtype=dtype)
    grid = torch.linspace(0.05, 1.0, steps, dtype=dtype)
    index = torch.randint(0, steps, (rows,), generator=gen(seed + 1))
    dF = torch.randn(rows, net.out_dim, generator=gen(seed + 2), dtype=dtype)
    return x, grid, index, dF


def _autograd_grads(net, x, grid, index, dF):
    net.zero_grad(set_to_none=True)
    out = net.forward_embedded(x, net.embed_time(grid).to(x.dtype).index_select(0, index))
    (out * dF).sum().backward()  # dL/dout = dF
    return out.detach(), [None if p.grad is None else p.grad.clone() for p in net.parameters()]


@pytest.mark.parametrize("data_dim, depth, width, dtype", [
    (1, 2, 32, torch.float32), (2, 1, 16, torch.float32), (3, 3, 8, torch.float64), (2, 0, 16, torch.float64)])
def test_tape_equals_autograd(data_dim, depth, width, dtype):
    net = _net(data_dim, depth, width, dtype)
    x, grid, index, dF = _batch(net)
    out, grads = _autograd_grads(net, x, grid, index, dF)
    net.zero_grad(set_to_none=True)
    tape = MLPTape(net)
    assert torch.allclose(tape.forward(x, grid, index), out, rtol=0, atol=1e-6 if dtype == torch.float32 else 1e-13)
    tape.backward(dF)
    tol = dict(rtol=1e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-12)
    for (name, p), g in zip(net.named_parameters(), grads):
        if g is None:  # no block: the time MLP reaches nothing, its gradient is zero (autograd: none)
            assert depth == 0 and name.startswith("time.") and not p.grad.any(), name
        else:
            assert torch.allclose(p.grad, g, **tol), name


def test_tape_sets_gradients_in_their_tensors_and_runs_once_per_forward():
    net = _net()
    x, grid, index, dF = _batch(net)
    _, grads = _autograd_grads(net, x, grid, index, dF)
    held = [p.grad for p in net.parameters()]
    for g in held:
        g.fill_(7.0)  # stale values: replaced, not added to
    tape = MLPTape(net)
    tape.forward(x, grid, index)
    tape.backward(dF)
    for (name, p), g, h in zip(net.named_parameters(), grads, held):
        assert p.grad is h, name  # written in place (a FlatAdamW view stays one)
        assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-6), name
    with pytest.raises(RuntimeError, match="forward first"):
        tape.backward(dF)


def test_tape_refuses_networks_it_does_not_compute():
    class Wider(MLPDenoiser):
        pass

    assert tape_supports(_net())
    assert not tape_supports(MLPDenoiser(2, width=8, depth=1, num_classes=3))  # class embedding
    assert not tape_supports(Wider(2, width=8, depth=1))  # a subclass may change forward
    frozen = _net()
    frozen.inp.weight.requires_grad_(False)
    assert not tape_supports(frozen)
    with pytest.raises(ValueError, match="unconditional MLPDenoiser"):
        MLPTape(frozen)


def _model(mean_type="epsilon", precondition=True, var_type="fixed_small", net=None):
    net = net if net is not None else _net(2, 2, 16, seed=3)
    return DiffusionModel(net, make_schedule("linear", 40), mean_type=mean_type, var_type=var_type, data_shape=(2,),
                          precondition=precondition, data_moments=(0.3, 1.7) if precondition else None)


@pytest.mark.parametrize("mean_type", ["epsilon", "x0", "v"])
@pytest.mark.parametrize("precondition", [True, False])
def test_value_and_grad_is_the_simple_loss_backward(mean_type, precondition):
    model = _model(mean_type, precondition)
    x0 = 1.7 * torch.randn(300, 2, generator=gen(5)) + 0.3
    loss = Simple()
    loss.bind(model)
    model.zero_grad(set_to_none=True)
    plain = loss(model, x0, gen(7)).mean()
    plain.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad(set_to_none=True)
    fused = loss.value_and_grad(model, x0, gen(7))  # the same generator state: the same t and noise
    assert "_mlp_tape" in model.__dict__
    assert torch.allclose(fused, plain.detach(), rtol=1e-6, atol=0)
    for (name, p), g in zip(model.named_parameters(), grads):
        assert torch.allclose(p.grad, g, rtol=1e-5, atol=1e-7), name


def test_value_and_grad_declines_what_the_tape_does_not_compute():
    x0 = torch.randn(64, 2, generator=gen(0))
    loss = Simple()
    learned = _model(var_type="learned", net=MLPDenoiser(2, out_dim=4, width=8, depth=1, time_dim=8))
    conditional = _model(net=MLPDenoiser(2, width=8, depth=1, time_dim=8, num_classes=2))
    for model in (learned, conditional):
        assert loss.value_and_grad(model, x0, gen(1)) is None
    model = _model()
    g = gen(1)
    assert loss.value_and_grad(model, x0, g) is None  # 64 rows: the model's call runs the time MLP per row
    assert torch.equal(g.get_state(), gen(1).get_state())  # declined before drawing anything
    x0 = torch.randn(300, 2, generator=gen(0))
    with fast_path.plain():  # the plain call asked for: autograd's path
        assert loss.value_and_grad(model, x0, gen(1)) is None
    model.net.out[2].bias.requires_grad_(False)  # frozen after a first step
    assert loss.value_and_grad(model, x0, gen(1)) is None


def _trainers(overrides, steps):
    runs = []
    for one_pass in (True, False):
        trainer = Trainer.from_config(load_config("default", ["train.iters=100", *overrides]))
        if not one_pass:
            trainer._one_pass = None
        runs.append((trainer, [trainer.train_step() for _ in range(steps)]))
    return runs


@pytest.mark.parametrize("overrides", [[], ["model.precondition=false", "model.mean_type='x0'"],
                                       ["data.name='moons'", "model.depth=3"]])
def test_trainer_one_pass_run_is_the_autograd_run(overrides):
    (fast, fast_losses), (plain, plain_losses) = _trainers(overrides, 40)
    assert "_mlp_tape" in fast.model.__dict__ and "_mlp_tape" not in plain.model.__dict__
    assert fast_losses == pytest.approx(plain_losses, rel=1e-5)
    for (name, a), b in zip(fast.sampling_model.state_dict().items(), plain.sampling_model.state_dict().values()):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-6), name


def test_callbacks_take_autograd_path():
    seen = []

    class Watch(Callback):
        def on_loss(self, trainer, loss):
            seen.append(loss.requires_grad)  # the graph a callback may use
            return loss

    trainer = Trainer.from_config(load_config("default", ["train.iters=10"]), callbacks=[Watch()])
    trainer.train_step()
    assert seen == [True] and "_mlp_tape" not in trainer.model.__dict__


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_one_pass_step_on_cuda_is_the_cpu_step():
    """Every draw comes from the CPU generator: on a GPU the one-pass step trains what it trains on the CPU
    (to float32 rounding), its parameters and gradients on the device."""
    runs = {}
    for device in ("cpu", "cuda"):
        trainer = Trainer.from_config(load_config("default", ["train.iters=20", f"train.device='{device}'"]))
        losses = [trainer.train_step() for _ in range(20)]
        assert "_mlp_tape" in trainer.model.__dict__
        assert all(p.device.type == device and p.grad.device.type == device for p in trainer.model.parameters())
        runs[device] = (losses, [p.detach().cpu() for p in trainer.model.parameters()])
    assert runs["cuda"][0] == pytest.approx(runs["cpu"][0], rel=1e-4)
    for gpu, cpu in zip(runs["cuda"][1], runs["cpu"][1]):
        torch.testing.assert_close(gpu, cpu, rtol=1e-3, atol=1e-4)


def test_one_pass_step_after_the_parameters_were_released():
    """Saving a run gives each parameter its own storage again (``release_parameters``); the next step, the
    one-pass one too, trains on: the optimiser re-attaches its buffer first."""
    (fast, _), (plain, _) = _trainers([], 3)
    for trainer in (fast, plain):
        trainer.release_parameters()
    assert [fast.train_step() for _ in range(3)] == pytest.approx([plain.train_step() for _ in range(3)], rel=1e-5)
    assert fast.optimizer.attached


@pytest.mark.parametrize("mean_type", ["epsilon", "v"])
@pytest.mark.parametrize("precondition", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_training_coefficients_are_what_q_sample_and_the_preconditioner_gather(mean_type, precondition, dtype):
    """One gather of the kept table: the numbers ``extract`` gathers from the schedule and the
    preconditioner's step table, bit for bit, and so the same x_t and regression pair."""
    from ddpmlab.core.diffusion import q_sample
    from ddpmlab.core.utils import extract

    model = _model(mean_type, precondition).to(dtype)
    x0 = (1.7 * torch.randn(300, 2, generator=gen(5)) + 0.3).to(dtype)
    t = torch.randint(1, model.schedule.T + 1, (300,), generator=gen(6))
    noise = torch.randn(x0.shape, generator=gen(7), dtype=dtype)
    for _ in range(2):  # made, then kept
        q_coef, coef = model.training_coefficients(t, x0)
        assert torch.equal(q_coef[0], extract(model.schedule.sqrt_alphas_cumprod, t, x0))
        assert torch.equal(q_coef[1], extract(model.schedule.sqrt_one_minus_alphas_cumprod, t, x0))
        assert q_coef[0].dtype == dtype and q_coef[0].shape == (300, 1)
        x_t = q_sample(model.schedule, x0, t, noise, q_coef)
        assert torch.equal(x_t, q_sample(model.schedule, x0, t, noise))
        if not precondition:
            assert coef is None
            continue
        plain = model._coefficients(x_t, t, None)
        assert len(coef) == len(plain) == 5 and all(torch.equal(a, b) for a, b in zip(coef, plain))
        for a, b in zip(model.regression_pair(x0, x_t, t, noise, coef), model.regression_pair(x0, x_t, t, noise)):
            assert torch.equal(a, b)
    model.set_data_moments(0.5, 2.0)  # new moments: a new table
    q_coef, coef = model.training_coefficients(t, x0)
    if precondition:
        assert all(torch.equal(a, b) for a, b in zip(coef, model._coefficients(x0, t, None)))

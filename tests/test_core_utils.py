"""``mean_flat`` and ``extract``, the helpers every per-example loss and per-step constant goes through,
against the plain reductions and gathers they stand for."""
import pytest
import torch

from conftest import gen
from ddpmlab.core.utils import extract, mean_flat


@pytest.mark.parametrize("shape", [(300, 1), (300, 1, 1), (300, 3), (300, 2, 4), (1, 1)])
def test_mean_flat_is_the_mean_over_every_dimension_but_the_first(shape):
    x = torch.randn(shape, generator=gen(0), dtype=torch.float64, requires_grad=True)
    plain = x.mean(dim=tuple(range(1, x.dim())))
    fast = mean_flat(x)
    assert fast.shape == (shape[0],) and torch.equal(fast, plain)
    w = torch.randn(shape[0], generator=gen(1), dtype=torch.float64)
    (g_plain,) = torch.autograd.grad((plain * w).sum(), x)
    (g_fast,) = torch.autograd.grad((fast * w).sum(), x)
    assert torch.equal(g_fast, g_plain)
    assert torch.equal(fast.mean(), plain.mean())  # the batch's loss, as the trainer takes it


def test_mean_flat_of_a_vector_is_still_its_mean():
    x = torch.randn(7, generator=gen(2))
    assert torch.equal(mean_flat(x), x.mean())


@pytest.mark.parametrize("x_shape", [(5, 2), (5, 3, 4), (5,)])
def test_extract_gathers_casts_and_broadcasts(x_shape):
    arr = torch.linspace(0.0, 1.0, 11, dtype=torch.float64)
    t = torch.tensor([0, 3, 3, 10, 7])
    x = torch.zeros(x_shape, dtype=torch.float32)
    out = extract(arr, t, x)
    assert out.dtype == torch.float32 and out.shape == (5,) + (1,) * (len(x_shape) - 1)
    assert torch.equal(out.reshape(-1), arr[t].float())
    scalar = extract(arr, 3, x)  # one step for every row: ones in every dimension
    assert scalar.shape == (1,) * len(x_shape) and float(scalar) == float(arr[3].float())

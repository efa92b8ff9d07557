"""Oracles for what the ODE tests left open in ``core/continuous.py`` (issue 27, mutation testing): the
score of a float32 batch is a float64 computation returned in float32, and a condition reaches the
model (the class-conditional oracle's score is the closed-form score of its class's Gaussian)."""
import pytest
import torch

from conftest import gen
from ddpmlab.core.continuous import ContinuousSchedule, score_function
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.schedule import make_schedule
from ddpmlab.models.conditional_oracle import LabelledMixtureOracle
from ddpmlab.models.diffusion_model import DiffusionModel
from ddpmlab.models.mlp import MLPDenoiser


def test_a_float32_batch_is_scored_in_float64_and_returned_in_float32():
    torch.manual_seed(0)
    model = DiffusionModel(MLPDenoiser(2, width=16, depth=1, time_dim=8), make_schedule("linear", 20),
                           data_shape=(2,))
    cont = ContinuousSchedule(model.schedule)
    x = torch.randn(5, 2, generator=gen(0))
    out = score_function(model, cont)(x, 0.37)
    assert out.dtype == torch.float32
    ref = score_function(model, cont)(x.double(), 0.37)
    assert ref.dtype == torch.float64
    torch.testing.assert_close(out, ref.float())


def test_the_condition_reaches_the_model():
    """Labels c: the score of component c, -(x - sqrt(abar) mu_c) / (abar s_c^2 + 1 - abar), in closed
    form; no label: the mixture's, which differs."""
    means, variances = [-2.0, 1.0, 3.0], [0.3, 1.5, 0.2]
    dist = GaussianMixture([0.2, 0.5, 0.3], [[m] for m in means], [[[v]] for v in variances])
    oracle = LabelledMixtureOracle(dist, make_schedule("linear", 50, beta_start=1e-3, beta_end=0.1))
    cont = ContinuousSchedule(oracle.schedule)
    score = score_function(oracle, cont)
    x = torch.linspace(-3, 3, 6, dtype=torch.float64)[:, None]
    cond = torch.tensor([0, 1, 2, 0, 1, 2])
    s = 0.43
    a = cont.alpha_bar(s)
    expect = torch.tensor([[-(float(x[i]) - a ** 0.5 * means[c]) / (a * variances[c] + 1 - a)]
                           for i, c in enumerate(cond.tolist())], dtype=torch.float64)
    torch.testing.assert_close(score(x, s, cond), expect, rtol=1e-10, atol=1e-12)
    assert float((score(x, s) - expect).abs().max()) > 0.1


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_score_keeps_the_batch_dtype(dtype):
    dist = GaussianMixture([1.0], [[0.5]], [[[0.4]]])
    oracle = LabelledMixtureOracle(dist, make_schedule("linear", 30))
    cont = ContinuousSchedule(oracle.schedule)
    x = torch.randn(4, 1, generator=gen(1), dtype=dtype)
    assert score_function(oracle, cont)(x, 0.5, torch.tensor(0)).dtype == dtype

"""Oracles for ``core/parameterisation.py`` (issue 27, mutation testing): the reverse step from a mean and
variance alone against the posterior (Ho et al. eq. 7) it inverts, the defaults a run records, a learned
variance head on data of three channels, and the refusal of an object registered under the wrong kind."""
import pytest
import torch

from conftest import gen
from ddpmlab.core.diffusion import q_posterior_mean_variance, q_sample
from ddpmlab.core.mean_types import MEAN_TYPES
from ddpmlab.core.parameterisation import GaussianDiffusion, from_mean_variance
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError


def test_from_mean_variance_inverts_the_posterior():
    """Fed the posterior mean and variance of (x_0, x_t), it gives back x_0, the noise, and log variance."""
    s = make_schedule("linear", 60, beta_start=1e-3, beta_end=0.1)
    x0 = torch.randn(8, 3, generator=gen(0), dtype=torch.float64)
    eps = torch.randn(8, 3, generator=gen(1), dtype=torch.float64)
    t = torch.tensor([2, 5, 9, 17, 30, 41, 55, 60])
    x_t = q_sample(s, x0, t, eps)
    mean, var, log_var = q_posterior_mean_variance(s, x0, x_t, t)
    var = var.expand_as(x_t)
    p = from_mean_variance(s, x_t, t, mean, var)
    assert p.mean is mean and p.variance is var
    torch.testing.assert_close(p.log_variance, var.log(), rtol=0, atol=0)
    torch.testing.assert_close(p.pred_x0, x0, rtol=1e-8, atol=1e-8)
    torch.testing.assert_close(p.pred_eps, eps, rtol=1e-6, atol=1e-6)


def test_defaults_are_epsilon_and_fixed_small():
    d = GaussianDiffusion(make_schedule("linear", 10))
    assert (d.mean_type, d.var_type) == ("epsilon", "fixed_small")
    assert d.mean_kind is MEAN_TYPES.get("epsilon")


def test_a_learned_variance_on_three_channels_splits_into_two_heads():
    """(B, 6) output: the first 3 columns the mean head, the last 3 log sigma^2 (``learned``)."""
    s = make_schedule("linear", 20)
    d = GaussianDiffusion(s, "epsilon", "learned")
    assert d.output_channels(3) == 6
    out = torch.randn(4, 6, generator=gen(2), dtype=torch.float64)
    mean_head, var_head = d.split_output(out)
    assert torch.equal(mean_head, out[:, :3]) and torch.equal(var_head, out[:, 3:])
    x_t, t = torch.randn(4, 3, generator=gen(3), dtype=torch.float64), torch.tensor([1, 4, 11, 20])
    p = d.p_mean_variance(out, x_t, t)
    torch.testing.assert_close(p.log_variance, out[:, 3:])
    torch.testing.assert_close(p.variance, out[:, 3:].exp())
    fixed = GaussianDiffusion(s, "epsilon", "fixed_small")
    torch.testing.assert_close(p.mean, fixed.p_mean_variance(out[:, :3], x_t, t).mean)


def test_an_object_of_the_wrong_kind_is_refused_by_its_type(monkeypatch):
    class NotAMeanType:
        pass

    monkeypatch.setitem(MEAN_TYPES._items, "h4_wrong_kind", NotAMeanType())
    with pytest.raises(DDPMLabError, match="'h4_wrong_kind' is registered as a NotAMeanType, not a dl.MeanType"):
        GaussianDiffusion(make_schedule("linear", 10), "h4_wrong_kind")

"""Oracles for what the variance-type tests left open (issue 27, mutation testing of ``core/var_types.py``):
fixed_large at T = 2 (its t = 1 special case from the first T where beta-tilde_2 exists), learned_range
between its ends (Nichol & Dhariwal eq. 15 as a geometric mean), a kept fixed table giving the same
variance as a fresh one, and the output channels by name."""
import math

import pytest
import torch

from ddpmlab.core.schedule import NoiseSchedule
from ddpmlab.core.var_types import VAR_TYPES, output_channels


def test_fixed_large_at_two_steps_takes_beta_tilde_2_at_t1():
    s = NoiseSchedule([0.1, 0.3])
    beta_tilde_2 = (1 - float(s.alphas_cumprod[1])) / (1 - float(s.alphas_cumprod[2])) * 0.3
    large = VAR_TYPES.get("fixed_large").fixed_log_variance(s).exp()
    assert large[1:].tolist() == pytest.approx([beta_tilde_2, 0.3], rel=1e-12)


@pytest.mark.parametrize("v", [-0.5, 0.0, 0.6])
def test_learned_range_is_the_geometric_interpolation(v):
    """sigma^2 = beta_t^f beta-tilde_t^(1 - f), f = (v + 1) / 2, for a head v between -1 and 1."""
    s = NoiseSchedule(torch.linspace(0.05, 0.4, 8, dtype=torch.float64))
    t = torch.tensor([1, 3, 8])
    x = torch.zeros(3, 2, dtype=torch.float64)
    got = VAR_TYPES.get("learned_range").log_variance(s, torch.full_like(x, v), x, t).exp()
    f = (v + 1) / 2
    for i, step in enumerate(t.tolist()):
        tilde = math.exp(float(s.posterior_log_variance_clipped[step]))
        assert float(got[i, 0]) == pytest.approx(float(s.betas[step]) ** f * tilde ** (1 - f), rel=1e-12)


@pytest.mark.parametrize("name", ["fixed_small", "fixed_large"])
def test_a_kept_fixed_table_gives_the_fresh_tables_variance(name):
    kind = VAR_TYPES.get(name)
    s = NoiseSchedule(torch.linspace(0.05, 0.4, 8, dtype=torch.float64))
    x, t = torch.zeros(4, 3, dtype=torch.float64), torch.tensor([1, 2, 5, 8])
    fresh = kind.log_variance(s, None, x, t)
    kept = kind.log_variance(s, None, x, t, kind.fixed_log_variance(s))
    assert fresh.shape == x.shape and torch.equal(fresh, kept)
    assert torch.equal(fresh[:, 0], kind.fixed_log_variance(s)[t])


def test_output_channels_by_name():
    """A learned variance doubles the channels (a second head), a fixed one keeps them."""
    for name, channels in (("fixed_small", 3), ("fixed_large", 3), ("learned", 6), ("learned_range", 6)):
        assert output_channels(name, 3) == channels

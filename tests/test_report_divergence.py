"""A probability-flow likelihood that diverged reads "diverged (median X)" in the evaluation's JSON and
table, never as 1e+50 (``ddpmlab.evaluation.exact``).

``RunsAway`` is a flow with a closed form: the score -x of N(0, 1), whose probability-flow drift is zero
(every point stays, its log-density is the standard normal's), except below x = -2, where the score
-x - a x makes the drift a beta(s) x / 2 and a point runs off to x_0 exp(a (-log abar_T) / 2), about 1e21."""
import json
import math

import pytest
import torch

import ddpmlab as dl
from ddpmlab.core.process import ReverseProcess
from ddpmlab.evaluation.exact import DIVERGED_NATS_PER_DIM, evaluate_run, format_table
from ddpmlab.evaluation.exact import ode_nll as _ode

LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


class RunsAway(ReverseProcess):
    def __init__(self, a: float = 100.0):
        self.schedule, self.data_shape, self.a = dl.make_schedule("constant", 50, beta=0.02), (1,), a

    def score(self, x, t_c, alpha_bar, cond=None):
        return -x - self.a * x * (x < -2).to(x.dtype)


def nll_standard_normal(x):
    return 0.5 * x ** 2 + LOG_SQRT_2PI


def test_points_that_stay_are_solved_exactly():
    x0 = torch.tensor([[0.0], [0.5], [1.0], [-1.5]], dtype=torch.float64)
    r = _ode(RunsAway(), x0, torch.Generator().manual_seed(0))
    assert r["status"] == "solved" and r["diverged"] == 0
    expected = [nll_standard_normal(float(x)) for x in x0[:, 0]]
    assert r["nll_nats"] == pytest.approx(sum(expected) / 4, abs=1e-6)


def test_some_points_diverged_median_kept():
    x0 = torch.tensor([[-3.0], [-2.5], [0.0], [0.5], [1.0], [1.5]], dtype=torch.float64)
    r = _ode(RunsAway(), x0, torch.Generator().manual_seed(0))
    assert r["diverged"] == 2 and r["nll_nats"] is None and r["nll_nats_se"] is None and r["nll_bpd"] is None
    median = nll_standard_normal(1.0)  # torch's median of six: the lower middle one
    assert r["nll_nats_median"] == pytest.approx(median, abs=1e-6)
    assert r["status"] == f"diverged (median {median:.4f})"
    assert "e+" not in json.dumps(r)


def test_all_points_diverged():
    x0 = torch.tensor([[-3.0], [-2.5], [-4.0]], dtype=torch.float64)
    r = _ode(RunsAway(), x0, torch.Generator().manual_seed(0))
    assert r["diverged"] == 3 and r["nll_nats_median"] is None
    assert r["status"] == "diverged (median beyond reach)"


def test_a_point_moved_a_little_is_not_divergence():
    """A point that the flow moves only a little (x_T = -3 e^{0.25 * 1.01}) keeps its finite NLL: closed form
    0.5 x_T^2 + log sqrt(2 pi) - (the drift's divergence integrated, a (-log abar_T) / 2)."""
    x0 = torch.tensor([[-3.0], [1.0]], dtype=torch.float64)
    model = RunsAway(a=0.5)
    growth = 0.5 * 0.5 * -math.log(float(model.schedule.alphas_cumprod[-1]))
    x_T = -3.0 * math.exp(growth)
    r = _ode(model, x0, torch.Generator().manual_seed(0))
    assert r["status"] == "solved" and DIVERGED_NATS_PER_DIM >= 1e4
    expected = (nll_standard_normal(x_T) - growth + nll_standard_normal(1.0)) / 2
    assert r["nll_nats"] == pytest.approx(expected, abs=1e-4)


def test_table_and_json_show_divergence_not_huge_numbers():
    dist = dl.GaussianMixture([1.0, 2.0], [[-4.0], [4.0]], [1.0, 1.0])
    oracle = dl.MixtureOracle(dist, dl.make_schedule("constant", 50, beta=0.02))
    g = torch.Generator().manual_seed(0)
    ev = evaluate_run(oracle, dist, g, n_bound=200, n_ode=8, n_samples=200)
    x0 = torch.tensor([[-3.0], [-2.5], [0.0], [0.5], [1.0], [1.5]], dtype=torch.float64)
    ev["model"]["ode"] = _ode(RunsAway(), x0, g)
    table = format_table(ev)
    row = next(ln for ln in table.splitlines() if ln.startswith("ODE NLL"))
    assert f"diverged (median {nll_standard_normal(1.0):.4f})" in row
    assert "e+" not in table and "e+" not in json.dumps(ev)

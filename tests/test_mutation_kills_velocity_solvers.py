"""Oracles for ``sampling/velocity_solvers.py`` (issue 27, mutation testing): Euler, midpoint and Heun
against plain loops of their one-line rules on a flow network (bit for bit: the float32 network itself,
no float64 copy), RK45 against the exact flow of a Gaussian on the linear path,
x_t = (1 - t) m + sqrt((1 - t)^2 v + t^2) x_1, the callbacks, a DDPM's final denoising, and the stops."""
import math

import numpy as np
import pytest
import torch
from scipy.integrate import solve_ivp

from conftest import gen
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import NonFiniteError
from ddpmlab.models.conditional_oracle import LabelledFlowMixtureOracle, LabelledMixtureOracle
from ddpmlab.models.flow_model import FlowModel
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.sampling.registry import ODE_SOLVERS

M, V = 1.5, 0.4
GRID = torch.tensor([1.0, 0.7, 0.45, 0.2, 0.0], dtype=torch.float64)


def _euler(v, x, t, h):
    return x + h * v(x, t)


def _midpoint(v, x, t, h):
    return x + h * v(x + h / 2 * v(x, t), t + h / 2)


def _heun(v, x, t, h):
    k1 = v(x, t)
    k2 = v(x + h * k1, t + h)
    return x + h / 2 * (k1 + k2)


@pytest.fixture(scope="module")
def net_model():
    torch.manual_seed(3)
    return FlowModel(MLPDenoiser(1, width=16, depth=1, time_dim=8), data_shape=(1,))


@pytest.mark.parametrize("name, rule", [("euler", _euler), ("midpoint", _midpoint), ("heun", _heun)])
def test_fixed_steps_are_their_rules_by_hand(net_model, name, rule):
    x = torch.randn(16, 1, generator=gen(0))
    seen = []
    with torch.no_grad():
        got = ODE_SOLVERS.get(name)(net_model, x, GRID, callback=lambda i, t, y: seen.append((i, t, y.clone())))
        v = lambda y, t: net_model.velocity(y, t)  # noqa: E731  (the float32 network as it is)
        ref, states = x, []
        times = GRID.tolist()
        for t_hi, t_lo in zip(times[:-1], times[1:]):
            ref = rule(v, ref, t_hi, t_lo - t_hi)
            states.append(ref)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, rtol=0, atol=0)
    assert [(i, t) for i, t, _ in seen] == [(i, times[i + 1]) for i in range(4)]
    for (_, _, y), s in zip(seen, states):
        torch.testing.assert_close(y, s, rtol=0, atol=0)


def test_rk45_follows_the_exact_gaussian_flow():
    oracle = FlowMixtureOracle(GaussianMixture([1.0], [[M]], [V]))
    x1 = torch.randn(40, 1, generator=gen(1), dtype=torch.float64)
    seen = []
    out = ODE_SOLVERS.get("rk45")(oracle, x1, GRID, callback=lambda i, t, y: seen.append((i, t, y)))
    exact = lambda t: (1 - t) * M + math.sqrt((1 - t) ** 2 * V + t * t) * x1  # noqa: E731
    torch.testing.assert_close(out, exact(0.0), rtol=1e-3, atol=1e-3)  # rtol = atol = 1e-5: 2e-4 seen
    assert [(i, t) for i, t, _ in seen] == [(i, GRID[i + 1].item()) for i in range(4)]
    for i, t, y in seen:
        torch.testing.assert_close(y, exact(t), rtol=1e-3, atol=1e-3)
    tight = ODE_SOLVERS.get("rk45")(oracle, x1, GRID, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(tight, exact(0.0), rtol=1e-8, atol=1e-8)  # 7e-10 seen

    def err(rtol, atol):
        return float((ODE_SOLVERS.get("rk45")(oracle, x1, GRID, rtol=rtol, atol=atol) - exact(0.0)).abs().max())

    assert err(1e-3, 1e-10) > 10 * err(1e-9, 1e-10)  # each tolerance reaches the solver
    assert err(1e-10, 1e-3) > 10 * err(1e-10, 1e-9)
    assert out.dtype == torch.float64 and out.shape == x1.shape


@pytest.mark.parametrize("name", ["euler", "heun", "rk45"])
def test_a_ddpm_ends_with_the_denoising_at_its_last_kept_step(name):
    """Gaussian data on a DDPM: the state at the last kept step k, then E[x_0 | x_k] of the oracle."""
    oracle = MixtureOracle(GaussianMixture([1.0], [[M]], [V]), make_schedule("linear", 40, beta_start=1e-3,
                                                                              beta_end=0.2))
    grid = torch.tensor([40, 30, 20, 10, 4, 0])
    seen = []
    x_T = torch.randn(8, 1, generator=gen(2), dtype=torch.float64)
    out = ODE_SOLVERS.get(name)(oracle, x_T, grid, callback=lambda i, t, y: seen.append((i, t, y)))
    assert [(i, t) for i, t, _ in seen] == [(0, 30), (1, 20), (2, 10), (3, 4), (4, 0)]
    x_k = seen[-2][2]
    torch.testing.assert_close(out, oracle.p_mean_variance(x_k, torch.full((8,), 4)).pred_x0, rtol=1e-12, atol=1e-12)
    assert torch.equal(seen[-1][2], out)


class _NaNFlow(FlowMixtureOracle):
    def velocity(self, x, t, cond=None):
        return torch.full_like(x, float("nan"))


class _FastFlow(FlowMixtureOracle):
    def velocity(self, x, t, cond=None):
        return 1e3 * math.sin(1e3 * t) * torch.ones_like(x)


def test_the_stops():
    dist = GaussianMixture([1.0], [[M]], [V])
    x = torch.zeros(3, 1, dtype=torch.float64)
    with pytest.raises(NonFiniteError, match=r"^ode \(heun\) sampler: non-finite values \(NaN or inf\) at step "
                                             r"t = 0.7;"):
        ODE_SOLVERS.get("heun")(_NaNFlow(dist), x, GRID)
    with pytest.raises(NonFiniteError, match=r"^ode \(rk45\) sampler: non-finite drift \(NaN or inf\) at t = 1$"):
        ODE_SOLVERS.get("rk45")(_NaNFlow(dist), x, GRID)
    with pytest.raises(NonFiniteError, match=r"ode \(rk45\) sampler: no solution within 30 evaluations \(stopped"):
        ODE_SOLVERS.get("rk45")(_FastFlow(dist), x, GRID, max_nfe=30)
    nfe = []
    flow = FlowMixtureOracle(dist)
    counted = type("Counted", (FlowMixtureOracle,), {"velocity": lambda self, y, t, cond=None: (
        nfe.append(t), FlowMixtureOracle.velocity(self, y, t, cond))[1]})(dist)
    ODE_SOLVERS.get("rk45")(counted, x, GRID, max_nfe=len(nfe) + 10_000)
    used = len(nfe)
    nfe.clear()
    ODE_SOLVERS.get("rk45")(counted, x, GRID, max_nfe=used)  # exactly enough: no stop
    assert len(nfe) == used and flow is not counted


def test_rk45_of_a_float32_batch_is_scipy_on_the_float32_drift():
    """The state goes to the model in the batch's dtype and comes back in it: bit for bit scipy's RK45 on
    the drift of the float32-rounded state, rounded to float32."""
    oracle = FlowMixtureOracle(GaussianMixture([0.4, 0.6], [[-1.0], [M]], [0.3, V]))
    x1 = torch.randn(12, 1, generator=gen(3))
    out = ODE_SOLVERS.get("rk45")(oracle, x1, GRID)

    def rhs(t, y):
        return oracle.velocity(torch.from_numpy(y).reshape(12, 1).float(), t).reshape(-1).double().numpy()

    ref = solve_ivp(rhs, (1.0, 0.0), x1.reshape(-1).double().numpy(), method="RK45", rtol=1e-5, atol=1e-5,
                    t_eval=GRID.tolist())
    assert out.dtype == torch.float32
    assert np.array_equal(out.reshape(-1).numpy(), ref.y[:, -1].astype(np.float32))


def test_the_condition_reaches_every_solver():
    dist = GaussianMixture([0.5, 0.5], [[-2.0], [2.0]], [0.3, 0.6])
    cond = torch.tensor([0, 1, 1, 0])
    x = torch.randn(4, 1, generator=gen(4), dtype=torch.float64)
    flow = LabelledFlowMixtureOracle(dist)
    sched = make_schedule("linear", 30, beta_start=1e-3, beta_end=0.2)
    ddpm = LabelledMixtureOracle(dist, sched)
    ddpm_grid = torch.tensor([30, 20, 9, 0])
    for name, tol in (("heun", 1e-12), ("rk45", 3e-3)):  # rk45's steps fit the whole batch: rtol 1e-5 apart
        out = ODE_SOLVERS.get(name)(flow, x, GRID, cond=cond)
        d_out = ODE_SOLVERS.get(name)(ddpm, x, ddpm_grid, cond=cond)
        for c in (0, 1):
            ref = ODE_SOLVERS.get(name)(FlowMixtureOracle(dist.component(c)), x[cond == c], GRID)
            torch.testing.assert_close(out[cond == c], ref, rtol=tol, atol=tol)
            d_ref = ODE_SOLVERS.get(name)(MixtureOracle(dist.component(c), sched), x[cond == c], ddpm_grid)
            torch.testing.assert_close(d_out[cond == c], d_ref, rtol=tol, atol=tol)
            mixed = ODE_SOLVERS.get(name)(MixtureOracle(dist, sched), x[cond == c], ddpm_grid)
            assert float((d_ref - mixed).abs().max()) > 0.05


class _NaNDenoiser(MixtureOracle):
    """Its flow is finite, its x_0 prediction NaN: only the final denoising fails."""

    def p_mean_variance(self, x_t, t, cond=None):
        p = super().p_mean_variance(x_t, t, cond)
        return p._replace(pred_x0=torch.full_like(p.pred_x0, float("nan")))


class _BlowUp(FlowMixtureOracle):
    def velocity(self, x, t, cond=None):
        return -x.square()  # x(t) = 1 / (t - 3/4) from x(1) = 4: infinite at t = 3/4


def test_the_final_denoising_and_a_failed_integration_stop_in_one_line():
    bad = _NaNDenoiser(GaussianMixture([1.0], [[M]], [V]), make_schedule("linear", 20))
    with pytest.raises(NonFiniteError, match=r"^ode \(euler\) sampler: non-finite values \(NaN or inf\) at step "
                                             r"t = 0;"):
        ODE_SOLVERS.get("euler")(bad, torch.zeros(2, 1, dtype=torch.float64), torch.tensor([20, 10, 5, 0]))
    with pytest.raises(NonFiniteError, match=r"^ode \(rk45\) sampler: non-finite values \(NaN or inf\) at step t = 0;"):
        ODE_SOLVERS.get("rk45")(bad, torch.zeros(2, 1, dtype=torch.float64), torch.tensor([20, 10, 5, 0]))
    with pytest.raises(NonFiniteError, match=r"^ode \(rk45\) sampler: "):
        ODE_SOLVERS.get("rk45")(_BlowUp(GaussianMixture([1.0], [[M]], [V])),
                                torch.full((2, 1), 4.0, dtype=torch.float64), GRID)

"""The exact flow map Phi_{t -> s} of Gaussian-mixture data (issue 25, item 1) and the flow-map error
(item 5): the 1-D closed form F_s^{-1}(F_t(x)) against the adaptive ODE solve for the flow (linear path)
and DDPM (VP path) families; the ODE solve in 2-D against a single Gaussian's affine map; the map pushes
q_t onto q_s (W1 at its floor), is monotone in 1-D and inverts itself; the error is zero for the exact map
and the hand-computed value for wrong ones."""
import math

import pytest
import torch

import ddpmlab as dl
from ddpmlab.core.distributions import GaussianMixture, seed_mixture
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError, NonFiniteError
from ddpmlab.evaluation.flow_map_error import flow_map_error
from ddpmlab.evaluation.metrics import w1_to_mixture_1d
from ddpmlab.evaluation.metrics_nd import sliced_w1
from ddpmlab.models.flow_map import ExactFlowMap, exact_flow_map
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.models.oracle import MixtureOracle
from conftest import gen, mixture_2d

T = 40  # the DDPM oracle's steps: few, so the ODE solve (restarted at every step) stays quick
SEED = seed_mixture()


def oracles(dist):
    """The exact oracle of ``dist`` in each family: flow (linear path) and DDPM (VP path)."""
    return {"flow": FlowMixtureOracle(dist), "ddpm": MixtureOracle(dist, make_schedule("linear", T))}


ONE_D = oracles(SEED)
PAIRS = {"flow": [(1.0, 0.0), (0.6, 0.1), (0.2, 0.9)], "ddpm": [(T, 0), (25, 4), (2, T)]}


def q_at(oracle, t) -> GaussianMixture:
    """The marginal q_t of the oracle's data at its family time t."""
    return oracle.dist.on_path(*oracle.marginal_coefficients(t))


def draws(oracle, t, n, seed=0) -> torch.Tensor:
    return q_at(oracle, t).sample(n, gen(seed), dtype=torch.float64)


class TestClosedFormAgainstODE:
    @pytest.mark.parametrize("family,t,s", [(f, t, s) for f, pairs in PAIRS.items() for t, s in pairs])
    def test_quantile_map_equals_rk45_in_1d(self, family, t, s):
        oracle = ONE_D[family]
        x = torch.cat([draws(oracle, t, 150), torch.tensor([[-6.0], [0.0], [6.0]], dtype=torch.float64)])
        closed = exact_flow_map(oracle, x, t, s, method="quantile")
        ode = exact_flow_map(oracle, x, t, s, method="rk45")
        assert closed.shape == x.shape and closed.dtype == torch.float64
        assert (closed - ode).abs().max().item() < 1e-6

    def test_ddpm_solve_restarts_at_the_schedule_knots(self):
        """The continuous schedule's beta(s) has a kink at every k / T: one solve across them is off by about
        1e-6, one solve per step by about 1e-11."""
        oracle = ONE_D["ddpm"]
        assert oracle.ode_knots() == [k / T for k in range(T + 1)] and oracle.ode_time(10) == 10 / T
        x = draws(oracle, T, 150)
        closed = exact_flow_map(oracle, x, T, 0, method="quantile")
        assert (exact_flow_map(oracle, x, T, 0, method="rk45") - closed).abs().max().item() < 1e-9

    @pytest.mark.parametrize("family,t,s", [("flow", 0.9, 0.0), ("ddpm", T, 0), ("ddpm", 3, 30)])
    def test_rk45_in_2d_equals_a_gaussians_affine_map(self, family, t, s):
        """One Gaussian N(mu, S): q_t = N(a_t mu, C_t), C_t = a_t^2 S + s_t^2 I, and the flow is the affine map
        x -> a_s mu + C_s^{1/2} C_t^{-1/2} (x - a_t mu) (the C_t commute), written with S's eigenvectors."""
        mu, cov = torch.tensor([1.0, -2.0]), torch.tensor([[0.5, 0.3], [0.3, 0.4]])
        oracle = oracles(GaussianMixture([1.0], mu[None], cov[None]))[family]
        x = draws(oracle, t, 64)
        evals, evecs = torch.linalg.eigh(cov.double())
        (a_t, s_t), (a_s, s_s) = oracle.marginal_coefficients(t), oracle.marginal_coefficients(s)
        ratio = ((a_s ** 2 * evals + s_s ** 2) / (a_t ** 2 * evals + s_t ** 2)).sqrt()
        expected = a_s * mu.double() + (x - a_t * mu.double()) @ evecs @ torch.diag(ratio) @ evecs.T
        assert (exact_flow_map(oracle, x, t, s) - expected).abs().max().item() < 1e-6


@pytest.fixture(scope="module")
def w1_floor() -> float:
    """W1 of a true sample of 10^5 to the seed mixture, averaged over three draws (one draw's varies by 2x)."""
    return sum(w1_to_mixture_1d(SEED, SEED.sample(100_000, gen(k))) for k in (1, 2, 3)) / 3


class TestPushForward:
    @pytest.mark.parametrize("family", ["flow", "ddpm"])
    def test_maps_1e5_prior_samples_onto_the_mixture(self, family, w1_floor):
        """The exact map of 10^5 draws of the prior q_T is a sample of the data: its W1 to the exact mixture
        is a true sample's (the floor)."""
        oracle = ONE_D[family]
        start = 1.0 if family == "flow" else T
        mapped = exact_flow_map(oracle, draws(oracle, start, 100_000), start, 0)
        assert w1_to_mixture_1d(SEED, mapped) < 1.5 * w1_floor

    @pytest.mark.parametrize("family,t,s", [("flow", 1.0, 0.0), ("ddpm", 30, 5)])
    def test_rk45_maps_q_t_onto_q_s_in_2d(self, family, t, s):
        oracle = oracles(mixture_2d())[family]
        mapped = exact_flow_map(oracle, draws(oracle, t, 1000), t, s)
        target = draws(oracle, s, 4000, seed=2)
        directions = torch.nn.functional.normalize(torch.randn(64, 2, generator=gen(3), dtype=torch.float64), dim=1)
        floor = sliced_w1(draws(oracle, s, 1000, seed=4), target, directions)
        assert sliced_w1(mapped, target, directions) < 2.0 * floor


class TestMapProperties:
    @pytest.mark.parametrize("family", ["flow", "ddpm"])
    @pytest.mark.parametrize("method", ["quantile", "rk45"])
    def test_monotone_in_1d(self, family, method):
        oracle = ONE_D[family]
        t, s = PAIRS[family][0]
        x = torch.linspace(-3.5, 3.5, 141, dtype=torch.float64)[:, None]
        y = exact_flow_map(oracle, x, t, s, method=method)[:, 0]
        assert bool((y[1:] > y[:-1]).all())

    @pytest.mark.parametrize("family", ["flow", "ddpm"])
    def test_quantile_round_trip_is_the_identity(self, family):
        oracle = ONE_D[family]
        t, s = PAIRS[family][1]
        x = torch.cat([draws(oracle, t, 500), torch.tensor([[-9.0], [9.0]], dtype=torch.float64)])
        back = exact_flow_map(oracle, exact_flow_map(oracle, x, t, s), s, t)
        assert (back - x).abs().max().item() < 1e-9

    @pytest.mark.parametrize("family", ["flow", "ddpm"])
    def test_rk45_round_trip_in_2d_is_the_identity(self, family):
        oracle = oracles(mixture_2d())[family]
        t, s = PAIRS[family][1]
        x = draws(oracle, t, 100)
        back = exact_flow_map(oracle, exact_flow_map(oracle, x, t, s), s, t)
        assert (back - x).abs().max().item() < 1e-6

    def test_the_same_time_is_the_identity_and_far_tails_keep_their_order(self):
        oracle = ONE_D["flow"]
        x = torch.tensor([[-60.0], [-30.0], [30.0], [60.0]], dtype=torch.float64)
        assert torch.allclose(exact_flow_map(oracle, x, 0.4, 0.4), x, rtol=0, atol=1e-12)
        y = exact_flow_map(oracle, x, 1.0, 0.0)[:, 0]
        assert bool(torch.isfinite(y).all()) and bool((y[1:] > y[:-1]).all())

    def test_exported_and_a_flow_map_model(self):
        oracle = ONE_D["ddpm"]
        x = draws(oracle, 10, 8)
        assert isinstance(dl.ExactFlowMap(oracle), dl.FlowMapModel)
        assert torch.equal(dl.exact_flow_map(oracle, x, 10, 0), ExactFlowMap(oracle).flow_map(x, 10, 0))


class TestRefusals:
    @pytest.mark.parametrize("call,words", [
        (lambda: exact_flow_map(oracles(mixture_2d())["flow"], torch.zeros(3, 2), 1.0, 0.0, method="quantile"),
         "1-D"),
        (lambda: exact_flow_map(ONE_D["flow"], torch.zeros(3, 1), 1.0, 0.0, method="euler"), "method"),
        (lambda: exact_flow_map(object(), torch.zeros(3, 1), 1.0, 0.0), "exact oracle"),
        (lambda: exact_flow_map(ONE_D["flow"], torch.zeros(3, 1), 1.5, 0.0), "(0, 1]"),
        (lambda: exact_flow_map(ONE_D["ddpm"], torch.zeros(3, 1), 2.5, 0), "whole numbers"),
        (lambda: exact_flow_map(ONE_D["ddpm"], torch.zeros(3, 1), "late", 0), "number"),
        (lambda: exact_flow_map(ONE_D["flow"], torch.zeros(3, 2), 1.0, 0.0), "shape"),
        (lambda: ExactFlowMap(ONE_D["flow"]).flow_map(torch.zeros(3, 1), 1.0, 0.0, cond=torch.zeros(3)), "condition"),
    ])
    def test_bad_input_is_one_clear_error(self, call, words):
        with pytest.raises(DDPMLabError, match=None) as info:
            call()
        assert words in str(info.value) and "\n" not in str(info.value)


class TestFlowMapError:
    X0 = SEED.sample(300, gen(5), dtype=torch.float64)

    @pytest.mark.parametrize("family", ["flow", "ddpm"])
    def test_zero_for_the_exact_map(self, family):
        oracle = ONE_D[family]
        ts = [1.0, 0.5, 0.1] if family == "flow" else [T, 20, 2]
        out = flow_map_error(ExactFlowMap(oracle).flow_map, oracle, self.X0, ts, gen(6))
        assert out["t"] == ts and out["n"] == 300
        assert out["error"] == [0.0] * 3 and out["error_se"] == [0.0] * 3

    def test_the_ode_solve_scores_near_zero_against_the_closed_form(self):
        oracle = ONE_D["flow"]
        out = flow_map_error(ExactFlowMap(oracle, method="rk45").flow_map, oracle, self.X0, [1.0, 0.3], gen(6))
        assert max(out["error"]) < 1e-12

    def test_wrong_maps_score_their_hand_computed_error(self):
        """A map off by a constant c scores |c|^2; the identity scores the mean of |x_t - Phi(x_t)|^2 over
        the same draws of x_t, recomputed by a plain loop over t with the same generator."""
        oracle = FlowMixtureOracle(mixture_2d())
        x0, ts = mixture_2d().sample(200, gen(7), dtype=torch.float64), [0.8, 0.3]
        c = torch.tensor([0.3, -0.4], dtype=torch.float64)
        exact = ExactFlowMap(oracle)
        shifted = flow_map_error(lambda x, t, s: exact.flow_map(x, t, s) + c, oracle, x0, ts, gen(8))
        assert shifted["error"] == pytest.approx([0.25, 0.25], abs=1e-12)
        out = flow_map_error(lambda x, t, s: x, oracle, x0, ts, gen(8))
        g = gen(8)
        for t, err, se in zip(ts, out["error"], out["error_se"]):
            x_t = (1 - t) * x0 + t * torch.randn(x0.shape, generator=g, dtype=torch.float64)
            per = (x_t - exact_flow_map(oracle, x_t, t, 0)).square().sum(1)
            assert err == pytest.approx(float(per.mean()), rel=1e-12) and err > 0.1
            assert se == pytest.approx(float(per.std()) / math.sqrt(200), rel=1e-12)

    def test_refuses_bad_maps_and_times(self):
        oracle = ONE_D["flow"]
        with pytest.raises(DDPMLabError, match="shaped like x_t"):
            flow_map_error(lambda x, t, s: x[:, 0], oracle, self.X0, [0.5])
        with pytest.raises(NonFiniteError, match="NaN"):
            flow_map_error(lambda x, t, s: x * float("nan"), oracle, self.X0, [0.5])
        with pytest.raises(DDPMLabError, match="at least one time"):
            flow_map_error(lambda x, t, s: x, oracle, self.X0, [])
        with pytest.raises(DDPMLabError, match="callable"):
            flow_map_error(3, oracle, self.X0, [0.5])

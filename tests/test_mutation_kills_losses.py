"""Oracles for ``objectives/losses.py`` (issue 27, mutation testing): each per-example objective against a
plain computation from the same draws (t, then the noise, from one generator): the whole-trajectory
bound / (T + 1), the Rao-Blackwellised bound (prior KL + T w L_t), the simple loss (Ho et al. eq. 14 on
the raw network), the hybrid loss; the importance sampler fed the bound's terms and its checkpointed
state; the timestep sampler rebuilt for a new T."""
import pytest
import torch

from conftest import gen
from ddpmlab.config.build import build_model
from ddpmlab.config.schema import load_config
from ddpmlab.core.diffusion import q_sample
from ddpmlab.core.distributions import seed_mixture
from ddpmlab.core.gaussian import prior_kl_nats, step_term_nats
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.conditional_oracle import LabelledMixtureOracle
from ddpmlab.models.diffusion_model import DiffusionModel
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.objectives.losses import (OBJECTIVES, VLB, Hybrid, Simple, TrajectoryBound, describe_objective,
                                       make_objective)
from ddpmlab.objectives.seed_bound import SeedTrajectoryBound
from ddpmlab.objectives.timesteps import ImportanceTimesteps, UniformTimesteps


def _model(var_type="learned_range", steps=12, mean_type="epsilon"):
    cfg = load_config(None, ["model.arch='mlp'", f"model.mean_type={mean_type!r}", f"model.var_type={var_type!r}",
                             f"schedule.steps={steps}", "schedule.kind='linear'", "schedule.beta_start=0.01",
                             "schedule.beta_end=0.3", "model.width=16", "model.depth=1", "train.objective='vlb'"])
    torch.manual_seed(0)
    return build_model(cfg, (1,)).double()


@pytest.fixture(scope="module")
def model():
    return _model()


@pytest.fixture(scope="module")
def x0():
    return seed_mixture().sample(24, gen(0), dtype=torch.float64)


def _draws(model, x0, seed, sampler=None):
    g = gen(seed)
    t, w = (sampler or UniformTimesteps(model.schedule.T)).sample(x0.shape[0], g)
    noise = torch.randn(x0.shape, generator=g, dtype=x0.dtype)
    return t, w.double(), noise, q_sample(model.schedule, x0, t, noise)


def _terms(model, x0, x_t, t, out=None):
    p = model.p_mean_variance(x_t, t) if out is None else model.p_mean_variance_from_output(out, x_t, t)
    return step_term_nats(model.schedule, x0, x_t, t, p.mean, p.log_variance)


def test_vlb_is_prior_kl_plus_T_w_L_t(model, x0):
    with torch.no_grad():
        got = VLB()(model, x0, gen(1))
        t, w, _, x_t = _draws(model, x0, 1)
        expect = prior_kl_nats(model.schedule, x0) + model.schedule.T * w * _terms(model, x0, x_t, t)
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)


def _warm(T):
    """An importance sampler past its uniform start, with step t's root mean square term t^2."""
    sampler = ImportanceTimesteps(T)
    steps = torch.arange(1, T + 1).repeat(10)
    sampler.update(steps, steps.double() ** 2)
    return sampler


def test_the_importance_sampler_sees_the_bound_terms(model, x0):
    """VLB with importance sampling: its draws come from the sampler's probabilities, its weights
    1 / (T p_t), and each call feeds (t, L_t) to the sampler, as a hand-fed sampler records."""
    obj, twin = VLB(importance_sampling=True), _warm(model.schedule.T)
    obj.bind(model)
    obj.load_state_dict({f"timesteps.{k}": v for k, v in twin.state_dict().items()})
    assert float(twin.probs().max()) > 2 / model.schedule.T  # far from uniform: weights far from 1
    with torch.no_grad():
        for seed in range(2, 6):
            got = obj(model, x0, gen(seed))
            t, w, _, x_t = _draws(model, x0, seed, twin)
            term = _terms(model, x0, x_t, t)
            twin.update(t, term)
            torch.testing.assert_close(got, prior_kl_nats(model.schedule, x0) + model.schedule.T * w * term,
                                       rtol=1e-6, atol=1e-9)
    state = obj.state_dict()
    assert state and all(k.startswith("timesteps.") for k in state)
    for k, v in twin.state_dict().items():
        torch.testing.assert_close(torch.as_tensor(state[f"timesteps.{k}"]), torch.as_tensor(v))
    fresh = VLB(importance_sampling=True)
    fresh.bind(model)
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh.timesteps.probs(), obj.timesteps.probs())
    assert VLB().state_dict() == {}


def test_simple_is_the_squared_noise_error(model, x0):
    m = _model("fixed_small")
    with torch.no_grad():
        got = Simple()(m, x0, gen(6))
        t, _, noise, x_t = _draws(m, x0, 6)
        expect = (noise - m(x_t, t)).square().mean(1)
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("weight", [0.0, 0.25])
def test_hybrid_is_simple_plus_weight_T_w_L_t(model, x0, weight):
    with torch.no_grad():
        got = Hybrid(weight=weight)(model, x0, gen(7))
        t, w, noise, x_t = _draws(model, x0, 7)
        out = model(x_t, t)
        simple = (noise - out[:, :1]).square().mean(1)
        expect = simple + weight * model.schedule.T * w * _terms(model, x0, x_t, t, out)
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)
    assert Hybrid().weight == 0.001 and not Hybrid().importance_sampling


def test_hybrid_with_importance_weights(model, x0):
    obj, twin = Hybrid(weight=0.25, importance_sampling=True), _warm(model.schedule.T)
    obj.bind(model)
    obj.load_state_dict({f"timesteps.{k}": v for k, v in twin.state_dict().items()})
    with torch.no_grad():
        got = obj(model, x0, gen(12))
        t, w, noise, x_t = _draws(model, x0, 12, twin)
        assert float((w - 1).abs().max()) > 0.1
        out = model(x_t, t)
        term = _terms(model, x0, x_t, t, out)
        expect = (noise - out[:, :1]).square().mean(1) + 0.25 * model.schedule.T * w * term
    torch.testing.assert_close(got, expect, rtol=1e-6, atol=1e-9)
    twin.update(t, term)
    torch.testing.assert_close(obj.timesteps.second_moment, twin.second_moment)


def test_hybrid_with_a_fixed_variance_keeps_the_whole_output(x0):
    m = _model("fixed_small")
    with torch.no_grad():
        got = Hybrid(weight=0.5)(m, x0, gen(8))
        t, w, noise, x_t = _draws(m, x0, 8)
        out = m(x_t, t)
        expect = (noise - out).square().mean(1) + 0.5 * m.schedule.T * w * _terms(m, x0, x_t, t, out)
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)


def test_trajectory_bound_is_the_seed_bound_over_T_plus_1(model, x0):
    obj = TrajectoryBound()
    T = model.schedule.T
    with torch.no_grad():
        got = obj(model, x0, gen(9))
        noise = torch.randn((T,) + tuple(x0.shape), generator=gen(9), dtype=x0.dtype)
        expect = SeedTrajectoryBound(model)(x0, noise) / (T + 1)
        torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)
        kept = obj._bound
        obj(model, x0[:5], gen(10))  # another batch size: a new buffer, the same bound object
        assert obj._noise.shape == (T, 5, 1) and obj._bound is kept
        again = obj(model, x0[:5].float().double(), gen(10))
        torch.testing.assert_close(again, SeedTrajectoryBound(model)(
            x0[:5], torch.randn((T, 5, 1), generator=gen(10), dtype=torch.float64)) / (T + 1))
    with pytest.raises(ValueError, match="^the whole-trajectory bound is unconditional$"):
        obj(model, x0, gen(11), cond=torch.zeros(24, dtype=torch.long))


def test_trajectory_bound_rebinds_to_a_new_model(model, x0):
    obj = TrajectoryBound()
    obj.bind(model)
    first = obj._bound
    obj.bind(model)
    assert obj._bound is first
    other = _model(steps=6)
    obj.bind(other)
    assert obj._bound is not first and obj._bound.model is other


def test_the_timestep_sampler_follows_the_model_T(x0):
    obj = VLB(importance_sampling=True)
    obj.bind(_model(steps=12))
    first = obj.timesteps
    assert isinstance(first, ImportanceTimesteps) and first.T == 12
    obj.bind(_model(steps=12))
    assert obj.timesteps is first
    obj.bind(_model(steps=6))
    assert obj.timesteps.T == 6 and obj.timesteps is not first
    plain = VLB()
    plain.bind(_model(steps=6))
    assert type(plain.timesteps) is UniformTimesteps and plain.timesteps.T == 6


@pytest.mark.filterwarnings("error")  # noise drawn into a buffer of another shape warns (a resize)
def test_the_noise_buffer_is_kept_for_its_shape_and_dtype(model, x0):
    obj, T = TrajectoryBound(), model.schedule.T
    with torch.no_grad():
        obj(model, x0, gen(20))
        kept = obj._noise
        obj(model, x0, gen(21))
        assert obj._noise is kept  # same shape and dtype: reused
        obj(model, x0[:7], gen(22))
        assert obj._noise.shape == (T, 7, 1)
        m32 = _model().float()
        obj(m32, x0[:7].float(), gen(23))
        assert obj._noise.dtype == torch.float32
        got = obj(model, x0[:7], gen(24))  # back to float64, same shape: float64 noise
        noise = torch.randn((T, 7, 1), generator=gen(24), dtype=torch.float64)
        torch.testing.assert_close(got, SeedTrajectoryBound(model)(x0[:7], noise) / (T + 1), rtol=1e-12, atol=1e-12)


def test_the_weights_come_in_the_data_dtype(model, x0):
    obj = VLB(importance_sampling=True)
    t, w, noise, x_t = obj.draw(model, x0, gen(25))
    assert w.dtype == noise.dtype == x_t.dtype == torch.float64 and t.dtype == torch.long


def test_a_flow_model_is_refused_naming_the_objectives_that_serve_it(x0):
    flow = FlowMixtureOracle(seed_mixture())
    for obj, name in ((VLB(), "VLB"), (Simple(), "Simple"), (Hybrid(), "Hybrid")):
        with pytest.raises(DDPMLabError, match=f"^objective = '{name}' does not serve a flow model "
                                               r"\(.*\); use objective = '\w+'"):
            obj(flow, x0)


def test_the_condition_reaches_the_bound():
    dist = seed_mixture()
    lab = LabelledMixtureOracle(dist, make_schedule("linear", 12, beta_start=0.01, beta_end=0.3))
    x, labels = dist.sample_labelled(16, gen(26), dtype=torch.float64)
    got = VLB()(lab, x, gen(27), cond=labels)
    t, w, _, x_t = _draws(lab, x, 27)
    p = lab.p_mean_variance(x_t, t, labels)
    term = step_term_nats(lab.schedule, x, x_t, t, p.mean, p.log_variance)
    torch.testing.assert_close(got, prior_kl_nats(lab.schedule, x) + 12 * w * term, rtol=1e-12, atol=1e-12)
    assert float((got - VLB()(lab, x, gen(27))).abs().max()) > 1e-3


def _conditional_model():
    torch.manual_seed(1)
    net = MLPDenoiser(1, width=16, depth=1, num_classes=3)
    return DiffusionModel(net, make_schedule("linear", 12, beta_start=0.01, beta_end=0.3), "epsilon",
                          "fixed_small", data_shape=(1,)).double()


@pytest.mark.parametrize("objective", [Simple(), Hybrid(weight=0.3)])
def test_the_condition_reaches_the_network(x0, objective):
    m = _conditional_model()
    labels = torch.tensor([0, 1, 2, 3] * 6)
    with torch.no_grad():
        got = objective(m, x0, gen(28), cond=labels)
        t, w, noise, x_t = _draws(m, x0, 28)
        out = m(x_t, t, labels)
        expect = (noise - out).square().mean(1)
        if isinstance(objective, Hybrid):
            expect = expect + 0.3 * 12 * w * _terms(m, x0, x_t, t, out)
        torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)
        assert float((got - objective(m, x0, gen(28))).abs().max()) > 1e-6


@pytest.mark.parametrize("mean_type", ["x0", "v"])
def test_hybrid_targets_of_other_heads(x0, mean_type):
    """The simple part's target is the mean type's (x_0 itself, or v): Hybrid must pass the data on."""
    m = _model("learned_range", mean_type=mean_type)
    with torch.no_grad():
        got = Hybrid(weight=0.0)(m, x0, gen(29))
        t, _, noise, x_t = _draws(m, x0, 29)
        target = m.mean_target(x0, x_t, t, noise)
        expect = (target - m(x_t, t)[:, :1]).square().mean(1)
    torch.testing.assert_close(got, expect, rtol=1e-12, atol=1e-12)


class _Needs:
    def __init__(self, a, c, b: float = 1.0):
        if a < 0:
            raise ValueError("a must be >= 0")
        self.a, self.b, self.c = a, b, c


class _Forgets:
    def __init__(self, gamma: float = 1.0):
        pass


def test_make_objective_lines(monkeypatch):
    monkeypatch.setitem(OBJECTIVES._items, "h4_needs", _Needs)
    monkeypatch.setitem(OBJECTIVES._items, "h4_forgets", _Forgets)
    with pytest.raises(DDPMLabError, match=r"^objective 'simple' takes no option 'weight' \(its options: none\)$"):
        make_objective("simple", {"weight": 1.0})
    with pytest.raises(DDPMLabError, match=r"^objective 'hybrid' takes no option 'gamma' \(its options: weight, "
                                           r"importance_sampling\)$"):
        make_objective("hybrid", {"gamma": 1.0})
    with pytest.raises(DDPMLabError, match=r"^objective 'h4_needs' needs the option\(s\) a, c$"):
        make_objective("h4_needs", {"b": 2.0})
    with pytest.raises(DDPMLabError, match=r"^objective 'h4_needs' needs the option\(s\) c$"):
        make_objective("h4_needs", {"a": 1})
    with pytest.raises(DDPMLabError, match=r"^cannot build objective 'h4_needs' with options \{'a': -1, 'c': 2\} "
                                           r"\(a must be >= 0\)$"):
        make_objective("h4_needs", {"a": -1, "c": 2})
    built = make_objective("h4_needs", {"a": 1, "c": 2})
    assert (built.a, built.b, built.c) == (1, 1.0, 2)
    with pytest.raises(DDPMLabError, match=r"^objective 'h4_forgets' keeps no attribute 'gamma': keep each constructor "
                                           r"keyword as an attribute of the same name, so that a run can record it$"):
        describe_objective(_Forgets())

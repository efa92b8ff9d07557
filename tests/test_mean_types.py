"""Mean and variance types are registry objects that hold their formulas: each built-in against the closed
forms of what its head predicts, and a test-only mean type with a formula of its own, registered for
one test, is what training, sampling, the preconditioner and a saved run then use."""
import math

import pytest
import torch

from ddpmlab.config.schema import load_config
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.mean_types import MEAN_TYPES, AffineMeanType, MeanType
from ddpmlab.core.var_types import VAR_TYPES
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError, extract
from ddpmlab.models.diffusion_model import DiffusionModel
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.objectives.losses import Simple
from ddpmlab.runs.format import load_run
from ddpmlab.sampling.api import sample
from ddpmlab.training.trainer import Trainer
from conftest import gen

T, N, D = 100, 64, 3
M, S = 1.5, 2.5  # scalar mean and standard deviation of the Gaussian data


def _closed_forms(schedule, x0, t, eps):
    """x_t and, from the schedule's betas alone, what each head predicts: eps, x_0, v = a eps - s x_0 and
    the posterior mean of q(x_{t-1} | x_t, x_0) (Ho et al. eq. 7)."""
    betas = schedule.betas
    abar = torch.cumprod(1 - betas, 0)
    a, s = abar[t].sqrt()[:, None], (1 - abar[t]).sqrt()[:, None]
    x_t = a * x0 + s * eps
    abar_prev = abar[t - 1][:, None]
    beta = betas[t][:, None]
    mu = (abar_prev.sqrt() * beta * x0 + (1 - beta).sqrt() * (1 - abar_prev) * x_t) / (1 - abar[t][:, None])
    return x_t, {"epsilon": eps, "x0": x0, "v": a * eps - s * x0, "previous_x": mu}, mu


@pytest.fixture(scope="module")
def draws():
    schedule = make_schedule("cosine", T)
    x0 = torch.randn(N, D, generator=gen(0), dtype=torch.float64)
    t = torch.randint(1, T + 1, (N,), generator=gen(1))
    eps = torch.randn(N, D, generator=gen(2), dtype=torch.float64)
    return schedule, x0, t, eps


@pytest.mark.parametrize("name", ["previous_x", "x0", "epsilon", "v"])
def test_each_built_in_is_its_closed_form(draws, name):
    """target = what the head predicts; fed that, the head implies x_0, eps and the posterior mean."""
    schedule, x0, t, eps = draws
    kind = MEAN_TYPES.get(name)
    x_t, heads, mu = _closed_forms(schedule, x0, t, eps)
    head = heads[name]
    assert torch.allclose(kind.target(schedule, x0, x_t, t, eps), head, atol=1e-10)
    ok = schedule.posterior_mean_coef1[t] > 1e-3  # a previous-x head hides x_0 where coef1 is tiny
    x0_hat = kind.pred_x0(schedule, x_t, t, head)
    assert torch.allclose(x0_hat[ok], x0[ok], atol=1e-6)
    assert torch.allclose(kind.pred_eps(schedule, x_t, t, head)[ok], eps[ok], atol=1e-5)
    assert torch.allclose(kind.p_mean(schedule, x_t, t, head, x0_hat), mu, atol=1e-8)


@pytest.mark.parametrize("name", ["x0", "epsilon", "v"])
def test_affine_built_ins_agree_with_their_affine_map(draws, name):
    """epsilon, x0 and v write their formulas out; each equals what its (u, w) alone implies through
    ``AffineMeanType`` (the formulas a new affine mean type gets), on the grid, between steps and in the
    preconditioner's coefficients."""
    schedule, x0, t, eps = draws
    kind = MEAN_TYPES.get(name)
    x_t, heads, _ = _closed_forms(schedule, x0, t, eps)
    head = heads[name]
    generic = AffineMeanType
    assert torch.allclose(generic.target(kind, schedule, x0, x_t, t, eps), head, atol=1e-10)
    for method in ("pred_x0", "pred_eps"):
        assert torch.allclose(getattr(kind, method)(schedule, x_t, t, head),
                              getattr(generic, method)(kind, schedule, x_t, t, head), atol=1e-6)
    step = 37
    at = torch.full((N,), step)
    x_s, heads_s, _ = _closed_forms(schedule, x0, at, eps)
    abar = float(schedule.alphas_cumprod[step])
    assert torch.allclose(kind.eps_continuous(x_s, heads_s[name], abar), eps, atol=1e-10)
    assert torch.allclose(generic.eps_continuous(kind, x_s, heads_s[name], abar), eps, atol=1e-10)
    abar_all = schedule.alphas_cumprod[1:]
    a, s = abar_all.sqrt(), (1 - abar_all).sqrt()
    r_inv = (a * a * S * S + s * s).rsqrt()
    for mine, theirs in zip(kind.precondition(a, s, M, S, r_inv), generic.precondition(kind, a, s, M, S, r_inv)):
        assert torch.allclose(torch.as_tensor(mine, dtype=torch.float64), theirs, rtol=1e-12, atol=1e-12)


def test_variance_types_hold_their_head_and_channels():
    schedule = make_schedule("linear", 20)
    for name in VAR_TYPES:
        kind = VAR_TYPES.get(name)
        fixed = kind.fixed_log_variance(schedule)
        assert kind.output_channels(3) == (6 if kind.learned else 3)
        assert (fixed is None) == kind.learned and (fixed is None or fixed.shape == (21,))
    assert [n for n in VAR_TYPES if VAR_TYPES.get(n).learned] == ["learned", "learned_range"]


# -- a mean type of the test's own -----------------------------------------------------------------------
class HalfScore(MeanType):
    """A head no built-in computes: head = x_t / 2 - 2 eps / s, every formula written out (no
    ``AffineMeanType``), so that any fall-through to another type's formulas shows."""

    continuous_time = supports_precondition = x0_divides_by_sqrt_abar = True

    def pred_eps(self, schedule, x_t, t, head, x0=None):
        return (x_t / 2 - head) * extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t) / 2

    def pred_x0(self, schedule, x_t, t, head):
        eps = self.pred_eps(schedule, x_t, t, head)
        return (x_t - extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t) * eps) / extract(
            schedule.sqrt_alphas_cumprod, t, x_t)

    def target(self, schedule, x0, x_t, t, eps):
        return x_t / 2 - 2 * eps / extract(schedule.sqrt_one_minus_alphas_cumprod, t, x_t)

    def eps_continuous(self, x_t, head, alpha_bar):
        return (x_t / 2 - head) * math.sqrt(1 - alpha_bar) / 2

    def precondition(self, a, s, m, S, r_inv):
        # head = u x_t + w (E[eps | x_t] + (a S / r) F), E[eps | x_t] = s (x_t - a m) / r^2, u = 1/2, w = -2 / s
        return 0.5 - 2 * r_inv * r_inv, 2 * r_inv * r_inv * a * m, 2 * a * S * r_inv / s


class GridOnly(MeanType):
    """A head with meaning only on the grid's steps (x_0 itself, declared so): no preconditioner, no eps
    between steps."""

    def pred_x0(self, schedule, x_t, t, head):
        return head

    def target(self, schedule, x0, x_t, t, eps):
        return x0


@pytest.fixture
def registered(monkeypatch):
    """``half_score`` and ``grid_only`` registered for one test; the registry is as before afterwards."""
    before = MEAN_TYPES.names()
    monkeypatch.setattr(MEAN_TYPES, "_items", dict(MEAN_TYPES._items))
    kinds = {"half_score": HalfScore(), "grid_only": GridOnly()}
    for name, kind in kinds.items():
        MEAN_TYPES.register(name, kind)
    yield kinds
    monkeypatch.undo()
    assert MEAN_TYPES.names() == before


def _zero_net_model(mean_type: str, dim: int = 2, precondition: bool = True):
    """A float64 model whose network outputs 0: with the preconditioner, the exact reverse process of
    N(M, S^2) data, if its coefficients are the mean type's."""
    torch.manual_seed(0)
    net = MLPDenoiser(dim, width=16, depth=1)
    with torch.no_grad():
        net.out[-1].weight.zero_()
        net.out[-1].bias.zero_()
    model = DiffusionModel(net, make_schedule("linear", T), mean_type, data_shape=(dim,), precondition=precondition,
                           data_moments=(M, S) if precondition else None)
    return model.double()


def test_the_registered_formula_trains(registered):
    """The simple loss regresses the head on the test type's target, x_t / 2 - 2 eps / s."""
    model = _zero_net_model("half_score", precondition=False)
    torch.nn.init.normal_(model.net.out[-1].weight, std=0.3)
    x0 = M + S * torch.randn(32, 2, generator=gen(5), dtype=torch.float64)
    loss = Simple()
    value = loss(model, x0, gen(6))
    t, _, noise, x_t = loss.draw(model, x0, gen(6))  # the same draws
    s = (1 - model.schedule.alphas_cumprod[t]).sqrt()[:, None]
    target = x_t / 2 - 2 * noise / s
    assert torch.allclose(value, ((target - model(x_t, t)) ** 2).mean(1), rtol=1e-10, atol=1e-12)


def test_the_registered_formula_samples_and_preconditions(registered):
    """A zero network under the test type's preconditioner is the Gaussian data's exact reverse process:
    on the grid (x_0, eps, mean), between steps (the score) and through the samplers."""
    model = _zero_net_model("half_score")
    kind = registered["half_score"]
    assert model.diffusion.mean_kind is kind and model.precond.mean_kind is kind
    oracle = MixtureOracle(GaussianMixture([1.0], torch.full((1, 2), M), [S * S]), model.schedule)
    x = M + S * torch.randn(64, 2, generator=gen(0), dtype=torch.float64)
    for t in (1, 7, 50, T):
        tt = torch.full((64,), t)
        ab = model.schedule.alphas_cumprod[t]
        x_t = ab.sqrt() * x + (1 - ab).sqrt() * torch.randn(x.shape, generator=gen(t), dtype=torch.float64)
        mine, exact = model.p_mean_variance(x_t, tt), oracle.p_mean_variance(x_t, tt)
        for a, b in ((mine.pred_x0, exact.pred_x0), (mine.pred_eps, exact.pred_eps), (mine.mean, exact.mean)):
            assert torch.allclose(a, b, atol=1e-8), (t, (a - b).abs().max())
    ab = float(model.schedule.alphas_cumprod[33:35].mean())  # between steps 33 and 34
    assert torch.allclose(model.score(x, 33.5, ab), oracle.score(x, 33.5, ab), atol=1e-8)
    x_T = torch.randn(200, 2, generator=gen(9), dtype=torch.float64)
    for sampler in ("ddim", "ode"):
        a, b = (sample(m, 200, sampler=sampler, steps=10, x_T=x_T) for m in (model, oracle))
        assert torch.allclose(a, b, atol=1e-6), (sampler, (a - b).abs().max())


def test_a_config_trains_and_a_run_keeps_the_registered_type(registered, tmp_path):
    cfg = load_config("default", ["model.mean_type='half_score'", "train.iters=3", "train.batch_size=64",
                                  "schedule.steps=20", "model.width=8", "model.depth=1", "train.ema_decay=0.5"])
    trainer = Trainer.from_config(cfg, out=tmp_path / "run")
    trainer.run(progress=False)
    trainer.save()
    assert trainer.sampling_model.diffusion.mean_kind is registered["half_score"]  # the EMA copy shares it
    assert all(math.isfinite(v) for v in trainer.loss_history)
    run = load_run(tmp_path / "run")
    assert run.model.mean_type == "half_score" and run.model.diffusion.mean_kind is registered["half_score"]
    assert torch.equal(sample(run.model, 50, sampler="ddim", steps=5, generator=gen(1)),
                       sample(trainer.sampling_model, 50, sampler="ddim", steps=5, generator=gen(1)))


def test_flags_decide_what_a_mean_type_may_do(registered):
    """A type without a preconditioner or an eps between steps is refused those in one line, by the
    config and the model alike, and still trains and samples on its grid."""
    with pytest.raises(DDPMLabError, match="precondition = true needs model.mean_type = .*half_score"):
        load_config("default", ["model.mean_type='grid_only'"])
    with pytest.raises(DDPMLabError, match="precondition = true needs mean_type .*half_score"):
        _zero_net_model("grid_only")
    model = _zero_net_model("grid_only", precondition=False)
    with pytest.raises(DDPMLabError, match="between steps"):
        model.eps_continuous(torch.zeros(4, 2, dtype=torch.float64), 3.5, 0.5)
    with pytest.raises(DDPMLabError, match="cannot be respaced"):
        model.respaced(10)
    assert load_config("default", ["model.mean_type='grid_only'", "model.precondition=false"]).model.mean_type \
        == "grid_only"
    assert sample(model, 20, sampler="ancestral", generator=gen(2)).shape == (20, 2)
    MEAN_TYPES.register("a_function", lambda schedule, x_t, t, head: head)  # the registry's old entries
    with pytest.raises(DDPMLabError, match="not a dl.MeanType"):
        _zero_net_model("a_function", precondition=False)

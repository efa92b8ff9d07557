"""Oracles for ``objectives/consistency.py`` (issue 27, mutation testing): the papers' defaults, the
refusals word for word and their boundaries, the two-point discretisation, the pseudo-Huber distance and
the teacher's Euler / Heun substeps against plain loops, the loss on 2-D data without preconditioning
(c = huber k sqrt(d), k = 1 / 0.5) by hand, and the curriculum's checkpoint."""
import math

import pytest
import torch

from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.consistency import T_MIN, ConsistencyModel
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.objectives.consistency import (ConsistencyDistillation, ConsistencyTraining, karras_levels,
                                            lognormal_weights, pseudo_huber)


def test_the_defaults_are_the_papers():
    ct, cd = ConsistencyTraining(), ConsistencyDistillation()
    shared = ("rho", "p_mean", "p_std", "huber")
    for obj in (ct, cd):
        assert tuple(getattr(obj, a) for a in shared) == (7.0, -1.1, 2.0, 0.00054)
    assert (ct.s0, ct.s1, ct.double_every, ct.step) == (10, 1280, 500, 0)
    assert (cd.n_steps, cd.solver, cd.substeps, cd.teacher) == (18, "heun", 1, None)
    assert cd.points() == 18 and cd.levels(1.0)[0].numel() == 18
    t, sigma = karras_levels(6)
    t7, sigma7 = karras_levels(6, 7.0, 80.0)
    assert torch.equal(t, t7) and torch.equal(sigma, sigma7)
    ConsistencyTraining(s0=4, s1=4, double_every=1)  # the boundaries that are allowed
    ConsistencyDistillation(n_steps=2, substeps=1, solver="euler")


@pytest.mark.parametrize("kw", [{"rho": 0.0}, {"p_std": 0.0}, {"huber": 0.0}])
def test_the_shared_refusals(kw):
    args = {"rho": 7.0, "p_std": 2.0, "huber": 0.00054, **kw}
    for cls in (ConsistencyTraining, ConsistencyDistillation):
        with pytest.raises(DDPMLabError) as err:
            cls(**kw)
        assert str(err.value) == (f"{cls.name} needs rho > 0, p_std > 0 and huber > 0, got rho = {args['rho']}, "
                                  f"p_std = {args['p_std']}, huber = {args['huber']}")


@pytest.mark.parametrize("s0, s1, every", [(0, 5, 1), (6, 5, 1), (2, 5, 0)])
def test_the_curriculum_refusals(s0, s1, every):
    with pytest.raises(DDPMLabError) as err:
        ConsistencyTraining(s0=s0, s1=s1, double_every=every)
    assert str(err.value) == (f"consistency_training's curriculum needs 1 <= s0 <= s1 and double_every >= 1, got "
                              f"s0 = {s0}, s1 = {s1}, double_every = {every}")


def test_the_distillation_refusals():
    for kw, n, sub in (({"n_steps": 1}, 1, 1), ({"substeps": 0}, 18, 0)):
        with pytest.raises(DDPMLabError) as err:
            ConsistencyDistillation(**kw)
        assert str(err.value) == f"consistency_distill needs n_steps >= 2 and substeps >= 1, got {n}, {sub}"
    with pytest.raises(DDPMLabError) as err:
        ConsistencyDistillation(solver="rk4")
    assert str(err.value) == "consistency_distill's solver must be one of euler, heun, got 'rk4'"
    with pytest.raises(DDPMLabError) as err:
        ConsistencyDistillation().before_draw(None)
    assert str(err.value) == ("consistency_distill needs a teacher: set train.teacher = the directory of a "
                              "finished run (or call attach_teacher)")
    with pytest.raises(DDPMLabError) as err:
        karras_levels(1)
    assert str(err.value) == "a consistency discretisation needs at least 2 points, got 1"


def test_two_points_are_t_min_and_the_prior():
    t, sigma = karras_levels(2, 3.0, 5.0)
    assert t.tolist() == [T_MIN, 1.0]
    assert sigma.tolist() == pytest.approx([T_MIN / (1 - T_MIN), 5.0], rel=1e-12)
    p = lognormal_weights(torch.tensor([0.1, 0.5, 1.0], dtype=torch.float64), 0.3, 0.7)
    cdf = [0.5 * (1 + math.erf((math.log(s / (1 - s)) - 0.3) / (0.7 * math.sqrt(2)))) for s in (0.1, 0.5)] + [1.0]
    norm = cdf[2] - cdf[0]  # P(i) normalised over the intervals
    assert p.tolist() == pytest.approx([(cdf[1] - cdf[0]) / norm, (cdf[2] - cdf[1]) / norm], rel=1e-12)


def test_pseudo_huber_over_all_of_an_examples_dimensions():
    a = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    b = torch.randn(3, 2, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    got = pseudo_huber(a, b, 0.7)
    for j in range(3):
        sq = sum((float(a[j].flatten()[k]) - float(b[j].flatten()[k])) ** 2 for k in range(8))
        assert got[j].item() == pytest.approx(math.sqrt(sq + 0.49) - 0.7, rel=1e-12)


class Stand:
    """velocity(x, t) = x t + 1 per row t, returned in float64 (a dtype the step must drop)."""

    def __init__(self):
        self.dtypes = []

    def velocity(self, x, t):
        self.dtypes.append(t.dtype)
        return (x * t.reshape(-1, 1) + 1).double()


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_teacher_substeps_by_hand(solver):
    obj = ConsistencyDistillation(solver=solver, substeps=3)
    teacher = Stand()
    obj.attach_teacher(teacher)
    assert obj.teacher is teacher
    x = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    t_from, t_to = torch.tensor([0.9, 0.6], dtype=torch.float64), torch.tensor([0.3, 0.45], dtype=torch.float64)
    got = obj.teacher_step(x, t_from, t_to)
    assert got.dtype == torch.float32 and set(teacher.dtypes) == {torch.float32}
    for j in range(2):
        h = (float(t_to[j]) - float(t_from[j])) / 3
        y, t = [float(v) for v in x[j]], float(t_from[j])
        for _ in range(3):
            v = [yi * t + 1 for yi in y]
            if solver == "euler":
                y = [yi + h * vi for yi, vi in zip(y, v)]
            else:
                e = [yi + h * vi for yi, vi in zip(y, v)]
                y = [yi + h * 0.5 * (vi + (ei * (t + h) + 1)) for yi, vi, ei in zip(y, v, e)]
            t += h
        assert got[j].tolist() == pytest.approx(y, rel=1e-5)


def test_the_loss_on_2d_data_by_hand():
    """Without preconditioning sigma_data = 1, k = 2: levels to sigma_max 160, p_mean -1.1 + log 2 and
    c = huber 2 sqrt(2); a large huber so that c counts."""
    torch.manual_seed(0)
    m = ConsistencyModel(MLPDenoiser(2, width=16, depth=1, time_dim=8), (2,), precondition=False).double()
    obj = ConsistencyTraining(s0=6, huber=0.3, p_mean=-0.5, p_std=1.5)
    x0 = torch.randn(16, 2, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    loss = obj(m, x0, torch.Generator().manual_seed(2))
    t, sigma = karras_levels(7, 7.0, 160.0)
    p = lognormal_weights(t, -0.5 + math.log(2), 1.5)
    g = torch.Generator().manual_seed(2)
    i = torch.multinomial(p, 16, replacement=True, generator=g).tolist()
    z = torch.randn(16, 2, generator=g, dtype=torch.float64)
    c = 0.3 * 2 * math.sqrt(2)
    with torch.no_grad():
        for j in range(16):
            a, b = float(t[i[j]]), float(t[i[j] + 1])
            pred = m.flow_map((1 - b) * x0[j:j + 1] + b * z[j:j + 1], b, 0.0)
            target = m.flow_map((1 - a) * x0[j:j + 1] + a * z[j:j + 1], a, 0.0)
            d = float((pred - target).square().sum())
            want = (math.sqrt(d + c * c) - c) / (float(sigma[i[j] + 1]) - float(sigma[i[j]]))
            assert loss[j].item() == pytest.approx(want, rel=1e-8, abs=1e-14)
    assert obj.step == 1


def test_the_curriculum_step_is_checkpointed_as_int64():
    obj = ConsistencyTraining()
    obj.step = 7
    state = obj.state_dict()
    assert list(state) == ["curriculum_step"] and state["curriculum_step"].dtype == torch.int64
    assert int(state["curriculum_step"]) == 7
    again = ConsistencyTraining()
    again.step = 3
    again.load_state_dict({})  # an older checkpoint: the step stays
    assert again.step == 3


def test_more_allowed_boundaries_and_the_draws_default_scale():
    ConsistencyTraining(s0=1, s1=1, rho=0.5, p_std=0.5)
    obj = ConsistencyDistillation(n_steps=5)
    x0 = torch.zeros(20, 1, dtype=torch.float64)
    a = obj.draw(x0, generator=torch.Generator().manual_seed(1))
    t, sigma, p = obj.levels(1.0)  # k = 1 unless told
    g = torch.Generator().manual_seed(1)
    i = torch.multinomial(p, 20, replacement=True, generator=g)
    assert torch.equal(a.t_lo, t[i]) and torch.equal(a.t_hi, t[i + 1])
    assert torch.equal(a.weight, 1 / (sigma[i + 1] - sigma[i]))
    assert torch.equal(a.z, torch.randn(20, 1, generator=g, dtype=torch.float64))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_loss_of_one_example_by_hand(dtype):
    """One example (c from that example's own size), the data's dtype kept; labels go on to the model
    (which refuses them: a consistency model is unconditional)."""
    torch.manual_seed(0)
    m = ConsistencyModel(MLPDenoiser(2, width=16, depth=1, time_dim=8), (2,), precondition=False).to(dtype)
    obj = ConsistencyTraining(s0=6, huber=0.3)
    x0 = torch.tensor([[0.4, -1.2]], dtype=dtype)
    with pytest.raises(DDPMLabError, match="^a consistency model is unconditional here; it takes no condition$"):
        obj(m, x0, torch.Generator().manual_seed(2), torch.tensor([2]))
    with pytest.raises(DDPMLabError, match="^a consistency model is unconditional here; it takes no condition$"):
        obj.loss_at(m, x0, obj.draw(x0), torch.tensor([2]))
    obj.step = 0
    loss = obj(m, x0, torch.Generator().manual_seed(2))
    t, sigma = karras_levels(7, 7.0, 160.0)
    g = torch.Generator().manual_seed(2)
    i = int(torch.multinomial(lognormal_weights(t, -1.1 + math.log(2), 2.0), 1, replacement=True, generator=g))
    z = torch.randn(1, 2, generator=g, dtype=dtype)
    a, b = float(t[i]), float(t[i + 1])
    c = 0.3 * 2 * math.sqrt(2)
    with torch.no_grad():
        pred = m.flow_map((1 - b) * x0 + b * z, b, 0.0)
        target = m.flow_map((1 - a) * x0 + a * z, a, 0.0)
        d = float((pred - target).double().square().sum())
    want = (math.sqrt(d + c * c) - c) / (float(sigma[i + 1]) - float(sigma[i]))
    assert loss.dtype == dtype and loss.shape == (1,)
    assert loss.item() == pytest.approx(want, rel=1e-8 if dtype == torch.float64 else 1e-4)


class StandMap:
    """flow_map(x, t, s, cond) = x (1 + t) + cond per row (a stand-in conditional flow map)."""

    sigma_data = 1.0

    def flow_map(self, x, t, s, cond=None):
        t = torch.as_tensor(t, dtype=x.dtype).reshape(-1, 1)
        return x * (1 + t) + cond.to(x.dtype).reshape(-1, 1)


def test_the_labels_reach_both_maps():
    obj = ConsistencyTraining(huber=0.1)
    x0 = torch.tensor([[1.0], [-0.5]], dtype=torch.float64)
    pairs = obj.draw(x0, 1.0, torch.Generator().manual_seed(0))
    cond = torch.tensor([3.0, -7.0], dtype=torch.float64)
    got = obj.loss_at(StandMap(), x0, pairs, cond)
    for j in range(2):
        a, b, w, z = (float(v[j]) for v in (pairs.t_lo, pairs.t_hi, pairs.weight, pairs.z[:, 0]))
        x0j = float(x0[j, 0])
        pred = ((1 - b) * x0j + b * z) * (1 + b) + float(cond[j])
        target = ((1 - a) * x0j + a * z) * (1 + a) + float(cond[j])
        c = 0.1 * 2
        assert got[j].item() == pytest.approx((math.sqrt((pred - target) ** 2 + c * c) - c) * w, rel=1e-12)

"""Oracles for ``objectives/reflow.py`` (issue 27, mutation testing): the defaults and refusals word for
word, the teacher's transport called with the objective's solver, the couples drawn once per round, and
the loss on 2-D float32 data against a plain loop over a stand-in teacher of closed form."""
import pytest
import torch

from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.flow_model import FlowModel
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.objectives.reflow import NO_TEACHER, Reflow


class AffineTeacher:
    """transport(z) = 2 z + 1 in float64 (a dtype the couples must drop), each call recorded."""

    def __init__(self):
        self.calls = []

    def transport(self, z, solver, steps):
        self.calls.append((tuple(z.shape), solver, steps))
        return (2 * z + 1).double()


def _flow(dim=2):
    torch.manual_seed(0)
    return FlowModel(MLPDenoiser(dim, width=16, depth=1, time_dim=8), data_shape=(dim,))


def test_defaults_and_state():
    obj = Reflow()
    assert (obj.rounds, obj.pairs, obj.solver, obj.solver_steps) == (1, 10_000, "heun", 100)
    assert (obj.teacher, obj.round, obj._coupling) == (None, 1, None)
    Reflow(rounds=1, pairs=1, solver="x", solver_steps=1)  # the smallest allowed


@pytest.mark.parametrize("name", ["rounds", "pairs", "solver_steps"])
@pytest.mark.parametrize("bad", [0, True, 2.0])
def test_refusals_are_one_sentence(name, bad):
    with pytest.raises(DDPMLabError) as err:
        Reflow(**{name: bad})
    assert str(err.value) == f"the reflow objective's {name} must be a whole number >= 1, got {bad!r}"


@pytest.mark.parametrize("bad", ["", 3])
def test_the_solver_must_be_a_name(bad):
    with pytest.raises(DDPMLabError) as err:
        Reflow(solver=bad)
    assert str(err.value) == f"the reflow objective's solver must be an ODE solver's name, got {bad!r}"


def test_without_a_teacher_and_with_labels_it_refuses():
    with pytest.raises(DDPMLabError) as err:
        Reflow().couple(torch.zeros(2, 1))
    assert str(err.value) == NO_TEACHER
    obj = Reflow(pairs=4)
    obj.attach_teacher(AffineTeacher())
    with pytest.raises(DDPMLabError) as err:
        obj(_flow(), torch.zeros(3, 2), cond=torch.zeros(3, dtype=torch.long))
    assert str(err.value) == "the reflow objective is unconditional here: drop the class labels"


def test_couples_are_drawn_once_per_round_with_the_objectives_solver():
    teacher, obj = AffineTeacher(), Reflow(pairs=7, solver="rk45", solver_steps=13)
    obj.attach_teacher(teacher, round=2.0)
    assert obj.teacher is teacher and obj.round == 2 and isinstance(obj.round, int)
    z, x = obj.coupling((2,), torch.float32, torch.Generator().manual_seed(1))
    assert teacher.calls == [((7, 2), "rk45", 13)]
    want = torch.randn((7, 2), generator=torch.Generator().manual_seed(1), dtype=torch.float32)
    assert z.dtype == x.dtype == torch.float32 and torch.equal(z, want) and torch.equal(x, 2 * want + 1)
    assert obj.coupling((2,), torch.float32) is obj._coupling and len(teacher.calls) == 1  # kept
    obj.attach_teacher(teacher, round=3)
    assert obj._coupling is None and obj.round == 3  # a new round draws again


def test_the_loss_is_flow_matching_on_the_couples_by_hand():
    teacher, obj, model = AffineTeacher(), Reflow(pairs=9, solver="euler", solver_steps=4), _flow()
    obj.attach_teacher(teacher)
    x0 = torch.zeros(6, 2)  # only its shape and dtype count: the couples are the data
    got = obj(model, x0, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    z_all = torch.randn(9, 2, generator=g)
    rows = torch.randint(0, 9, (6,), generator=g).tolist()
    t = torch.rand(6, generator=g, dtype=torch.float64).tolist()
    assert got.shape == (6,) and got.dtype == torch.float32
    with torch.no_grad():
        for i in range(6):
            z = z_all[rows[i]][None]
            x = 2 * z + 1
            xt = (1 - t[i]) * x + t[i] * z
            v = model.velocity(xt, torch.tensor([t[i]], dtype=torch.float32))
            want = ((v - (z - x)) ** 2).mean()
            assert got[i].item() == pytest.approx(want.item(), rel=1e-5, abs=1e-7)


def test_a_teacher_attached_without_a_round_starts_round_one():
    obj = Reflow()
    obj.attach_teacher(AffineTeacher(), round=3)
    obj.attach_teacher(AffineTeacher())
    assert obj.round == 1


def test_only_a_flow_is_trained():
    oracle = MixtureOracle(GaussianMixture([1.0], [[0.0]], [1.0]), make_schedule("linear", 10))
    with pytest.raises(DDPMLabError) as err:
        Reflow().bind(oracle)
    assert str(err.value).startswith("objective = 'reflow' does not serve a ddpm model (")

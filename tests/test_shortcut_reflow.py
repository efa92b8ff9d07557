"""Shortcut models (Frans et al. 2024) on the flow-map family and reflow (Liu et al. 2022) on the flow
family: each objective's target against a plain per-example loop, the exact map's self-consistency, the
reflow couples of the exact flow against the exact map, their monotonicity in 1-D, and the CLI."""
import json

import numpy as np
import pytest
import torch

import ddpmlab as dl
from ddpmlab.cli import main
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.flow_map import exact_flow_map
from ddpmlab.models.flow_model import FlowModel
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.models.meanflow import MeanFlowMixtureOracle, MeanFlowModel
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.objectives.reflow import Reflow
from ddpmlab.objectives.shortcut import Shortcut
from ddpmlab.training.teacher import StudentAsTeacher, TeacherFlow
from conftest import gen

MIXTURE = dl.GaussianMixture([0.3, 0.7], [[-1.5], [1.0]], [0.2, 0.4])


def _meanflow(dim=1):
    torch.manual_seed(0)
    return MeanFlowModel(MLPDenoiser(dim, width=16, depth=1, time_dim=8), data_shape=(dim,)).double()


# -- shortcut -----------------------------------------------------------------------------------------
def test_shortcut_draws_are_power_of_two_steps_on_their_grid():
    obj = Shortcut(max_steps=8, bootstrap=0.5)
    t, d, consistent = obj.draws(4000, gen(0))
    assert int(consistent.sum()) == 2000 and bool(consistent[:2000].all())
    step = Shortcut.step_of(d, consistent, 8)[consistent]
    assert set(step.tolist()) == {1.0, 0.5, 0.25, 0.125}
    slots = t[consistent] / step  # t a multiple of 2d in [2d, 1]
    assert torch.allclose(slots, slots.round()) and bool((slots >= 1).all()) and bool((t <= 1).all())
    assert bool((d[consistent][step == 0.125] == 0).all())  # the finest level's half step: d = 0
    assert bool((d[~consistent] == 0).all()) and bool((t[~consistent] > 0).all())


def test_shortcut_loss_is_the_per_example_loop():
    model, obj = _meanflow(2), Shortcut(max_steps=4, bootstrap=0.5)
    x0 = torch.randn(10, 2, generator=gen(1), dtype=torch.float64)
    got = obj(model, x0, gen(2))
    g = gen(2)
    t, d, consistent = obj.draws(10, g)
    eps = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    want = []
    with torch.no_grad():
        for i in range(10):
            ti, di = float(t[i]), float(d[i])
            x = (1 - ti) * x0[i:i + 1] + ti * eps[i:i + 1]
            if consistent[i]:
                first = model.average_velocity(x, ti - di, ti)
                second = model.average_velocity(x - di * first, ti - 2 * di, ti - di)
                target, step = (first + second) / 2, (2 * di if di > 0 else 1 / 4)
            else:
                target, step = eps[i:i + 1] - x0[i:i + 1], 0.0
            want.append(float((model.average_velocity(x, ti - step, ti) - target).square().mean()))
    assert torch.allclose(got.detach(), torch.tensor(want, dtype=torch.float64), atol=1e-12)


@pytest.mark.parametrize("t,d", [(1.0, 0.5), (0.75, 0.25), (0.5, 0.125), (1.0, 0.25)])
def test_the_exact_map_is_self_consistent(t, d):
    """u(x, t, 2d) = (u(x, t, d) + u(x', t - d, d)) / 2 for the exact flow map (to 1e-4)."""
    oracle = MeanFlowMixtureOracle(MIXTURE)
    x = torch.tensor([[-2.0], [-0.4], [0.3], [1.9]], dtype=torch.float64)
    for row in x:
        row = row[None]
        residual = oracle.average_velocity(row, t - 2 * d, t) - Shortcut.consistency_target(oracle, row, t, d)
        assert float(residual.abs().max()) < 1e-4
    bent = oracle.average_velocity(x[:1], t - d, t) - oracle.average_velocity(x[:1], t - 2 * d, t)
    assert float(bent.abs().max()) > 1e-3  # the residual is not zero for want of a curve


def test_shortcut_refusals():
    for bad in (3, 0, True, 2.0):
        with pytest.raises(DDPMLabError, match="power of two"):
            Shortcut(max_steps=bad)
    with pytest.raises(DDPMLabError, match="does not serve"):
        Shortcut()(FlowModel(MLPDenoiser(1, width=8, depth=1)), torch.zeros(4, 1))


# -- reflow -------------------------------------------------------------------------------------------
def _couples(teacher, n=400, **options):
    obj = Reflow(pairs=n, **options)
    obj.attach_teacher(TeacherFlow(teacher))
    return obj.coupling((1,), torch.float64, gen(3))


@pytest.mark.parametrize("teacher", ["network", "ddpm oracle"])
def test_reflow_couples_are_monotone_in_1d(teacher):
    if teacher == "network":
        torch.manual_seed(1)
        model = FlowModel(MLPDenoiser(1, width=16, depth=1, time_dim=8)).double().eval()
    else:
        model = MixtureOracle(MIXTURE, make_schedule("cosine", 100))
    z, x = _couples(model)
    order = torch.argsort(z[:, 0])
    assert bool((x[order, 0].diff() > 0).all())
    assert float(x.std()) > 0.1  # not a constant map


def test_reflow_couples_of_the_exact_flow_are_the_exact_map():
    oracle = FlowMixtureOracle(MIXTURE)
    z, x = _couples(oracle, n=200, solver_steps=200)  # Heun: second order
    assert float((x - exact_flow_map(oracle, z, 1.0, 0.0)).abs().max()) < 1e-4
    z, x = _couples(oracle, n=200)  # the default solve: Heun at 100 steps
    assert float((x - exact_flow_map(oracle, z, 1.0, 0.0)).abs().max()) < 1e-3


def test_reflow_loss_is_the_per_example_loop():
    oracle = FlowMixtureOracle(MIXTURE)
    torch.manual_seed(2)
    model = FlowModel(MLPDenoiser(1, width=16, depth=1, time_dim=8)).double()
    obj = Reflow(pairs=50, solver="euler", solver_steps=10)
    obj.attach_teacher(TeacherFlow(oracle))
    x0 = torch.zeros(12, 1, dtype=torch.float64)  # unused but for its shape: the couples are the data
    got = obj(model, x0, gen(4))
    g = gen(4)
    z_all = torch.randn(50, 1, generator=g, dtype=torch.float64)
    rows = torch.randint(0, 50, (12,), generator=g)
    t = torch.rand(12, generator=g, dtype=torch.float64)
    want = []
    with torch.no_grad():
        for i in range(12):
            z = z_all[rows[i]][None]
            x = z.clone()
            for k in range(10):  # Euler from t = 1 to 0 on the exact velocity
                x = x - 0.1 * oracle.velocity(x, 1 - k / 10)
            xt = (1 - t[i]) * x + t[i] * z
            want.append(float((model.velocity(xt, float(t[i])) - (z - x)).square().mean()))
    assert torch.allclose(got.detach(), torch.tensor(want, dtype=torch.float64), atol=1e-10)


def test_reflow_refusals_and_rounds():
    with pytest.raises(DDPMLabError, match="needs a teacher"):
        Reflow()(FlowModel(MLPDenoiser(1, width=8, depth=1)), torch.zeros(4, 1))
    for bad in ({"rounds": 0}, {"pairs": 1.5}, {"solver_steps": True}):
        with pytest.raises(DDPMLabError, match="whole number"):
            Reflow(**bad)
    hook = StudentAsTeacher(Reflow(rounds=3), 3)
    assert [hook.round_at(s, 9) for s in range(9)] == [1, 1, 1, 2, 2, 2, 3, 3, 3]


@pytest.fixture(scope="module")
def teacher_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("teacher")
    tiny = ["--set", "train.iters=20", "--set", "train.batch_size=64", "--set", "model.width=8",
            "--set", "model.depth=1"]
    assert main(["train", "--config", "flow", *tiny, "--out", str(root / "flow")]) == 0
    return root / "flow", tiny


def test_reflow_cli_rounds_save_reload_and_sample(teacher_run, tmp_path, capsys):
    teacher, tiny = teacher_run
    run = tmp_path / "rf"
    assert main(["train", "--config", "reflow", *tiny, "--set", f"train.teacher={teacher}", "--set",
                 "train.objective_options={rounds = 2, pairs = 256, solver_steps = 20}", "--out", str(run)]) == 0
    for steps in ("1", "2", "4"):
        out = tmp_path / f"x{steps}.npy"
        assert main(["sample", str(run), "--steps", steps, "-n", "16", "--seed", "5", "--out", str(out)]) == 0
        again = tmp_path / f"y{steps}.npy"
        assert main(["sample", str(run), "--steps", steps, "-n", "16", "--seed", "5", "--out", str(again)]) == 0
        assert np.isfinite(np.load(out)).all() and np.array_equal(np.load(out), np.load(again))
    capsys.readouterr()
    # evaluate: its 1-, 2- and 4-step samples beside the exact velocity's and the exact map's, and the floor
    assert main(["evaluate", str(run), "--samples", "400", "--n-ode", "0", "--n-bound", "2"]) == 0
    printed = capsys.readouterr().out
    few = json.loads((run / "evaluation.json").read_text())["model"]["few_step"]
    assert few["steps"] == [1, 2, 4] and len(few["model"]) == len(few["oracle"]) == 3
    # the exact map of the prior is the data: its W1 is near the floor; one Euler step of the exact velocity
    # lands every sample on the data's mean, far from it
    assert few["exact_map"] < 3 * few["floor"] < few["oracle"][0]
    assert f"W1 of the exact map (n={few['n']})" in printed and f"{few['exact_map']:.4f}" in printed


@pytest.mark.parametrize("args,words", [
    (["--set", "train.teacher=NOWHERE"], "not a finished run"),
    (["--set", "data.name=moons", "--set", "train.teacher=TEACHER"], "other data"),
    ([], "needs a teacher")])
def test_reflow_cli_teacher_refusals_are_one_line(teacher_run, tmp_path, capsys, args, words):
    teacher, tiny = teacher_run
    args = [a.replace("TEACHER", str(teacher)).replace("NOWHERE", str(tmp_path / "none")) for a in args]
    assert main(["train", "--config", "reflow", *tiny, *args, "--out", str(tmp_path / "rf")]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and err.startswith("ddpmlab train: error:")
    assert not (tmp_path / "rf").exists()

"""Issue 21, class 9: the Python API used the wrong way. Each misuse of ``dl.Trainer``, ``dl.sample`` and
``dl.evaluate`` is refused at ddpmlab's boundary by one ``DDPMLabError`` line (never a failure deep inside
torch, never a silently wrong result), and nothing on disk changes: the trainer owns its ``out`` under the
CLI's rules (a directory of your own files, another run, or a run that is busy is never written).

One table of misuses (``MISUSE``), each run in a workspace holding copies of a finished and an interrupted
run (built once); then what works: a new directory, ``resume=True``, ``overwrite=True``, float64 and NumPy
data, an objective by name.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading

import numpy as np
import pytest
import torch
from torch import nn

import ddpmlab as dl
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.runs.checkpoint import checkpoint_dirs
from ddpmlab.runs.ownership import LOCK_FILE, MARKER_FILE, DirectoryClaim
from hostile_support import tree

X = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))  # (N, 2) training data
OPTS = dict(batch_size=16, checkpoint_every=2)


def model(num_classes: int = 0, net: nn.Module | None = None) -> dl.DiffusionModel:
    torch.manual_seed(0)
    net = net if net is not None else MLPDenoiser(2, width=16, depth=1, num_classes=num_classes)
    return dl.DiffusionModel(net, dl.make_schedule("linear", 20), data_shape=(2,))


class TimeNet(nn.Module):
    """A user's network: net(x, tau), no condition."""

    def __init__(self, width_in: int = 2):
        super().__init__()
        self.lin = nn.Linear(width_in + 1, 2)

    def forward(self, x, tau):
        return self.lin(torch.cat([x, tau[:, None].to(x.dtype)], 1))


class NeedsLabels(TimeNet):
    """A user's conditional network: net(x, tau, cond), the condition required."""

    def forward(self, x, tau, cond):
        return super().forward(x, tau)


class NoParameters(nn.Module):
    def forward(self, x, tau):
        return x


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A finished run (step 4) and an interrupted one (checkpoints 2 and 3, no run.json), through the API."""
    root = tmp_path_factory.mktemp("api_runs")
    trainer = dl.Trainer(model(), "simple", X, out=root / "finished", **OPTS)
    trainer.run(4, progress=False)
    trainer.save()
    dl.Trainer(model(), "simple", X, out=root / "interrupted", **OPTS).run(3, progress=False)
    return root


class Space:
    """A case's directory, with copies of the built runs on demand."""

    def __init__(self, root, built):
        self.root, self.built = root, built
        self.fds: list[int] = []  # locks held as another command would

    def run(self, name: str):
        dst = self.root / name
        if not dst.exists():
            shutil.copytree(self.built / name, dst)
        return dst

    def own_files(self):
        """A directory holding the user's own metrics.csv and config.toml."""
        d = self.root / "mine"
        d.mkdir()
        (d / "metrics.csv").write_text("step,accuracy\n1,0.5\n")
        (d / "config.toml").write_text("[mine]\nlr = 1\n")
        return d


def _train(out=None, **kw):
    return dl.Trainer(model(), "simple", X, out=out, **{**OPTS, **kw})


def _figures_dir(ws):
    d = ws.root / "figs"
    d.mkdir()
    (d / MARKER_FILE).write_text(json.dumps({"format": "ddpmlab-directory", "version": 1, "kind": "figures"}))
    (d / "a.png").write_bytes(b"png")
    return d


def _evaluated_run(ws):
    d = ws.run("finished")
    (d / "evaluation.json").write_text("{}")
    return d


def _a_file(ws):
    (ws.root / "f").write_text("mine")
    return ws.root / "f"


def _locked_run(ws):
    """An interrupted run another ddpmlab command holds (flock is per open file: this process's own
    later attempt is refused like another process's)."""
    d = ws.run("interrupted")
    fd = os.open(d / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, b"4242\n")
    ws.fds.append(fd)
    return d


def _run_below_the_step_reached(ws, out):
    trainer = dl.Trainer(model(), "simple", X, out=out, resume=True, **OPTS)
    trainer.run(2, progress=False)


def case(name, action, match, setup=None):
    """``setup(ws)`` makes the case's input (your files, a copied run) and returns it as ``target``;
    ``action(ws, target)`` is the misuse, which must end in one ``DDPMLabError`` line matching ``match``."""
    return pytest.param(setup, action, match, id=name)


def finished(ws):
    return ws.run("finished")


def interrupted(ws):
    return ws.run("interrupted")


def own_files(ws):
    return ws.own_files()


MISUSE = [
    # -- the run directory: the CLI's ownership rules ---------------------------------------------------
    case("out_holds_users_files", lambda ws, d: _train(d), "holds files ddpmlab did not write", own_files),
    case("save_into_users_files", lambda ws, d: _train().save(d), "holds files ddpmlab did not write", own_files),
    case("out_holds_a_finished_run", lambda ws, d: _train(d), "holds a finished run; pass overwrite=True", finished),
    case("save_over_a_finished_run", lambda ws, d: _train().save(d), "holds a finished run", finished),
    case("out_holds_an_interrupted_run", lambda ws, d: _train(d),
         "holds checkpoints of an unfinished run; pass resume=True", interrupted),
    case("out_holds_another_kind", lambda ws, d: _train(d), "holds a figures run", _figures_dir),
    case("overwrite_beside_other_files", lambda ws, d: _train(d, overwrite=True),
         "holds evaluation.json besides a run's files", _evaluated_run),
    case("resume_and_overwrite", lambda ws, d: _train(d, resume=True, overwrite=True), "pass one", interrupted),
    case("resume_a_new_directory", lambda ws, d: _train(ws.root / "new", resume=True),
         "holds no checkpoint to resume from"),
    case("resume_without_out", lambda ws, d: _train(resume=True), "resume=True is about the run in out"),
    case("out_is_a_file", lambda ws, d: _train(d), "is not a directory", _a_file),
    case("out_in_use", lambda ws, d: _train(d, resume=True), "in use by another ddpmlab command", _locked_run),
    case("run_below_the_step_reached", _run_below_the_step_reached, "already at step 3", interrupted),
    # -- data ---------------------------------------------------------------------------------------------
    case("data_of_another_dimension", lambda ws, d: dl.Trainer(model(), "simple", torch.randn(64, 3)),
         r"data holds examples of shape \(3,\), but the model's data_shape is \(2,\)"),
    case("data_on_the_meta_device", lambda ws, d: dl.Trainer(model(), "simple", torch.randn(64, 2, device="meta")),
         "data is a meta-device tensor"),
    case("data_as_a_python_list", lambda ws, d: dl.Trainer(model(), "simple", X.tolist()),
         "data must be a torch.Tensor or NumPy array"),
    case("data_beyond_float32", lambda ws, d: dl.Trainer(
        model(), "simple", torch.full((8, 2), 1e300, dtype=torch.float64)), "beyond the range of torch.float32"),
    case("data_of_one_example", lambda ws, d: dl.Trainer(model(), "simple", X[:1]), "N >= 2"),
    case("complex_data", lambda ws, d: dl.Trainer(model(), "simple", X.to(torch.complex64)), "real numbers"),
    case("data_with_nan", lambda ws, d: dl.Trainer(model(), "simple", X.clone().fill_(float("nan"))),
         "NaN or infinite"),
    # -- model, condition, objective, generator, steps -------------------------------------------------
    case("labels_to_an_unconditional_network", lambda ws, d: dl.Trainer(
        model(net=TimeNet()), "simple", X, labels=torch.zeros(64, dtype=torch.long), **OPTS).run(1, progress=False),
        r"fails on examples of shape \(2,\) with labels \(TypeError"),
    case("no_labels_to_a_network_that_needs_them", lambda ws, d: dl.Trainer(
        model(net=NeedsLabels()), "simple", X, **OPTS).run(1, progress=False),
        r"fails on examples of shape \(2,\) without labels"),
    case("labels_outside_the_classes", lambda ws, d: dl.Trainer(model(2), "simple", X, labels=torch.full((64,), 5)),
         r"labels must lie in 0\.\.1"),
    case("float_labels", lambda ws, d: dl.Trainer(model(2), "simple", X, labels=torch.zeros(64)),
         "integer class indices"),
    case("network_without_parameters", lambda ws, d: dl.Trainer(model(net=NoParameters()), "simple", X),
         "no trainable parameters"),
    case("network_of_the_wrong_width", lambda ws, d: dl.Trainer(
        model(net=TimeNet(width_in=5)), "simple", X, **OPTS).run(1, progress=False),
        r"fails on examples of shape \(2,\) without labels \(RuntimeError: mat1"),
    case("schedule_as_a_name", lambda ws, d: dl.DiffusionModel(TimeNet(), "linear", data_shape=(2,)),
         "schedule must be a NoiseSchedule"),
    case("data_shape_of_a_fraction", lambda ws, d: dl.FlowModel(TimeNet(), data_shape=(2.5,)),
         r"data_shape must be one example's shape, whole numbers >= 1"),
    case("objective_unknown_name", lambda ws, d: dl.Trainer(model(), "simplest", X), "unknown objective 'simplest'"),
    case("objective_class_not_instance", lambda ws, d: dl.Trainer(model(), dl.objectives.Simple, X),
         "objective must be a callable"),
    case("objective_not_callable", lambda ws, d: dl.Trainer(model(), 3, X), "objective must be a callable"),
    case("generator_as_an_int", lambda ws, d: dl.Trainer(model(), "simple", X, generator=42),
         "generator must be a torch.Generator"),
    case("run_a_negative_count", lambda ws, d: _train().run(-5), "steps must be >= 0, got -5"),
    case("run_a_fraction", lambda ws, d: _train().run(2.5), "steps must be a whole number"),
    # -- sample ---------------------------------------------------------------------------------------------
    case("sample_a_fraction", lambda ws, d: dl.sample(model(), 2.5), "n must be a whole number, got 2.5"),
    case("sample_a_bool", lambda ws, d: dl.sample(model(), True), "n must be a whole number"),
    case("sample_beyond_memory", lambda ws, d: dl.sample(model(), 10 ** 12),
         r"n = 1000000000000 needs about .* of memory"),
    case("sample_steps_fraction", lambda ws, d: dl.sample(model(), 4, steps=2.5), "steps must be a whole number"),
    case("sample_generator_int", lambda ws, d: dl.sample(model(), 4, generator=7),
         "generator must be a torch.Generator"),
    case("sample_cond_of_another_length", lambda ws, d: dl.sample(model(2), 4, cond=torch.zeros(3).long()),
         r"cond has shape \(3,\); pass one condition per sample"),
    case("sample_cond_to_an_unconditional_network", lambda ws, d: dl.sample(
        model(net=TimeNet()), 4, cond=torch.zeros(4).long()), r"fails on examples of shape \(2,\) with labels"),
    # -- evaluate -------------------------------------------------------------------------------------------
    case("evaluate_reference_of_another_shape", lambda ws, d: dl.evaluate(
        model(), reference=torch.randn(100, 3), n_samples=50), r"reference holds examples of shape \(3,\)"),
    case("evaluate_reference_with_nan", lambda ws, d: dl.evaluate(
        model(), reference=torch.full((100, 2), float("nan")), n_samples=50), "reference holds NaN"),
    case("evaluate_train_of_another_shape", lambda ws, d: dl.evaluate(
        model(), reference=X, train=torch.randn(10, 1), n_samples=50), r"train holds examples of shape \(1,\)"),
    case("evaluate_dist_of_another_dimension", lambda ws, d: dl.evaluate(
        model(), dist=dl.GaussianMixture([1.0], [[0.0]], [1.0]), n_samples=50),
        r"dist draws examples of shape \(1,\)"),
    case("evaluate_n_samples_fraction", lambda ws, d: dl.evaluate(model(), reference=X, n_samples=49.5),
         "n_samples must be a whole number"),
]


@pytest.mark.parametrize("setup, action, match", MISUSE)
def test_api_misuse_is_one_line_and_changes_nothing(tmp_path, built, setup, action, match):
    ws = Space(tmp_path, built)
    try:
        target = setup(ws) if setup is not None else None
        before = tree(tmp_path)
        with pytest.raises(DDPMLabError, match=match) as err:
            action(ws, target)
        assert "\n" not in str(err.value)
        assert tree(tmp_path) == before  # nothing written, changed, removed or left behind (no lock, no dir)
    finally:
        for fd in ws.fds:
            os.close(fd)


# -- what works ---------------------------------------------------------------------------------------

def test_a_new_directory_holds_a_run_and_no_lock(tmp_path):
    out = tmp_path / "a" / "run"
    trainer = _train(out)
    assert not (tmp_path / "a").exists()  # building the trainer writes nothing
    trainer.run(3, progress=False)
    trainer.save()
    held = sorted(os.listdir(out))
    assert held == sorted([MARKER_FILE, "checkpoints", "config.toml", "data.safetensors", "metrics.csv",
                           "metrics.json", "model.safetensors", "run.json"])  # data: the tensor's rows
    trainer.run(4, progress=False)  # the trainer's own run: trained further and saved again
    assert trainer.save()["iters"] == 4


def test_an_empty_directory_is_taken(tmp_path):
    _train(tmp_path).run(2, progress=False)
    assert [s for s, _ in checkpoint_dirs(tmp_path)] == [2]


def test_resume_continues_an_interrupted_run_bit_for_bit(tmp_path, built):
    out = Space(tmp_path, built).run("interrupted")
    resumed = _train(out, resume=True)
    assert resumed.step == 3
    resumed.run(6, progress=False)
    straight = _train()
    straight.run(6, progress=False)
    assert all(torch.equal(p, q) for p, q in zip(straight.model.parameters(), resumed.model.parameters()))


def test_overwrite_replaces_a_finished_run(tmp_path, built):
    out = Space(tmp_path, built).run("finished")
    old = json.loads((out / "run.json").read_text())
    assert old["config"]["train"]["objective"] == "simple" and old["summary"]["iters"] == 4
    trainer = dl.Trainer(model(), "vlb", X, out=out, overwrite=True, **OPTS)
    assert tree(out) == tree(built / "finished")  # nothing deleted before the trainer writes
    trainer.run(1, progress=False)
    trainer.save()
    new = json.loads((out / "run.json").read_text())
    assert new["config"]["train"]["objective"] == "vlb" and new["summary"]["iters"] == 1
    assert [s for s, _ in checkpoint_dirs(out)] == [1]  # the old run's checkpoints 2, 4 are gone
    assert not (out / LOCK_FILE).exists()


def test_float64_and_numpy_data_train_in_the_models_dtype():
    for data in (X.double(), X.numpy().astype(np.float64), X.numpy()):
        trainer = dl.Trainer(model(), "simple", data, **OPTS)
        assert trainer.data.train.dtype == torch.float32
        trainer.run(2, progress=False)
        assert np.isfinite(trainer.loss_history).all()


def test_an_objective_by_name_is_the_registered_one():
    trainer = dl.Trainer(model(), "hybrid", X, hybrid_weight=0.01, **OPTS)
    assert isinstance(trainer.objective, dl.objectives.Hybrid) and trainer.objective.weight == 0.01
    assert trainer.cfg.train.objective == "hybrid"


def test_sampling_counts_and_conditions_that_are_valid():
    assert dl.sample(model(), np.int64(3)).shape == (3, 2)
    assert dl.sample(model(2), 4, cond=1).shape == (4, 2)  # one condition for every sample


def test_the_cli_claim_is_reentered_by_its_trainer_only(tmp_path):
    """``ddpmlab train`` holds the run directory and its trainer writes under that claim (a new run and
    ``--resume``); a trainer of another thread writing there meanwhile is refused like another command."""
    from hostile_support import TINY, run_main

    out = tmp_path / "cli"
    code, _, err = run_main("train", "--out", out, *TINY, "--set", "train.iters=2")
    assert code == 0, err
    code, _, err = run_main("train", "--resume", out, "--set", "train.iters=3", "--no-progress")
    assert code == 0, err
    assert json.loads((out / "run.json").read_text())["summary"]["iters"] == 3
    assert not (out / LOCK_FILE).exists()
    before = tree(out)
    errors = []

    def other_thread():
        try:
            _train(out, resume=True)
        except DDPMLabError as exc:
            errors.append(str(exc))

    with DirectoryClaim(out, "train", accept=("train",)):
        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert len(errors) == 1 and "in use by another ddpmlab command" in errors[0]
    assert tree(out) == before

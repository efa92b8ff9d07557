"""A run directory written before the library refactor (tests/data/run_v0, trained and sampled by commit
5096d30's ``ddpmlab train`` / ``ddpmlab sample``) still loads, and samples exactly as it did."""
import shutil
from pathlib import Path

import numpy as np
import pytest

from ddpmlab.cli import main
from ddpmlab.runs.format import load_run

DATA = Path(__file__).with_name("data")


@pytest.mark.parametrize("args, golden", [(["--sampler", "ode", "--steps", "10"], "ode10.npy"), ([], "ancestral.npy")])
def test_old_run_samples_as_before(tmp_path, args, golden):
    run = tmp_path / "run_v0"
    shutil.copytree(DATA / "run_v0", run)
    out = tmp_path / "x.npy"
    assert main(["sample", str(run), "-n", "50", *args, "--out", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), np.load(DATA / golden), rtol=1e-5, atol=1e-6)


def test_old_run_loads_with_its_config():
    run = load_run(DATA / "run_v0")
    assert run.cfg.model.arch == "mlp" and run.cfg.model.precondition
    assert run.model.precond.data_std.item() > 0


# Runs written by main at 30c5d1d (before families became registry objects, issue 22): a flow run of the
# moons_flow recipe and a class-conditional DDPM run of labelled 8 gaussians, each sampled there by
# ``ddpmlab sample`` with the arguments below; they load and sample the same now.
WRITTEN_BEFORE = [
    ("run_flow_v1", [], "flow_ode8.npy"),
    ("run_flow_v1", ["--grid", "shifted"], "flow_ode8_shift.npy"),
    ("run_cond_v1", ["--class", "0,3", "--guidance", "2", "-n", "20"], "cond_guided.npy"),
    ("run_cond_v1", ["--sampler", "ddim", "--steps", "10", "-n", "30"], "cond_ddim.npy"),
]


@pytest.mark.parametrize("name, args, golden", WRITTEN_BEFORE)
def test_runs_written_before_families_sample_as_before(tmp_path, name, args, golden):
    run = tmp_path / name
    shutil.copytree(DATA / name, run)
    out = tmp_path / "x.npy"
    n = [] if "-n" in args else ["-n", "50"]
    assert main(["sample", str(run), *n, *args, "--out", str(out)]) == 0
    np.testing.assert_allclose(np.load(out), np.load(DATA / golden), rtol=1e-5, atol=1e-6)


def test_runs_written_before_families_load_as_their_family():
    flow, cond = load_run(DATA / "run_flow_v1"), load_run(DATA / "run_cond_v1")
    assert flow.cfg.model.family == "flow" and cond.cfg.model.family == "ddpm"
    assert cond.cfg.model.num_classes == 8 and cond.model.net.num_classes == 8

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

"""The recommended recipe's budget rule (issue 24, ``ddpmlab.config.budget``): ``train.iters = "auto"`` is
1000 steps for 1-D data and 4000 for 2 or more dimensions, resolved when the trainer knows its data,
recorded as a number in the run's config, and replaced by any number the user gives."""
from __future__ import annotations

import subprocess
import sys
import tomllib

import numpy as np
import pytest

from ddpmlab.config.budget import AUTO, ITERS_1D, ITERS_ND, auto_iters
from ddpmlab.config.schema import load_config
from ddpmlab.training.trainer import Trainer


@pytest.mark.parametrize("shape, iters", [((1,), ITERS_1D), ((2,), ITERS_ND), ((10,), ITERS_ND),
                                          ((1, 8, 8), ITERS_ND), ((1, 1), ITERS_1D)])
def test_the_rule_counts_the_features_of_one_example(shape, iters):
    assert auto_iters(shape) == iters
    assert (ITERS_1D, ITERS_ND) == (1000, 4000)  # the numbers benchmarks/results/quality_suite_budgets.md chose


def test_the_default_recipe_leaves_its_budget_to_the_data():
    assert load_config("default").train.iters == AUTO


@pytest.mark.parametrize("data, iters", [("seed_mixture", ITERS_1D), ("moons", ITERS_ND)])
def test_the_trainer_resolves_auto_and_the_run_records_the_number(tmp_path, data, iters):
    cfg = load_config("default", [f"data.name={data!r}"])
    trainer = Trainer.from_config(cfg)
    assert trainer.cfg.train.iters == iters
    trainer.save(tmp_path / "run")
    recorded = tomllib.loads((tmp_path / "run" / "config.toml").read_text())
    assert recorded["train"]["iters"] == iters


def test_a_number_replaces_the_rule():
    cfg = load_config("default", ["data.name='moons'", "train.iters=7"])
    assert Trainer.from_config(cfg).cfg.train.iters == 7


def test_a_cli_run_on_a_users_2d_file_trains_the_rules_steps(tmp_path):
    """`ddpmlab train --config default --data mine.npy` on 2-D rows: --dry-run shows "auto", and the
    trainer's resolved number is what a user's file gets (checked without training 4000 steps)."""
    path = tmp_path / "mine.npy"
    np.save(path, np.random.default_rng(0).normal(size=(64, 2)).astype(np.float32))
    dry = subprocess.run([sys.executable, "-m", "ddpmlab", "train", "--config", "default", "--data", str(path),
                          "--dry-run"], capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr
    assert tomllib.loads(dry.stdout)["train"]["iters"] == AUTO
    cfg = load_config("default", ["data.name='file'", f"data.path={str(path)!r}"])
    assert Trainer.from_config(cfg).cfg.train.iters == ITERS_ND


@pytest.mark.parametrize("value", ["'x'", "'Auto'", "true", "1.5"])
def test_anything_else_is_one_line(value):
    from ddpmlab.core.utils import DDPMLabError
    with pytest.raises(DDPMLabError, match=r'train.iters must be an integer or "auto"'):
        load_config("default", [f"train.iters={value}"])


def test_resuming_asks_for_a_number(tmp_path):
    from ddpmlab.core.utils import DDPMLabError
    from ddpmlab.runs.resume import resume_config
    cfg = load_config("default", ["train.iters=2", "train.checkpoint_every=1", "train.batch_size=16"])
    Trainer.from_config(cfg, out=tmp_path / "run").run(progress=False)
    assert resume_config(tmp_path / "run", ["train.iters=3"]).train.iters == 3
    with pytest.raises(DDPMLabError, match="pass --set train.iters=N"):
        resume_config(tmp_path / "run", ["train.iters='auto'"])

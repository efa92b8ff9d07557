"""Tiny finished runs, their evaluations and their reports, built once per test session and shared by
test_report.py, test_report_browser.py and test_evaluate_all.py (trainings of a few dozen steps on
T = 10..20: the numbers mean nothing, the plumbing is what is tested)."""
from __future__ import annotations

import contextlib
import io
from types import SimpleNamespace

import numpy as np
import pytest

from ddpmlab.cli import main

TINY = ["--set", "model.width=16", "--set", "model.depth=1", "--set", "schedule.steps=20",
        "--set", "train.iters=40", "--set", "train.batch_size=128", "--set", "data.n_train=0", "--no-progress"]
TINY_DIGITS = ["--config", "digits", "--set", "model.width=4", "--set", "schedule.steps=10", "--set", "train.iters=2",
               "--set", "train.batch_size=8", "--set", "sample.steps=0", "--no-progress"]
QUICK_EVAL = ["--n-bound", "400", "--n-ode", "8", "--samples", "400"]
QUICK_REPORT = ["--n-bound", "300", "--n-ode", "0", "--samples", "300"]


def cli(*args):
    """``ddpmlab ARGS`` in this process: returncode, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main([str(a) for a in args])
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


def _ok(r):
    assert r.returncode == 0, r.stderr
    return r


def user_table(n: int = 240) -> np.ndarray:
    """Two correlated columns on very different scales."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=n)
    return np.c_[50 + 10 * a, 0.3 * a + 0.1 * rng.normal(size=n)]


_BUILT: dict = {}


def build(tmp_path_factory) -> SimpleNamespace:
    """Everything, once per session (``tmp_path_factory`` is the session's)."""
    if id(tmp_path_factory) not in _BUILT:
        _BUILT[id(tmp_path_factory)] = _build(tmp_path_factory)
    return _BUILT[id(tmp_path_factory)]


def _build(tmp_path_factory) -> SimpleNamespace:
    root = tmp_path_factory.mktemp("report_runs")
    runs = SimpleNamespace(root=root)
    with pytest.MonkeyPatch.context() as mp:
        from ddpmlab.evaluation import digit_classifier

        mp.setenv("DDPMLAB_CACHE", str(root / "cache"))
        mp.setattr(digit_classifier, "EPOCHS", 1)  # a quick classifier: the Frechet plumbing, not its quality
        for name, extra in (("mix1d", []), ("gauss8", ["--set", "data.name='eight_gaussians'"]),
                            ("moons", ["--set", "data.name='moons'"]),
                            ("checkerboard", ["--set", "data.name='checkerboard'"])):
            _ok(cli("train", "--config", "default", *TINY, *extra, "--out", root / name))
            setattr(runs, name, root / name)
        _ok(cli("train", *TINY_DIGITS, "--out", root / "digits"))
        runs.digits = root / "digits"
        csv = root / "user.csv"
        np.savetxt(csv, user_table(), delimiter=",", header="height,weight", comments="")
        _ok(cli("train", "--config", "default", "--data", csv, *TINY, "--out", root / "user"))
        runs.user, runs.user_csv = root / "user", csv
        runs.evaluate_out = {name: _ok(cli("evaluate", getattr(runs, name), *QUICK_EVAL)).stdout
                             for name in ("mix1d", "moons", "checkerboard", "digits", "user")}
        # 5 seeds x 2 recipes on the same data (T = 10): the fixed-small simple recipe and learned variances
        runs.comparison = []
        for seed in range(5):
            for recipe in ("default", "hybrid"):
                out = root / "cmp" / f"{recipe}_s{seed}"
                _ok(cli("train", "--config", recipe, *TINY, "--set", "schedule.steps=10", "--set", "train.iters=20",
                        "--set", f"train.seed={seed}", "--out", out))
                runs.comparison.append(out)
        runs.reports = {}
        for name, dirs in (("mix1d", [runs.mix1d]), ("gauss8", [runs.gauss8]), ("digits", [runs.digits]),
                           ("comparison", runs.comparison)):
            path = root / f"{name}.html"
            _ok(cli("report", *dirs, "--out", path, *QUICK_REPORT))
            runs.reports[name] = path
    return runs

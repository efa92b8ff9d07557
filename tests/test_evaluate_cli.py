"""``ddpmlab evaluate DIR`` on a finished run, the same evaluation at the end of ``ddpmlab tutorial``,
and the one-line refusals."""
import contextlib
import io
import json
from types import SimpleNamespace

import pytest

from conftest import oracle_ode_nll_nats
from ddpmlab.cli import main
from ddpmlab.runs.format import load_run


def run_cli(*args):
    """``ddpmlab ARGS`` in this process (a fresh interpreter costs seconds): returncode, stdout, stderr."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return SimpleNamespace(returncode=code, stdout=out.getvalue(), stderr=err.getvalue())


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("evaluate") / "run"
    r = run_cli("tutorial", "--out", str(out), "--iters", "30", "--steps", "50", "--samples", "500",
                "--no-progress")
    assert r.returncode == 0, r.stderr
    return out, r.stdout


def _check_evaluation(ev, run_dir, n_bound=None):
    for who in ("model", "oracle"):
        b = ev[who]["bound"]
        assert abs(b["prior_nats"] + b["steps_nats"] + b["decoder_nats"] - b["total_nats"]) < 1e-9
        assert b["total_nats_se"] > 0 and (n_bound is None or b["n"] == n_bound)
        s = ev[who]["samples"]
        for key in ("w1", "w1_noise_floor", "ks", "ks_noise_floor", "component_fractions"):
            assert key in s
    assert ev["data"]["entropy_nats"] == pytest.approx(2.0554, abs=1e-4)
    o = ev["oracle"]["bound"]
    assert o["total_nats"] > ev["data"]["entropy_nats"] - 4 * o["total_nats_se"]  # nothing beats the entropy
    m = ev["model"]["bound"]
    assert m["total_nats"] > ev["data"]["entropy_nats"] - 4 * m["total_nats_se"]
    assert "nll_nats" in ev["model"]["ode"] or "error" in ev["model"]["ode"]  # a 30-step model may lose the solver
    # the exact oracle's ODE NLL is a number: the entropy plus the prior's mismatch KL(q(x_T) || N(0, 1))
    ode = ev["oracle"]["ode"]
    assert ode["status"] == "solved" and ode["n"] == ev["settings"]["n_ode"], ode
    run = load_run(run_dir)
    expected = oracle_ode_nll_nats(run.dist, float(run.model.schedule.alphas_cumprod[-1]))
    assert abs(ode["nll_nats"] - expected) < 4 * ode["nll_nats_se"], (ode, expected)


def test_tutorial_writes_and_prints_the_evaluation(finished_run):
    out, stdout = finished_run
    ev = json.loads((out / "evaluation.json").read_text())
    _check_evaluation(ev, out)
    for label in ("bound (nats)", "ODE NLL", "W1", "component fractions", "entropy"):
        assert label in stdout


def test_evaluate_a_finished_run(finished_run):
    out, _ = finished_run
    (out / "evaluation.json").unlink()
    r = run_cli("evaluate", str(out), "--n-bound", "1000", "--n-ode", "16", "--samples", "1000")
    assert r.returncode == 0, r.stderr
    ev = json.loads((out / "evaluation.json").read_text())
    _check_evaluation(ev, out, n_bound=1000)
    assert ev["settings"]["n_ode"] == 16 and ev["model"]["samples"]["n"] == 1000
    assert "oracle" in r.stdout and "bound (bits/dim)" in r.stdout
    assert not list(out.glob(".*tmp"))  # written atomically, nothing left behind


def test_not_a_run_is_one_line_exit_2(tmp_path):
    r = run_cli("evaluate", str(tmp_path))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "not a finished run" in lines[0] and "Traceback" not in r.stderr


def test_unknown_distribution_is_refused(finished_run, tmp_path):
    out, _ = finished_run
    run = tmp_path / "run"
    run.mkdir()
    info = json.loads((out / "run.json").read_text())
    info["data"].pop("mixture")
    info["config"]["data"]["name"] = "nowhere"  # a named mixture would be rebuilt from its name
    (run / "run.json").write_text(json.dumps(info))
    (run / "model.safetensors").write_bytes((out / "model.safetensors").read_bytes())
    r = run_cli("evaluate", str(run))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "distribution" in lines[0]

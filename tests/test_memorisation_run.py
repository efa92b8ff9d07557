"""Memorisation in every evaluation of a run with a finite training set (issue 26): near-copies of its
training points beside true samples' fraction and the empirical optimum's, in evaluation.json, the table
and the report's rows; none for a run that trained on fresh draws."""
import json

import pytest
import torch

import ddpmlab as dl
from ddpmlab.cli import main
from ddpmlab.evaluation.finished import evaluate_finished_run, training_rows
from ddpmlab.evaluation.summary import metric_rows

TINY = ["train.iters=5", "model.width=8", "model.depth=1", "schedule.steps=20", "train.batch_size=16"]


def _train(tmp_path, name, extra):
    run = tmp_path / name
    sets = [a for s in TINY + extra for a in ("--set", s)]
    assert main(["train", "--config", "eight_gaussians", *sets, "--out", str(run), "--no-progress"]) == 0
    return run


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory):
    """A run on 16 points and its evaluation.json, made once."""
    tmp = tmp_path_factory.mktemp("memo")
    run = _train(tmp, "small", ["data.n_train=16"])
    assert main(["evaluate", str(run), "--samples", "100", "--n-bound", "20", "--n-ode", "0"]) == 0
    return run, (run / "evaluation.json").read_text()


def test_a_run_on_16_points_records_its_copies(evaluated, capsys):
    run, _ = evaluated  # the module's run on 16 points, trained once
    loaded = dl.load_run(run)
    train = training_rows(loaded)  # the trainer's own draw, from train.seed
    assert train.shape == (16, 2)
    ev = evaluate_finished_run(loaded, torch.Generator().manual_seed(0), n_bound=50, n_ode=0, n_samples=400)
    m = ev["memorisation"]
    assert m["n_train"] == 16 and m["empirical_optimum"] > 0.9  # the optimum of 16 points reproduces them
    assert m["true_samples"] < 0.2 and 0 <= m["model"] <= 1
    row = [r for r in metric_rows(ev) if r["key"] == "copy_fraction"]
    assert row and row[0]["floor"] == m["true_samples"]
    (run / "evaluation.json").unlink()  # the fixture's; this evaluation writes its own
    capsys.readouterr()
    assert main(["evaluate", str(run), "--samples", "200", "--n-bound", "20", "--n-ode", "0"]) == 0
    assert "near-copies of 16 training points" in capsys.readouterr().out
    assert "memorisation" in json.loads((run / "evaluation.json").read_text())


def test_fresh_draws_have_no_training_set(tmp_path):
    loaded = dl.load_run(_train(tmp_path, "stream", ["data.n_train=0"]))
    assert training_rows(loaded) is None
    ev = evaluate_finished_run(loaded, torch.Generator().manual_seed(0), n_bound=20, n_ode=0, n_samples=100)
    assert "memorisation" not in ev


@pytest.mark.parametrize("bad", [{"n_train": "x"}, {"model": None}, {"empirical_optimum": "0.5"}])
def test_the_report_refuses_a_malformed_memorisation_entry(tmp_path, evaluated, bad):
    run, text = evaluated
    ev = json.loads(text)
    ev["memorisation"].update(bad)
    (run / "evaluation.json").write_text(json.dumps(ev))
    try:
        assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 2
    finally:
        (run / "evaluation.json").write_text(text)

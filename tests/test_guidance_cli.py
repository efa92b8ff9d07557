"""``ddpmlab sample RUN --class C --guidance W`` and ``ddpmlab evaluate RUN --class C --guidance W`` on a
labelled run; a labelled CSV trains with --label-column and samples per class by label value;
unconditional runs refuse --class in one line."""
import json

import numpy as np
import pytest

from ddpmlab.cli import main

TINY = ["--set", "schedule.steps=10", "--set", "model.width=16", "--set", "model.depth=1",
        "--set", "train.iters=3", "--set", "train.batch_size=32"]


@pytest.fixture(scope="module")
def labelled_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", "--config", "default", "--out", str(out), "--no-progress", *TINY,
                 "--set", "data.labels=true", "--set", "train.label_dropout=0.2"]) == 0
    return out


@pytest.mark.parametrize("args", [["--class", "1"], ["--class", "0,1", "--guidance", "2", "--sampler", "ddim",
                                                     "--steps", "5"],
                                  ["--class", "1,0", "--guidance", "1", "--sampler", "ode", "--steps", "4"]])
def test_sample_per_class(labelled_run, tmp_path, args):
    out = tmp_path / "s.npy"
    assert main(["sample", str(labelled_run), "-n", "30", "--out", str(out), *args]) == 0
    x = np.load(out)
    k = len(args[1].split(","))
    assert x.shape == (30 * k, 1) and np.isfinite(x).all()


def test_guidance_changes_the_samples_and_w0_is_the_conditional_model(labelled_run, tmp_path):
    paths = {w: tmp_path / f"w{w}.npy" for w in ("0", "3")}
    for w, p in paths.items():
        assert main(["sample", str(labelled_run), "-n", "40", "--class", "0", "--guidance", w, "--out", str(p)]) == 0
    assert not np.array_equal(np.load(paths["0"]), np.load(paths["3"]))


def test_evaluate_per_class(labelled_run, capsys):
    assert main(["evaluate", str(labelled_run), "--class", "0,1", "--guidance", "0,2", "--samples", "200"]) == 0
    ev = json.loads((labelled_run / "evaluation_classes.json").read_text())
    assert set(ev) == {"0.0", "2.0"} and set(ev["0.0"]) == {"0", "1"}
    row = ev["2.0"]["1"]
    assert {"model", "oracle", "floor", "true"} <= set(row) and 0 <= row["oracle"]["accuracy"] <= 1
    assert "W1 oracle" in capsys.readouterr().out
    assert (labelled_run / "classes.png").stat().st_size > 1000


def test_class_refusals(labelled_run, tmp_path, capsys):
    out = str(tmp_path / "x.npy")
    assert main(["sample", str(labelled_run), "-n", "5", "--class", "2", "--out", out]) == 2
    assert "out of range" in capsys.readouterr().err
    assert main(["sample", str(labelled_run), "-n", "5", "--guidance", "1", "--out", out]) == 2
    assert "--guidance needs --class" in capsys.readouterr().err
    assert main(["sample", str(labelled_run), "-n", "5", "--class", "0", "--guidance", "-1", "--out", out]) == 2
    assert ">= 0" in capsys.readouterr().err
    plain = tmp_path / "plain"
    assert main(["train", "--config", "default", "--out", str(plain), "--no-progress", *TINY]) == 0
    assert main(["sample", str(plain), "-n", "5", "--class", "0", "--out", out]) == 2
    err = capsys.readouterr().err
    assert "unconditional" in err and len(err.strip().splitlines()) == 1


def test_labelled_csv_trains_and_samples_by_label_value(tmp_path):
    rng = np.random.default_rng(1)
    rows = [f"{rng.normal(-2 if i % 2 else 2):.4f},{'left' if i % 2 else 'right'}" for i in range(80)]
    data = tmp_path / "d.csv"
    data.write_text("x,side\n" + "\n".join(rows) + "\n")
    run = tmp_path / "run"
    assert main(["train", "--config", "default", "--out", str(run), "--no-progress", *TINY, "--data", str(data),
                 "--label-column", "side", "--set", "train.label_dropout=0.1"]) == 0
    assert json.loads((run / "run.json").read_text())["data"]["classes"] == ["left", "right"]
    out = tmp_path / "s.npy"
    assert main(["sample", str(run), "-n", "10", "--class", "right,left", "--out", str(out)]) == 0
    assert np.load(out).shape == (20, 1)


def test_label_column_needs_a_data_file(tmp_path, capsys):
    assert main(["train", "--out", str(tmp_path / "r"), "--label-column", "y", *TINY]) == 2
    assert "--data" in capsys.readouterr().err


def test_evaluate_per_class_on_digits(tmp_path, monkeypatch, capsys):
    """A conditional U-Net on digits: per class, the digit classifier's agreement and Frechet distance."""
    from ddpmlab.evaluation import digit_classifier as dc

    monkeypatch.setenv("DDPMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(dc, "EPOCHS", 1)
    run = tmp_path / "digits"
    assert main(["train", "--config", "digits", "--out", str(run), "--no-progress", "--set", "schedule.steps=10",
                 "--set", "train.iters=2", "--set", "train.batch_size=16", "--set", "sample.steps=5",
                 "--set", "model.width=8", "--set", "data.labels=true", "--set", "train.label_dropout=0.1"]) == 0
    assert main(["evaluate", str(run), "--class", "3,7", "--guidance", "0,2", "--samples", "6"]) == 0
    ev = json.loads((run / "evaluation_classes.json").read_text())
    assert set(ev["2.0"]) == {"3", "7"} and {"accuracy", "fd", "fd_floor"} <= set(ev["2.0"]["7"])
    assert "classifier agrees" in capsys.readouterr().out and (run / "classes.png").is_file()

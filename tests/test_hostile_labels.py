"""Labelled file runs (issue 21, class 7): a run trained on a table with ``--label-column`` is evaluated,
drawn and reported on its features only, read by the one reader training used (``data.base.load_file_rows``);
a labelled file changed or stripped of its label column after training is refused in one line, with
nothing written.
"""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from hostile_support import TINY, run_main, tree

QUICK_EVAL = ["--n-ode", "8", "--samples", "200"]
FEATURES = 2  # the tables' feature columns (the label column aside)


def _table(rng, n: int = 200):
    """Features (n, 2) in two clusters, their class names, and numeric class codes."""
    kind = np.arange(n) % 2
    x = np.stack([rng.normal(3.0 * kind, 1.0), rng.normal(0.0, 1.0, n)], 1)
    return x, ["cat" if k else "dog" for k in kind], kind


def _write_csv(path, x, labels, label_at: int) -> None:
    """A CSV with a header, the label column at position ``label_at`` among the features."""
    header = ["a", "b"]
    header.insert(label_at, "kind")
    lines = [",".join(header)]
    for row, lab in zip(x, labels):
        cells = [repr(float(v)) for v in row]
        cells.insert(label_at, lab)
        lines.append(",".join(cells))
    path.write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    """Three finished runs: labels in the CSV's middle column (by name), in its first column (by index, as
    numbers), and in an .npy table's last column."""
    root = tmp_path_factory.mktemp("labelled")
    rng = np.random.default_rng(0)
    x, names, codes = _table(rng)
    _write_csv(root / "middle.csv", x, names, 1)
    _write_csv(root / "first.csv", x, [str(c + 7) for c in codes], 0)
    np.save(root / "table.npy", np.concatenate([x, codes[:, None].astype(float)], 1))
    runs = {}
    for name, data, column in (("middle", "middle.csv", "kind"), ("first", "first.csv", "0"),
                               ("npy", "table.npy", "2")):
        code, _, err = run_main("train", "--out", root / name, "--data", root / data, "--label-column", column, *TINY)
        assert code == 0, err
        runs[name] = root / name
    runs["root"] = root
    return runs


def _ok(*argv):
    code, out, err = run_main(*argv)
    assert code == 0, err
    assert "Traceback" not in err
    return out


@pytest.mark.parametrize("name", ["middle", "first", "npy"])
def test_evaluate_reads_the_features_only(labelled, name, tmp_path):
    run = shutil.copytree(labelled[name], tmp_path / name)
    _ok("evaluate", run, *QUICK_EVAL)
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["kind"] == "heldout"
    assert ev["data"]["dims"] == FEATURES  # the label is not read as a feature
    assert ev["data"]["n_train"] + ev["data"]["n_heldout"] == 200
    info = json.loads((run / "run.json").read_text())
    assert ev["data"]["heldout"]["sha256"] == info["data"]["heldout"]["sha256"]


def test_figures_and_report_of_a_labelled_run(labelled, tmp_path):
    run = shutil.copytree(labelled["middle"], tmp_path / "run")
    out = _ok("figures", run, "-n", "200")
    assert "scatter.png" in out and (run / "scatter.png").stat().st_size > 0
    _ok("report", run, "--out", tmp_path / "report.html", "--n-ode", "8", "--samples", "200", "--n-bound", "200")
    assert (tmp_path / "report.html").stat().st_size > 0


def test_sample_by_class_of_a_labelled_run(labelled, tmp_path):
    _ok("sample", labelled["middle"], "-n", "4", "--class", "cat,dog", "--out", tmp_path / "s.npy")
    assert np.load(tmp_path / "s.npy").shape == (8, FEATURES)


def _refused(argv, needle: str, watch):
    before = tree(watch)
    code, _, err = run_main(*argv)
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1 and needle in lines[0], err
    assert code == 2, err
    assert tree(watch) == before  # nothing written, nothing left behind


def _own_run(labelled, tmp_path):
    """A run of its own on a copy of the middle-column CSV (the case then edits that copy)."""
    data = tmp_path / "middle.csv"
    shutil.copy(labelled["root"] / "middle.csv", data)
    code, _, err = run_main("train", "--out", tmp_path / "run", "--data", data, "--label-column", "kind", *TINY)
    assert code == 0, err
    return tmp_path / "run", data


def test_a_feature_changed_after_training_is_refused(labelled, tmp_path):
    run, data = _own_run(labelled, tmp_path)
    lines = data.read_text().splitlines()
    cells = lines[5].split(",")
    cells[0] = "99.5"  # a feature of some row
    lines[5] = ",".join(cells)
    data.write_text("\n".join(lines) + "\n")
    _refused(["evaluate", run, *QUICK_EVAL], "differs from the one the run was trained on", tmp_path)


def test_a_label_column_removed_after_training_is_refused(labelled, tmp_path):
    run, data = _own_run(labelled, tmp_path)
    rows = [line.split(",") for line in data.read_text().splitlines()]
    data.write_text("\n".join(",".join(r[:1] + r[2:]) for r in rows) + "\n")  # the kind column dropped
    for argv in (["evaluate", run, *QUICK_EVAL], ["figures", run, "-n", "50"]):
        _refused(argv, "no label column 'kind'", tmp_path)

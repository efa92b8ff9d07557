"""The user's own files: every format trains and samples in data units, every bad file is one line and
exit code 2, and standardisation round-trips."""
import subprocess
import sys

import numpy as np
import pytest
import torch

from ddpmlab.cli import main
from ddpmlab.config import DataConfig
from ddpmlab.data import make_training_data
from ddpmlab.data.base import split_heldout
from ddpmlab.data.files import load_data_file
from ddpmlab.runs.format import load_run
from ddpmlab.core.utils import DDPMLabError

TINY = ["--set", "schedule.steps=10", "--set", "model.width=8", "--set", "model.depth=1",
        "--set", "train.iters=3", "--set", "train.batch_size=16", "--no-progress"]


def _table(seed=0, n=40, d=3):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * np.arange(1, d + 1) + 100.0 * np.arange(1, d + 1)  # far from N(0, I)


def write_csv(path, arr, header=True):
    lines = [",".join(f"c{j}" for j in range(arr.shape[1]))] if header else []
    lines += [",".join(repr(float(v)) for v in row) for row in arr]
    path.write_text("\n".join(lines) + "\n")


def _write(kind, path, arr):
    if kind == "csv":
        write_csv(path, arr)
    elif kind == "csv-noheader":
        write_csv(path, arr, header=False)
    elif kind == "npy":
        np.save(path, arr)
    elif kind == "npz":
        np.savez(path, arr)
    elif kind == "npz-data":
        np.savez(path, data=arr, labels=np.arange(len(arr)))


@pytest.mark.parametrize("kind, suffix", [("csv", ".csv"), ("csv-noheader", ".csv"), ("npy", ".npy"),
                                          ("npz", ".npz"), ("npz-data", ".npz")])
def test_each_format_trains_and_samples_in_data_units(tmp_path, capsys, kind, suffix):
    arr = _table(n=40, d=3)
    path = tmp_path / f"data{suffix}"
    _write(kind, path, arr)
    x = load_data_file(path)
    assert x.shape == (40, 3) and x.dtype == torch.float32
    np.testing.assert_allclose(x.numpy(), arr, rtol=1e-6)
    run_dir, out = tmp_path / "run", tmp_path / "s.npy"
    assert main(["train", "--data", str(path), "--out", str(run_dir), *TINY]) == 0
    assert main(["sample", str(run_dir), "-n", "7", "--out", str(out)]) == 0
    s = np.load(out)
    assert s.shape == (7, 3) and np.isfinite(s).all()
    # samples come back in data units: near the columns' means 100, 200, 300, not near 0
    assert np.all(np.abs(s.mean(0) - arr.mean(0)) < 0.5 * arr.mean(0))


def test_one_column_and_two_dims_per_sample(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(5.0))
    assert load_data_file(tmp_path / "a.npy").shape == (5, 1)
    np.save(tmp_path / "b.npy", np.zeros((4, 3, 2)))
    assert load_data_file(tmp_path / "b.npy").shape == (4, 3, 2)
    (tmp_path / "c.csv").write_text("x\n1\n2\n\n3\n")  # a header, a blank line
    assert load_data_file(tmp_path / "c.csv").tolist() == [[1.0], [2.0], [3.0]]
    (tmp_path / "d.csv").write_text("1;2\n3;4\n")  # semicolons
    assert load_data_file(tmp_path / "d.csv").tolist() == [[1.0, 2.0], [3.0, 4.0]]


def _bad(tmp_path, case):
    p = tmp_path
    if case == "missing":
        return p / "nope.csv"
    if case == "empty":
        (p / "e.csv").write_text("")
        return p / "e.csv"
    if case == "blank-lines":
        (p / "e.csv").write_text("\n\n  \n")
        return p / "e.csv"
    if case == "header-only":
        (p / "h.csv").write_text("x,y\n")
        return p / "h.csv"
    if case == "one-row":
        (p / "o.csv").write_text("x,y\n1,2\n")
        return p / "o.csv"
    if case == "one-row-npy":
        np.save(p / "o.npy", np.ones((1, 3)))
        return p / "o.npy"
    if case == "non-numeric":
        (p / "n.csv").write_text("x,y\n1,2\n3,abc\n")
        return p / "n.csv"
    if case == "ragged":
        (p / "r.csv").write_text("1,2\n3,4,5\n")
        return p / "r.csv"
    if case == "nan":
        (p / "nan.csv").write_text("1,2\n3,nan\n")
        return p / "nan.csv"
    if case == "inf-npy":
        np.save(p / "inf.npy", np.array([[1.0, 2.0], [np.inf, 0.0]]))
        return p / "inf.npy"
    if case == "unreadable-npy":
        (p / "u.npy").write_bytes(b"\x93NUMPY garbage")
        return p / "u.npy"
    if case == "object-npy":
        np.save(p / "obj.npy", np.array([{"a": 1}, None], dtype=object), allow_pickle=True)
        return p / "obj.npy"
    if case == "unreadable-npz":
        (p / "u.npz").write_bytes(b"PK\x03\x04 not really a zip")
        return p / "u.npz"
    if case == "empty-npy":
        np.save(p / "z.npy", np.zeros((0, 2)))
        return p / "z.npy"
    if case == "three-dims":
        np.save(p / "t.npy", np.zeros((5, 2, 2, 2)))
        return p / "t.npy"
    if case == "strings-npy":
        np.save(p / "s.npy", np.array([["a", "b"], ["c", "d"]]))
        return p / "s.npy"
    if case == "suffix":
        (p / "d.txt").write_text("1,2\n3,4\n")
        return p / "d.txt"
    raise AssertionError(case)


BAD = [("missing", "no such file"), ("empty", "empty file"), ("blank-lines", "empty file"),
       ("header-only", "no data rows"), ("one-row", "only one row"), ("one-row-npy", "only one row"),
       ("non-numeric", "non-numeric cell 'abc' at line 3, column 2"), ("ragged", "ragged rows: line 2 has 3 cells"),
       ("nan", "NaN at line 2, column 2"), ("inf-npy", "infinity at element [1, 0]"),
       ("unreadable-npy", "unreadable .npy array"), ("object-npy", "unreadable .npy array"),
       ("unreadable-npz", "unreadable .npz array"), ("empty-npy", "empty"),
       ("three-dims", "each sample has 3 dimensions"), ("strings-npy", "non-numeric array"),
       ("suffix", "unsupported file type '.txt'")]


@pytest.mark.parametrize("case, needle", BAD, ids=[c for c, _ in BAD])
def test_bad_file_is_one_line_and_exit_2(tmp_path, capsys, case, needle):
    path = _bad(tmp_path, case)
    code = main(["train", "--data", str(path), "--out", str(tmp_path / "run"), *TINY])
    err = capsys.readouterr().err
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0] and needle in lines[0], err
    assert not (tmp_path / "run" / "run.json").exists()


def test_bad_file_from_the_shell(tmp_path):
    path = _bad(tmp_path, "ragged")
    r = subprocess.run([sys.executable, "-m", "ddpmlab", "train", "--data", str(path), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "ragged rows" in r.stderr


def test_standardisation_round_trips(tmp_path):
    arr = _table(seed=3, n=50, d=4)
    arr[:, 2] = 7.0  # a constant column keeps scale 1
    np.save(tmp_path / "d.npy", arr)
    data = make_training_data(DataConfig(name="file", path=str(tmp_path / "d.npy")), torch.Generator())
    z = data.train
    assert torch.allclose(z[:, [0, 1, 3]].mean(0), torch.zeros(3), atol=1e-4)
    assert torch.allclose(z[:, [0, 1, 3]].std(0), torch.ones(3), atol=1e-4)
    assert torch.all(z[:, 2] == 0) and float(data.scale[2]) == 1.0
    train_rows = split_heldout(torch.from_numpy(arr).float())[0].double().numpy()  # 5 of the 50 rows held out
    assert len(z) == 45 and data.describe()["heldout"]["n"] == 5
    np.testing.assert_allclose(data.to_data_units(z).numpy(), train_rows, rtol=1e-5)
    # and through a saved run
    run_dir = tmp_path / "run"
    assert main(["train", "--data", str(tmp_path / "d.npy"), "--out", str(run_dir), *TINY]) == 0
    np.testing.assert_allclose(load_run(run_dir).to_data_units(z).numpy(), train_rows, rtol=1e-5)


def test_unstandardised_keeps_data_units(tmp_path):
    np.save(tmp_path / "d.npy", _table(n=10, d=2))
    data = make_training_data(DataConfig(name="file", path=str(tmp_path / "d.npy"), standardize=False),
                              torch.Generator())
    assert data.scale is None and float(data.train.mean()) > 50


def test_load_errors_are_ddpmlab_errors(tmp_path):
    with pytest.raises(DDPMLabError, match="no such file"):
        load_data_file(tmp_path / "x.npy")

"""The user's own files: every format trains and samples in data units, every bad file is one line and
exit code 2, and standardisation round-trips."""
import csv
import subprocess
import sys

import numpy as np
import pytest
import torch

from ddpmlab.cli import main
from ddpmlab.config.sections import DataConfig
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.data import files
from ddpmlab.data.base import make_training_data
from ddpmlab.data.base import split_heldout
from ddpmlab.data.files import load_data_file
from ddpmlab.runs.format import load_run

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


# --- CSV: the fast reader (numpy's C parser) against the previous plain reader, an oracle -------------

def _plain_load(path):
    """The previous pure-Python CSV reader and its checks, kept here as the oracle: ("ok", float32 array)
    or ("error", the one-line message)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        return "error", f"{path}: not a text (UTF-8) file"
    lines = text.splitlines()
    first = next((line for line in lines if line.strip()), None)
    if first is None:
        return "error", f"{path}: empty file (no rows)"
    reader = csv.reader(lines, delimiter=next((d for d in (",", ";", "\t") if d in first), ","))
    rows, line_numbers, width, header_seen = [], [], None, False
    for row in reader:
        values = []
        for cell in row:
            try:
                values.append(float(cell.strip()))
            except ValueError:
                values.append(None)
        if not any(cell.strip() for cell in row):
            continue
        if not rows and not header_seen and all(v is None for v in values):
            header_seen, width = True, len(row)
            continue
        if width is not None and len(row) != width:
            return "error", f"{path}: ragged rows: line {reader.line_num} has {len(row)} cells, expected {width}"
        width = len(row)
        for j, v in enumerate(values):
            if v is None:
                what = f"non-numeric cell {row[j].strip()!r}" if row[j].strip() else "non-numeric (empty) cell"
                return "error", f"{path}: {what} at line {reader.line_num}, column {j + 1}"
        rows.append(values)
        line_numbers.append(reader.line_num)
    if not rows:
        return "error", f"{path}: no data rows (only a header)"
    if len(rows) < 2:
        return "error", f"{path}: only one row; at least 2 samples are needed"
    arr = np.array(rows, dtype=np.float64)
    bad = ~np.isfinite(arr)
    if bad.any():
        i, j = np.argwhere(bad)[0]
        what = "NaN" if np.isnan(arr[i, j]) else "infinity"
        return "error", (f"{path}: {what} at line {line_numbers[i]}, column {j + 1} "
                         f"({int(bad.sum())} non-finite value(s) in all)")
    x = torch.from_numpy(arr).float().numpy()
    if not np.isfinite(x).all():
        return "error", f"{path}: values too large for float32 (largest magnitude {np.abs(arr).max():.3g})"
    return "ok", x


def _new_load(path):
    """``load_data_file`` as the oracle's pair."""
    try:
        return "ok", load_data_file(path).numpy()
    except DDPMLabError as exc:
        return "error", str(exc)


def _assert_same(path):
    """The file reads to the same bits, or fails with the same message, both ways; returns the outcome."""
    new, old = _new_load(path), _plain_load(path)
    assert new[0] == old[0], (path.read_bytes()[:300], new, old)
    if new[0] == "ok":
        assert new[1].dtype == np.float32 and new[1].shape == old[1].shape
        assert new[1].tobytes() == old[1].tobytes(), path.read_bytes()[:300]
    else:
        assert new[1] == old[1]
    return new[0]


def _text(arr, delimiter=",", header=None, fmt=repr, eol="\n", blank_every=0):
    """A CSV text of ``arr``, with an optional header row and a blank line after every k-th row."""
    lines = [delimiter.join(header)] if header else []
    for i, row in enumerate(arr):
        lines.append(delimiter.join(fmt(float(v)) for v in row))
        if blank_every and i % blank_every == blank_every - 1:
            lines.append("")
    return eol.join(lines) + eol


GOOD = {
    "header": dict(header=["x", "y", "z"]),
    "no-header": dict(),
    "semicolon": dict(delimiter=";", header=["a", "b", "c"]),
    "tab": dict(delimiter="\t"),
    "tab-header": dict(delimiter="\t", header=["a", "b", "c"]),
    "quoted-header": dict(header=['"x"', '"y, the second"', '"z"']),
    "blank-lines": dict(header=["x", "y", "z"], blank_every=3),
    "crlf": dict(header=["x", "y", "z"], eol="\r\n"),
    "lone-cr": dict(eol="\r"),
    "8-digits": dict(fmt=lambda v: f"{v:.8g}"),
    "spaces": dict(fmt=lambda v: f" {v!r} ", header=[" x ", " y ", " z "]),
    "ints": dict(fmt=lambda v: str(int(v))),
}


@pytest.mark.parametrize("bom", [False, True], ids=["plain", "bom"])
@pytest.mark.parametrize("case", GOOD, ids=list(GOOD))
def test_csv_reads_as_the_plain_reader(tmp_path, case, bom):
    arr = _table(seed=len(case), n=30, d=3)
    path = tmp_path / "d.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + _text(arr, **GOOD[case]).encode())
    assert _assert_same(path) == "ok"


def test_good_csv_takes_the_fast_reader(tmp_path, monkeypatch):
    """A good file never reaches the cell-by-cell scan (and leading blank lines are skipped there too)."""
    def no_scan(*args):
        raise AssertionError("the slow scan ran")
    arr = _table(seed=5, n=25, d=3)
    cases = {k: GOOD[k] for k in ("header", "no-header", "semicolon", "tab", "blank-lines", "quoted-header")}
    expected = {k: _plain_load(_write_text(tmp_path / f"{k}.csv", "\n\n" + _text(arr, **kw))) for k, kw in
                cases.items()}
    monkeypatch.setattr(files, "_scan_csv", no_scan)
    for k in cases:
        x = load_data_file(tmp_path / f"{k}.csv").numpy()
        assert expected[k][0] == "ok" and x.tobytes() == expected[k][1].tobytes(), k


def _write_text(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# Files the fast reader refuses or must not vouch for; each reads, or fails, as the plain reader did.
ODD = {
    "bad-cell": "x,y\n1,2\n\n3,abc\n5,6\n",
    "empty-cell": "1,2\n3,\n5,6\n",
    "ragged": "x,y\n1,2\n3,4,5\n",
    "header-wider": "x,y,z\n1,2\n3,4\n",
    "nan-deep": "x;y\n" + "".join(f"{i};{i}\n" for i in range(50)) + "\n7;nan\n",
    "inf": "1\t2\n\n-inf\t4\n",
    "too-large": "1,2\n3,1e39\n",
    "one-row": "\n\nx,y\n1,2\n\n",
    "header-only": "x,y\n\n",
    "blank-only": "\n \n\t\n",
    "delimiters-only-line": "1,2\n,\n3,4\n",
    "spaces-only-line": "1,2\n   \n3,4\n",
    "quoted-numbers": '"1","2"\n"3","4"\n',
    "underscores": "1_000,2\n3,4\n",
    "comment-like": "#x,y\n1,2\n3,4\n",
    "hash-cell": "1,2\n#3,4\n",
    "form-feed": "1\x0c,2\n3,4\n",
    "nel": "1,2\u00853,4\n5,6\n",
    "open-quote-header": '"x,y\n1,2\n3,4\n',
    "mixed-header": "x,1\n1,2\n3,4\n",
    "nbsp": "\u00a01,2\n3,4\u00a0\n",
    "not-utf8-late": "1,2\n3,4\n" * 50 + "5,\xff\n",
}


@pytest.mark.parametrize("case", ODD, ids=list(ODD))
def test_odd_csv_reads_or_fails_as_the_plain_reader(tmp_path, case):
    text = ODD[case]
    path = tmp_path / "d.csv"
    if case == "not-utf8-late":
        path.write_bytes(text.encode("latin-1"))
    else:
        _write_text(path, text)
    _assert_same(path)


def test_errors_name_line_and_column(tmp_path):
    """A bad cell, a NaN and a ragged row deep in a file with a header and blank lines: the line counted
    here from the text as written."""
    rng = np.random.default_rng(7)
    arr = rng.normal(size=(300, 3))
    for bad_row, col, cell, needle in [(211, 2, "oops", "non-numeric cell 'oops'"), (150, 3, "nan", "NaN"),
                                       (299, 1, "-inf", "infinity")]:
        lines = ["a,b,c", ""] + [",".join(repr(float(v)) for v in row) for row in arr]
        lines.insert(5, "   ")  # a blank line before the bad one
        row_line = [i for i, line in enumerate(lines) if line.strip() and i > 0][bad_row]
        cells = lines[row_line].split(",")
        cells[col - 1] = cell
        lines[row_line] = ",".join(cells)
        path = _write_text(tmp_path / "d.csv", "\n".join(lines) + "\n")
        with pytest.raises(DDPMLabError) as err:
            load_data_file(path)
        msg = str(err.value)
        assert str(path) in msg and needle in msg and f"at line {row_line + 1}, column {col}" in msg, msg
        assert len(msg.splitlines()) == 1
        _assert_same(path)
    lines = ["1;2"] * 40
    lines[33] = "1;2;3"
    path = _write_text(tmp_path / "r.csv", "\n".join(lines))
    assert _new_load(path) == ("error", f"{path}: ragged rows: line 34 has 3 cells, expected 2")


def _random_cell(rng):
    """A cell of a user's file: mostly numbers in several spellings, sometimes something odd."""
    v = float(rng.normal() * 10.0 ** int(rng.integers(-3, 4)))
    kind = rng.choice(24)
    spellings = [repr(v), f"{v:.8g}", f"{v:e}", str(int(v)), f" {v!r}", f"{v!r}\t", f"{v:.3f}"]
    if kind < len(spellings) * 3:
        return spellings[kind % len(spellings)]
    return str(rng.choice(["nan", "-inf", "abc", "", " ", '"1.5"', "1e39", "1_5", "#2", "\u00a03"]))


def _random_csv(rng):
    """Text of a small CSV that is usually good: a random delimiter, header, blank lines, line ends, and
    now and then a wrong width or an odd cell."""
    d = str(rng.choice([",", ";", "\t"]))
    width, n = int(rng.integers(1, 5)), int(rng.integers(1, 12))
    odd = rng.random() < 0.5
    lines = [d.join(f"c{j}" for j in range(width))] if rng.random() < 0.5 else []
    for _ in range(n):
        if rng.random() < 0.15:
            lines.append(str(rng.choice(["", "  ", d * (width - 1)])))
        w = width + (int(rng.integers(-1, 2)) if odd and rng.random() < 0.1 else 0)
        cells = [_random_cell(rng) if odd else repr(float(rng.normal())) for _ in range(max(w, 1))]
        lines.append(d.join(cells))
    eol = str(rng.choice(["\n", "\r\n"]))
    return ("\ufeff" if rng.random() < 0.2 else "") + eol.join(lines) + (eol if rng.random() < 0.8 else "")


def test_random_csv_files_match_the_plain_reader(tmp_path):
    rng = np.random.default_rng(13)
    outcomes = []
    for i in range(300):
        path = _write_text(tmp_path / f"r{i}.csv", _random_csv(rng))
        outcomes.append(_assert_same(path))
    assert 60 < outcomes.count("ok") < 240  # both sides of the reader were exercised


def test_csv_module_error_is_one_line(tmp_path):
    """A cell past the csv module's field limit was a traceback; now one error naming file and line."""
    path = _write_text(tmp_path / "big.csv", "1,2\n3," + "4" * 200_000 + "x\n")
    with pytest.raises(DDPMLabError, match=r"unreadable CSV at line 2 \(field larger than field limit"):
        load_data_file(path)

"""Writes outside the target (issue 21, classes 3 and 4): a run directory received from someone else may
hold symbolic links where ddpmlab's own files go (the lock file, metrics.csv, checkpoints/, run.json, the
figures, ...), and ``--out`` may name a FIFO, a device, a socket or a link to one. Every row asserts that
the file elsewhere keeps its bytes (and /dev/null stays a character device), that a refusal is one line
with exit 2 and no traceback, and, for a refusal before any work, that the workspace is as before.

A run directory that is itself a link to a directory is a legitimate use: every command works on it.
"""
from __future__ import annotations

import os
import socket
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest

from faults import injected
from hostile_support import TINY, Workspace, case_workspace, fixed_memory, run_main, tree

QUICK_EVALUATE = ["--n-bound", "200", "--n-ode", "0", "--samples", "200"]
PRECIOUS = b"someone else's bytes\n"


@dataclass
class Case:
    id: str
    needle: str
    setup: Callable[[Workspace], list]  # plants the links or special files, returns the command's argv
    unchanged: bool = True  # refused before any work: the workspace is byte for byte as before


def outside(ws: Workspace, name: str = "precious.txt") -> Path:
    """A file elsewhere (beside the workspace) that no command may touch."""
    f = ws.root.parent / "elsewhere" / name
    f.parent.mkdir(exist_ok=True)
    if not f.exists():
        f.write_bytes(PRECIOUS)
    return f


def link(path: Path, target) -> Path:
    if path.is_dir() and not path.is_symlink():
        import shutil

        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(target)
    return path


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def char_device(path: Path) -> Path:
    """A character device node like /dev/null (1, 3), made here so that no test ever touches /dev/null."""
    try:
        os.mknod(path, stat.S_IFCHR | 0o666, os.makedev(1, 3))
    except (PermissionError, OSError) as exc:
        pytest.skip(f"cannot make a device node here: {exc}")
    return path


def unix_socket(path: Path) -> Path:
    """A socket's node on disk (it stays after the socket is closed)."""
    with socket.socket(socket.AF_UNIX) as s:
        s.bind(str(path))
    return path


def _evaluate(ws, run="train"):
    return ["evaluate", ws.path(run), *QUICK_EVALUATE]


def _figures(ws, run="moons"):
    return ["figures", ws.path(run), "-n", "200"]


def _resume(ws, run="unfinished"):
    return ["train", "--resume", ws.path(run), "--no-progress"]


def _planted(run: str, name: str, command, target=None):
    """``run``'s ``name`` replaced by a link to a file elsewhere, then ``command`` on the run."""
    def setup(ws):
        ws.copy(run)
        link(ws.path(run, name), target(ws) if target else outside(ws))
        return command(ws, run)
    return setup


def _dangling_marker(ws):
    """An empty directory but for a marker link to a name elsewhere that does not exist yet."""
    link(ws.mkdir("o") / ".ddpmlab.json", ws.root.parent / "elsewhere" / "created.json")
    outside(ws)
    return ["train", "--out", ws.path("o"), *TINY]


def _checkpoints_elsewhere(ws):
    """checkpoints/ replaced by a link to a directory elsewhere holding the run's checkpoints."""
    import shutil

    run = ws.copy("unfinished")
    away = ws.root.parent / "elsewhere" / "checkpoints"
    outside(ws)
    shutil.copytree(run / "checkpoints", away)
    link(run / "checkpoints", away)
    return _resume(ws)


def _out(kind: str, name: str):
    """A path named ``name`` in the workspace holding ``kind``: a FIFO, a character device node, a socket,
    a link to /dev/null or to a file elsewhere."""
    def make(ws):
        p = ws.path(name)
        if kind == "fifo":
            return fifo(p)
        if kind == "chardev":
            return char_device(p)
        if kind == "socket":
            return unix_socket(p)
        if kind == "devnull-link":
            return link(p, "/dev/null")
        return link(p, outside(ws))
    return make


def _sample_out(kind, force):
    def setup(ws):
        ws.copy("train")
        return ["sample", ws.path("train"), "-n", "5", "--out", _out(kind, "s.npy")(ws), *(["--force"] * force)]
    return setup


def _report_out(kind, force):
    def setup(ws):
        ws.copy("train")
        return ["report", ws.path("train"), "--out", _out(kind, "r.html")(ws), *(["--force"] * force)]
    return setup


def _figures_out(kind):
    def setup(ws):
        ws.copy("moons")
        return ["figures", ws.path("moons"), "-n", "200", "--out", _out(kind, "figs")(ws)]
    return setup


LOCK_NEEDLE = "not a ddpmlab lock file"
LINK_NEEDLE = "is a symbolic link to"
OUT_NEEDLE = "; --out names a regular file"  # the up-front check, before any work
SYMLINK_CASES = [
    # the lock file, a link to a file elsewhere: it used to be truncated to the pid, then the link removed
    Case("lock-link-evaluate", LOCK_NEEDLE, _planted("train", ".ddpmlab.lock", _evaluate)),
    Case("lock-link-figures", LOCK_NEEDLE, _planted("moons", ".ddpmlab.lock", _figures)),
    Case("lock-link-resume", LOCK_NEEDLE, _planted("unfinished", ".ddpmlab.lock", _resume)),
    Case("lock-link-dangling", LOCK_NEEDLE,
         _planted("train", ".ddpmlab.lock", _evaluate, lambda ws: outside(ws).with_name("new.lock"))),
    Case("lock-link-to-dir", LOCK_NEEDLE, _planted("train", ".ddpmlab.lock", _evaluate, lambda ws: ws.mkdir("d"))),
    # every other file ddpmlab writes into a run, a link to a file elsewhere
    Case("evaluation-json-link", LINK_NEEDLE, _planted("train", "evaluation.json", _evaluate), unchanged=False),
    Case("scatter-png-link", LINK_NEEDLE, _planted("moons", "scatter.png", _figures), unchanged=False),
    Case("density-png-link", LINK_NEEDLE, _planted("moons", "density.png", _figures), unchanged=False),
    Case("reverse-gif-link", LINK_NEEDLE, _planted("moons", "reverse.gif", _figures), unchanged=False),
    Case("metrics-csv-link", LINK_NEEDLE, _planted("unfinished", "metrics.csv", _resume)),
    Case("checkpoints-link", "checkpoints is a symbolic link to a directory", _checkpoints_elsewhere),
    Case("run-json-link", LINK_NEEDLE, _planted("unfinished", "run.json", _resume), unchanged=False),
    Case("weights-link", LINK_NEEDLE, _planted("unfinished", "model.safetensors", _resume), unchanged=False),
    Case("config-toml-link", LINK_NEEDLE, _planted("unfinished", "config.toml", _resume), unchanged=False),
    Case("metrics-json-link", LINK_NEEDLE, _planted("unfinished", "metrics.json", _resume), unchanged=False),
    Case("marker-link-dangling", ".ddpmlab.json is a symbolic link to nothing", _dangling_marker),
]
SPECIAL_CASES = [
    *[Case(f"sample-out-{kind}{'-force' * force}", needle + OUT_NEEDLE, _sample_out(kind, force))
      for kind, needle in (("fifo", "is a FIFO"), ("chardev", "is a character device"), ("socket", "is a socket"),
                           ("devnull-link", "is a symbolic link to a character device"),
                           ("file-link", "is a symbolic link to a regular file"))
      for force in (False, True)],
    *[Case(f"report-out-{kind}{'-force' * force}", needle + OUT_NEEDLE, _report_out(kind, force))
      for kind, needle in (("fifo", "is a FIFO"), ("chardev", "is a character device"), ("socket", "is a socket"),
                           ("devnull-link", "is a symbolic link to a character device"),
                           ("file-link", "is a symbolic link to a regular file"))
      for force in (False, True)],
    *[Case(f"figures-out-{kind}", "is not a directory", _figures_out(kind))
      for kind in ("fifo", "chardev", "devnull-link", "file-link")],
    Case("lock-fifo", LOCK_NEEDLE, lambda ws: [ws.copy("train"), fifo(ws.path("train", ".ddpmlab.lock")),
                                               *_evaluate(ws)][2:]),
    Case("metrics-csv-fifo", "is a FIFO", lambda ws: [ws.copy("unfinished"), ws.path("unfinished", "metrics.csv").unlink(),
                                                      fifo(ws.path("unfinished", "metrics.csv")), *_resume(ws)][3:]),
    Case("marker-fifo-read", "unreadable directory marker", lambda ws: [
        ws.copy("train"), ws.path("train", ".ddpmlab.json").unlink(), fifo(ws.path("train", ".ddpmlab.json")),
        *_evaluate(ws)][3:]),
    Case("run-json-fifo-read", "is not a finished run", lambda ws: [
        ws.copy("train"), ws.path("train", "run.json").unlink(), fifo(ws.path("train", "run.json")),
        "sample", ws.path("train"), "-n", "5", "--out", ws.path("s.npy")][3:]),
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished run (with checkpoints), an interrupted one, and a finished 2-D run for the figures."""
    root = tmp_path_factory.mktemp("hostile_files") / "runs"

    def train(name, *args, expect=0):
        code, _, err = run_main("train", "--out", root / name, *TINY, *args)
        assert code == expect, err

    train("train", "--set", "train.iters=4", "--checkpoint-every", "2")
    with injected(signal_at=3):
        train("unfinished", "--set", "train.iters=6", "--checkpoint-every", "2", expect=143)
    train("moons", "--config", "moons", "--set", "model.depth=1")
    return {"root": root}


def _run_case(case, runs, tmp_path, monkeypatch):
    ws = case_workspace(tmp_path, runs, monkeypatch)
    try:
        argv = case.setup(ws)
        elsewhere = ws.root.parent / "elsewhere"
        before, before_elsewhere = tree(ws.root), tree(elsewhere)
        code, _, err = run_main(*argv)
        after, after_elsewhere = tree(ws.root), tree(elsewhere)
    finally:
        monkeypatch.undo()
        ws.close()
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith(f"ddpmlab {argv[0]}: error:"), err
    assert case.needle in lines[0], lines[0]
    assert code == 2, lines[0]
    assert after_elsewhere == before_elsewhere  # nothing elsewhere written, replaced, created or removed
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    planted = {k: v for k, v in before.items() if v.startswith(("link -> ", "special "))}
    assert planted and {k: after.get(k) for k in planted} == planted  # every link and special file as it was
    if case.unchanged:
        assert after == before


@pytest.mark.parametrize("case", SYMLINK_CASES, ids=[c.id for c in SYMLINK_CASES])
def test_no_write_through_a_link(case, runs, tmp_path, monkeypatch):
    _run_case(case, runs, tmp_path, monkeypatch)


@pytest.mark.parametrize("case", SPECIAL_CASES, ids=[c.id for c in SPECIAL_CASES])
def test_special_files_are_never_replaced(case, runs, tmp_path, monkeypatch):
    _run_case(case, runs, tmp_path, monkeypatch)


def test_run_directory_that_is_a_link_works(runs, tmp_path, monkeypatch):
    """A run directory that is itself a link to a directory (moved to another disk) is used as is."""
    import shutil

    fixed_memory(monkeypatch)
    for name in ("unfinished", "moons"):
        shutil.copytree(runs["root"] / name, tmp_path / "disk" / name)
        (tmp_path / f"{name}-link").symlink_to(tmp_path / "disk" / name, target_is_directory=True)
    resumed, moons = tmp_path / "unfinished-link", tmp_path / "moons-link"
    for argv in (["train", "--resume", resumed, "--no-progress"], ["evaluate", resumed, *QUICK_EVALUATE],
                 ["figures", moons, "-n", "200"], ["sample", resumed, "-n", "5", "--out", tmp_path / "s.npy"]):
        code, _, err = run_main(*argv)
        assert code == 0, err
    real = tmp_path / "disk" / "unfinished"
    assert {"run.json", "model.safetensors", "metrics.json", "evaluation.json"} <= {p.name for p in real.iterdir()}
    assert {"scatter.png", "density.png", "reverse.gif"} <= {p.name for p in (tmp_path / "disk" / "moons").iterdir()}
    assert resumed.is_symlink() and moons.is_symlink()
    assert not any(p.name == ".ddpmlab.lock" for p in (tmp_path / "disk").rglob("*"))  # every lock released


def test_check_output_file_rules(tmp_path):
    from ddpmlab.core.fileio import check_output_file
    from ddpmlab.core.utils import DDPMLabError

    check_output_file(tmp_path / "new.html", force=False)
    (tmp_path / "old.html").write_text("x")
    check_output_file(tmp_path / "old.html", force=True)
    with pytest.raises(DDPMLabError, match="exists; pass --force"):
        check_output_file(tmp_path / "old.html", force=False)
    (tmp_path / "dev").symlink_to("/dev/null")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    for name, kind in (("dev", "a symbolic link to a character device"), ("dangling", "a symbolic link to nothing"),
                       ("", "a directory")):
        for force in (False, True):
            with pytest.raises(DDPMLabError, match=kind):
                check_output_file(tmp_path / name, force=force)


def test_matrix_size():
    assert len(SYMLINK_CASES) >= 15 and len(SPECIAL_CASES) >= 25
    ids = [c.id for c in SYMLINK_CASES + SPECIAL_CASES]
    assert len(set(ids)) == len(ids)

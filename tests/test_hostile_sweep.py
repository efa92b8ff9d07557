"""Hostile sweeps (issue 21, classes 4 and 5): a sweep directory is owned and locked like a run directory
(the user's own files are never overwritten; a second sweep into it is refused while the first runs; a
sweep continues in its own directory); a job log planted as a link is never written through; the seeds
are one axis (``--grid train.seed=1,2`` trains with seeds 1 and 2); empty grid values and plans of more
than ``MAX_JOBS`` jobs are refused in one line, at once."""
from __future__ import annotations

import csv
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ddpmlab.cli import build_parser
from ddpmlab.config.schema import load_config
from ddpmlab.runs.ownership import LOCK_FILE, MARKER_FILE
from ddpmlab.workflows.sweep_plan import MAX_JOBS
from hostile_support import Workspace, run_main, tree

TINY = ["schedule.steps=10", "model.width=16", "model.depth=1", "train.iters=3", "train.batch_size=32"]
TINY_SETS = [a for s in TINY for a in ("--set", s)]
PRECIOUS = b"my own table\n"


def sweep(*args):
    """``ddpmlab sweep`` in this process: (exit code, stdout, stderr)."""
    return run_main("sweep", "--no-progress", *args)


def one_line_error(code, err, needle):
    lines = err.strip().splitlines()
    assert code == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("ddpmlab sweep: error:"), err
    assert needle in lines[0], lines[0]


def read_jobs(out: Path) -> list[dict]:
    with open(out / "jobs.csv", newline="") as f:
        return list(csv.DictReader(f))


def sweep_marker(out: Path) -> Path:
    """``out`` as an earlier sweep left it (its marker)."""
    out.mkdir(parents=True)
    (out / MARKER_FILE).write_text(json.dumps({"format": "ddpmlab-directory", "version": 1, "kind": "sweep"}))
    return out


# ------------------------------------------------------------------------------------------ ownership

@pytest.mark.parametrize("files", [("summary.md",), ("summary.csv",), ("jobs.csv",),
                                   ("summary.md", "summary.csv", "jobs.csv"), ("notes.txt",),
                                   ("default/mine.txt",), ("default/seed_0.log",)])
def test_foreign_files_are_refused_and_unchanged(tmp_path, files):
    out = tmp_path / "mine"
    for name in files:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(PRECIOUS)
    before = tree(out)
    code, _, err = sweep("--out", out, *TINY_SETS)
    one_line_error(code, err, "holds files ddpmlab did not write")
    assert tree(out) == before


def test_a_run_directory_is_not_a_sweep_directory(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / MARKER_FILE).write_text(json.dumps({"format": "ddpmlab-directory", "version": 1, "kind": "train"}))
    (run / "metrics.csv").write_bytes(PRECIOUS)
    before = tree(run)
    one_line_error(*sweep("--out", tmp_path / "run", *TINY_SETS)[::2], "holds a train run")
    assert tree(tmp_path / "run") == before


def test_a_held_sweep_directory_is_refused(tmp_path, monkeypatch):
    out = sweep_marker(tmp_path / "s")
    ws = Workspace(tmp_path, {}, monkeypatch)
    ws.hold_lock(out, pid=4242)
    try:
        before = tree(out)
        one_line_error(*sweep("--out", out, *TINY_SETS)[::2], "in use by another ddpmlab command (pid 4242)")
        assert tree(out) == before
    finally:
        ws.close()


def test_a_second_sweep_is_refused_while_the_first_runs(tmp_path):
    """The first sweep (its own process) holds the lock for its whole duration; the second changes
    nothing, and the first's job table and summary are its own."""
    out = tmp_path / "s"
    first = subprocess.Popen([sys.executable, "-m", "ddpmlab", "sweep", "--no-progress", "--out", str(out),
                              "--seeds", "0", *TINY_SETS], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / LOCK_FILE).exists() and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert first.poll() is None, first.communicate()
        code, _, err = sweep("--out", out, "--seeds", "5-6", *TINY_SETS)
        one_line_error(code, err, "in use by another ddpmlab command")
        assert first.poll() is None  # the refusal came while the first was still running
    finally:
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert [(j["seed"], j["status"]) for j in read_jobs(out)] == [("0", "ok")]
    assert sorted(p.name for p in (out / "default").iterdir()) == ["seed_0", "seed_0.log"]
    assert not (out / LOCK_FILE).exists()


def test_commands_printed_and_run_elsewhere_are_taken_over(tmp_path):
    """``--print-commands`` run by a scheduler leaves the run directories only; the sweep run again on
    them takes the directory over and summarises them (nothing is trained again)."""
    out = tmp_path / "s"
    code, printed, err = sweep("--out", out, "--print-commands", *TINY_SETS)
    assert code == 0 and not out.exists(), err
    for line in printed.splitlines():
        code, _, err = run_main(*shlex.split(line)[3:])
        assert code == 0, err
    code, _, err = sweep("--out", out, *TINY_SETS)
    assert code == 0, err
    assert [j["status"] for j in read_jobs(out)] == ["done earlier"]
    assert json.loads((out / MARKER_FILE).read_text())["kind"] == "sweep"


# ------------------------------------------------------------------------------------------ job logs

def test_a_job_log_link_is_refused_before_any_job_runs(tmp_path):
    out = sweep_marker(tmp_path / "s")
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_bytes(PRECIOUS)
    (out / "default").mkdir()
    (out / "default" / "seed_0.log").symlink_to(elsewhere)
    before = tree(tmp_path)
    one_line_error(*sweep("--out", out, *TINY_SETS)[::2], "seed_0.log is a symbolic link to a regular file")
    assert tree(tmp_path) == before and elsewhere.read_bytes() == PRECIOUS


def test_run_jobs_never_writes_a_log_through_a_link(tmp_path):
    """The workflow itself (a link planted after the sweep's own check): the job fails in one reported
    line, the file elsewhere is unchanged and the link stays."""
    from ddpmlab.workflows.sweep import run_jobs
    from ddpmlab.workflows.sweep_plan import plan_sweep

    out = tmp_path / "s"
    jobs = plan_sweep(["default"], [], [0], TINY, out)
    elsewhere = tmp_path / "elsewhere.txt"
    elsewhere.write_bytes(PRECIOUS)
    (out / "default").mkdir(parents=True)
    jobs[0].log.symlink_to(elsewhere)
    reported = []
    results = run_jobs(jobs, 1, progress=False, report=reported.append)
    assert [r.status for r in results] == ["failed"]
    assert len(reported) == 1 and "seed_0.log is a symbolic link" in reported[0]
    assert elsewhere.read_bytes() == PRECIOUS and jobs[0].log.is_symlink()
    assert not jobs[0].out.exists() or not any(jobs[0].out.iterdir())


# ------------------------------------------------------------------------------------------ seeds and grids

def _printed_jobs(*args):
    """(train.seed of the config each printed command trains, its directory's seed_S, the directory)."""
    code, out, err = sweep("--out", "s", "--print-commands", *args)
    assert code == 0, err
    jobs = []
    for line in out.splitlines():
        a = build_parser().parse_args(shlex.split(line)[3:])
        jobs.append((load_config(a.config, a.set), int(Path(a.out).name.removeprefix("seed_")), Path(a.out)))
    return jobs


def test_grid_seeds_are_the_seeds_trained():
    jobs = _printed_jobs("--grid", "train.lr=1e-3,2e-3", "--grid", "train.seed=1,2", *TINY_SETS)
    assert len(jobs) == 4
    assert [(cfg.train.seed, named) for cfg, named, _ in jobs] == [(1, 1), (2, 2), (1, 1), (2, 2)]
    assert [cfg.train.lr for cfg, _, _ in jobs] == [1e-3, 1e-3, 2e-3, 2e-3]
    assert all(d.parent.name in ("train.lr=1e-3", "train.lr=2e-3") for _, _, d in jobs)  # no seed in the point
    assert [(cfg.train.seed, named) for cfg, named, _ in _printed_jobs("--set", "train.seed=3", *TINY_SETS)] == \
        [(3, 3)]
    assert [cfg.train.seed for cfg, _, _ in _printed_jobs("--grid", "train.seed=0-2", *TINY_SETS)] == [0, 1, 2]


def test_grid_seed_trains_with_that_seed_into_a_linked_directory(tmp_path):
    """A real job of ``--grid train.seed=7``: the trained run's config and metrics say seed 7. The sweep's
    --out is a link to a directory (legitimate), and running the sweep again there runs nothing."""
    (tmp_path / "disk").mkdir()
    (tmp_path / "s").symlink_to(tmp_path / "disk", target_is_directory=True)
    args = ["--out", tmp_path / "s", "--grid", "train.seed=7", *TINY_SETS]
    code, _, err = sweep(*args)
    assert code == 0, err
    run = tmp_path / "disk" / "default" / "seed_7"
    assert json.loads((run / "run.json").read_text())["config"]["train"]["seed"] == 7
    assert json.loads((run / "metrics.json").read_text())["seed"] == 7
    assert [(j["seed"], j["status"]) for j in read_jobs(tmp_path / "s")] == [("7", "ok")]
    code, _, err = sweep(*args)
    assert code == 0, err
    assert [j["status"] for j in read_jobs(tmp_path / "s")] == ["done earlier"]


@pytest.mark.parametrize("args, needle", [
    (["--seeds", "0", "--grid", "train.seed=1,2"], "train.seed is given more than once"),
    (["--grid", "train.seed=1", "--set", "train.seed=2"], "train.seed is given more than once"),
    (["--grid", "train.seed=1", "--grid", "train.seed=2"], "train.seed is given more than once"),
    (["--grid", "train.seed=a,b"], "--grid train.seed expects seeds like 0-4"),
    (["--set", "train.seed=-1"], "--set train.seed expects seeds like 0-4"),
    (["--grid", "train.lr=,,,"], "no empty value"),
    (["--grid", "train.lr=1e-3,,2e-3"], "no empty value"),
    (["--grid", "train.lr=1e-3,"], "no empty value"),
    (["--grid", "train.lr= , "], "no empty value"),
    (["--grid", "train.lr=1e-3", "--grid", "train.lr=2e-3"], "--grid train.lr is given twice"),
    (["--seeds", "0-99999999"], f"more than {MAX_JOBS} seeds"),
    (["--seeds", "0-5000,6000-12000"], f"more than {MAX_JOBS} seeds"),
    ([a for k in "abcde" for a in ("--grid", f"model.{k}=" + ",".join(map(str, range(10))))],
     f"more than {MAX_JOBS} grid points"),
    (["--seeds", "0-4000", "--grid", "train.lr=1e-3,2e-3,3e-3"], f"at most {MAX_JOBS}"),
    (["--seeds", "0-4000", "--config", "default", "--config", "hybrid", "--config", "moons"], f"at most {MAX_JOBS}"),
])
def test_bad_seeds_and_grids_are_one_line_at_once(tmp_path, args, needle):
    start = time.perf_counter()
    for extra in ([], ["--print-commands"]):
        one_line_error(*sweep("--out", tmp_path / "s", *args, *extra)[::2], needle)
    assert time.perf_counter() - start < 5  # refused before any per-job config check
    assert not (tmp_path / "s").exists()


def test_the_largest_sweep_is_planned_at_once():
    start = time.perf_counter()
    code, out, err = sweep("--out", "s", "--print-commands", "--seeds", f"0-{MAX_JOBS - 1}")
    assert code == 0, err
    assert len(out.splitlines()) == MAX_JOBS and time.perf_counter() - start < 20

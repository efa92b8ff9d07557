"""Hostile use that needs real processes: two trainings racing for one --out, and a disk that fills up
(a small tmpfs in a private mount namespace, where the test may mount one)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from ddpmlab.runs.checkpoint import checkpoint_dirs, read_checkpoint
from ddpmlab.runs.format import load_run
from ddpmlab.runs.metrics_log import read_metrics
from hostile_support import TINY

SRC = str(Path(__file__).resolve().parent.parent / "src")


def _env(**extra):
    path = os.pathsep.join([SRC] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1", **extra}


def test_two_trainings_into_one_out_at_once(tmp_path):
    twin = tmp_path / "twin"
    iters = 600  # a second or two of training: longer than the two start-ups differ
    cmd = [sys.executable, "-m", "ddpmlab", "train", "--out", str(twin), *TINY, "--set", f"train.iters={iters}",
           "--checkpoint-every", "300"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
             for _ in range(2)]
    results = [(p.wait(timeout=300), p.stdout.read(), p.stderr.read()) for p in procs]
    for p in procs:
        p.stdout.close()
        p.stderr.close()
    assert sorted(code for code, _, _ in results) == [0, 2], results
    (_, out, err), = [r for r in results if r[0] == 0]
    (_, _, refusal), = [r for r in results if r[0] == 2]
    lines = refusal.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in refusal, refusal
    # the loser met the lock, or (on a slow start) the finished run: either way it wrote nothing
    assert "in use by another ddpmlab command" in lines[0] or "already holds a finished run" in lines[0], lines[0]
    assert err == "" and "run written to" in out
    # the surviving run is whole and consistent: weights load, the last checkpoint is the last step,
    # every metrics row once, the lock gone
    run = load_run(twin)
    assert run.info["summary"]["iters"] == iters
    assert [s for s, _ in checkpoint_dirs(twin)] == [300, 600]
    last = read_checkpoint(twin / "checkpoints" / "step_000600")
    assert [r["step"] for r in read_metrics(twin / "metrics.csv")] == list(range(1, iters + 1))
    assert read_metrics(twin / "metrics.csv")[-1]["loss"] == last.meta["loss_history"][-1]
    assert sorted(p.name for p in twin.iterdir()) == [".ddpmlab.json", "checkpoints", "config.toml", "metrics.csv",
                                                      "metrics.json", "model.safetensors", "run.json"]


DRIVER = textwrap.dedent('''
    """Run inside a private mount namespace with a small tmpfs at MNT; prints a JSON report."""
    import contextlib, hashlib, io, json, os, sys
    from ddpmlab.cli import main

    mnt = sys.argv[1]
    tiny = sys.argv[2:]
    report = {}

    def run(name, *argv):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main([str(a) for a in argv])
        report[name] = {"code": code, "stderr": err.getvalue()}

    def tree():
        found = {}
        for d, dirs, files in os.walk(mnt):
            for x in dirs:
                found[os.path.relpath(os.path.join(d, x), mnt)] = "dir"
            for x in files:
                if x != "filler":
                    with open(os.path.join(d, x), "rb") as f:
                        found[os.path.relpath(os.path.join(d, x), mnt)] = hashlib.sha256(f.read()).hexdigest()
        return found

    run_dir = os.path.join(mnt, "run")
    run("first", "train", "--out", run_dir, *tiny, "--set", "train.iters=4", "--checkpoint-every", "2")
    with open(os.path.join(mnt, "filler"), "wb", buffering=0) as f:  # fill the disk to the last block
        try:
            while True:
                f.write(b"\\0" * 4096)
        except OSError:
            pass
    report["before"] = tree()
    run("resume_full", "train", "--resume", run_dir, "--no-progress", "--set", "train.iters=8")
    run("sample_full", "sample", run_dir, "-n", "2000", "--out", os.path.join(mnt, "s.npy"))
    run("new_full", "train", "--out", os.path.join(mnt, "new", "run"), *tiny)
    run("evaluate_full", "evaluate", run_dir, "--n-bound", "200", "--n-ode", "4", "--samples", "200")
    report["after"] = tree()
    os.unlink(os.path.join(mnt, "filler"))
    run("resume_room", "train", "--resume", run_dir, "--no-progress", "--set", "train.iters=8")
    from ddpmlab.runs.metrics_log import read_metrics
    report["rows"] = [r["step"] for r in read_metrics(os.path.join(run_dir, "metrics.csv"))]
    print(json.dumps(report))
''')


def _can_mount_tmpfs(where: Path) -> str | None:
    """None if this process may mount a tmpfs in a private mount namespace, else why not."""
    if os.name != "posix" or not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "needs root to mount a tmpfs"
    if shutil.which("unshare") is None or shutil.which("mount") is None:
        return "needs unshare and mount (util-linux)"
    where.mkdir()
    probe = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                            f"mount -t tmpfs -o size=64k tmpfs '{where}' && umount '{where}'"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"cannot mount a tmpfs here ({probe.stderr.strip() or probe.returncode})"
    return None


def test_a_full_disk_is_one_line_and_keeps_earlier_files(tmp_path):
    mnt = tmp_path / "disk"
    why = _can_mount_tmpfs(mnt)
    if why:
        pytest.skip(why)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    r = subprocess.run(["unshare", "-m", "--propagation", "private", "sh", "-c",
                        'mount -t tmpfs -o size=4m tmpfs "$1" && shift && exec "$@"', "sh", str(mnt),
                        sys.executable, str(driver), str(mnt), *TINY],
                       capture_output=True, text=True, env=_env(), timeout=300)
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["first"]["code"] == 0, report["first"]
    for name in ("resume_full", "sample_full", "new_full", "evaluate_full"):
        got = report[name]
        lines = got["stderr"].strip().splitlines()
        assert got["code"] == 2 and len(lines) == 1, (name, got)
        assert "No space left on device" in lines[0] and "Traceback" not in got["stderr"], (name, lines[0])
    assert report["after"] == report["before"]  # every earlier file intact, nothing half-written left
    assert report["resume_room"]["code"] == 0, report["resume_room"]  # with room again, the run goes on
    assert report["rows"] == list(range(1, 9))

"""``ddpmlab sweep``: a grid of configs x ``--set`` values x seeds, each job a plain ``ddpmlab train`` command
run in a worker process with one thread, into an ordinary run directory.

Layout under the sweep's ``out``: ``CONFIG/POINT/seed_S/`` per job (``POINT`` is the grid point's
overrides, e.g. ``train.lr=1e-3``; absent without ``--grid``), each with its log ``seed_S.log`` beside it (the
commands' stdout and stderr; outside the run directory, which only ``ddpmlab train`` writes); ``jobs.csv`` (every job: status, exit code, seconds, log, the command run), and the
summary tables (``ddpmlab.workflows.sweep_summary``). A job whose directory already holds a finished run
is not run again, and one with checkpoints of an interrupted run is continued (``train --resume``), so a
sweep can be started again after an interruption or a failure.

The seeds are the sweep's own axis: ``--seeds``, or the values of ``--grid train.seed=...`` (or ``--set
train.seed=S``), never two of them; each job trains with the seed its directory ``seed_S`` names. A sweep
plans at most ``MAX_JOBS`` jobs (configs x grid points x seeds), refused in one line before any config is
checked. Every file the sweep writes is created under a new name and renamed into place (the job logs
too: a link planted in place of a log is refused, never written through).

The jobs are planned by ``ddpmlab.workflows.sweep_plan``; this module runs them and writes ``jobs.csv``.
"""
from __future__ import annotations

import csv
import io
import os
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ddpmlab.core.fileio import atomic_write_bytes, new_file_for_append, os_error
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.workflows.sweep_plan import Job

POLL_SECONDS = 0.05
JOBS_FILE = "jobs.csv"


@dataclass
class JobResult:
    job: Job
    status: str  # ok | failed | done earlier | interrupted | not started
    exit_code: int | None = None
    seconds: float = 0.0
    commands: list[str] = field(default_factory=list)  # shell lines of the processes actually started



def _last_line(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - 4096))
            lines = [ln.strip() for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


class _Running:
    """A job in a worker: its remaining commands, the current process and the log they write to."""

    def __init__(self, job: Job, commands: list[list[str]]):
        self.job, self.todo, self.start = job, deque(commands), time.perf_counter()
        self.result = JobResult(job, "ok")
        try:
            job.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise os_error(job.out, exc, "create") from None
        self.log = new_file_for_append(job.log)  # a new file: a link planted there is refused, not followed
        self.proc = None
        self.next()

    def next(self) -> None:
        # PYTHONSAFEPATH: ``python -m`` must not put the working directory first on sys.path, where a file
        # named like a dependency (numpy.py, tqdm.py) would run in every job, trusted or not
        self.proc = subprocess.Popen(self.todo.popleft(), stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env={**os.environ, "PYTHONSAFEPATH": "1"})
        self.result.commands.append(shlex.join(self.proc.args))

    def finish(self, status: str, code: int | None) -> JobResult:
        self.log.close()
        self.result.status, self.result.exit_code = status, code
        self.result.seconds = round(time.perf_counter() - self.start, 3)
        return self.result


def run_jobs(jobs: list[Job], workers: int, progress: bool = True, report=None) -> list[JobResult]:
    """Run ``jobs`` in at most ``workers`` processes at once. A failed job is reported in one line
    (``report``, default: stderr, above the progress bar) and the others go on. Ctrl-C: the running jobs get
    SIGINT (each writes a checkpoint), are waited for and marked interrupted; the rest are not started."""
    from tqdm.auto import tqdm

    results: dict[Job, JobResult] = {}
    pending = deque()
    for job in jobs:
        todo = job.commands_to_run()
        if todo:
            pending.append((job, todo))
        else:
            results[job] = JobResult(job, "done earlier", 0)
    bar = tqdm(total=len(jobs), initial=len(results), desc="sweep", unit="job", disable=not progress)
    report = report or (lambda line: bar.write(line, file=sys.stderr))  # above the bar, on stderr
    active: list[_Running] = []
    failed = 0
    try:
        while pending or active:
            while pending and len(active) < workers:
                job, todo = pending.popleft()
                try:
                    active.append(_Running(job, todo))
                except DDPMLabError as exc:  # its directory or log cannot be written: the others go on
                    results[job] = JobResult(job, "failed")
                    failed += 1
                    report(f"sweep: job {job.name} failed: {exc}")
                    bar.update(1)
            time.sleep(POLL_SECONDS)
            for run in list(active):
                code = run.proc.poll()
                if code is None:
                    continue
                if code == 0 and run.todo:
                    run.next()
                    continue
                active.remove(run)
                results[run.job] = run.finish("ok" if code == 0 else "failed", code)
                if code != 0:
                    failed += 1
                    report(f"sweep: job {run.job.name} failed (exit {code}): {_last_line(run.job.log)}; "
                           f"log: {run.job.log}")
                bar.update(1)
                bar.set_postfix(failed=failed, refresh=False)
    except KeyboardInterrupt:
        for run in active:
            run.proc.send_signal(signal.SIGINT)
        for run in active:
            results[run.job] = run.finish("interrupted", run.proc.wait())
        raise SweepInterrupted([results.get(j, JobResult(j, "not started")) for j in jobs]) from None
    finally:
        bar.close()
    return [results[j] for j in jobs]


class SweepInterrupted(Exception):
    def __init__(self, results):
        super().__init__("interrupted")
        self.results = results


JOB_COLUMNS = ("config", "grid", "seed", "status", "exit_code", "seconds", "dir", "log", "command")


def jobs_csv(results: list[JobResult]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(JOB_COLUMNS)
    for r in results:
        j = r.job
        w.writerow([j.label, ",".join(j.point), j.seed, r.status, "" if r.exit_code is None else r.exit_code,
                    r.seconds, str(j.out), str(j.log), " && ".join(r.commands)])
    return buf.getvalue()


def write_jobs_csv(out: Path, results: list[JobResult]) -> None:
    atomic_write_bytes(Path(out) / JOBS_FILE, jobs_csv(results).encode())

"""``ddpmlab sweep``: a grid of configs x ``--set`` values x seeds, each job a plain ``ddpmlab train`` command
run in a worker process with one thread, into an ordinary run directory.

Layout under the sweep's ``out``: ``CONFIG/POINT/seed_S/`` per job (``POINT`` is the grid point's
overrides, e.g. ``train.lr=1e-3``; absent without ``--grid``), each with its log ``seed_S.log`` beside it (the
commands' stdout and stderr; outside the run directory, which only ``ddpmlab train`` writes); ``jobs.csv`` (every job: status, exit code, seconds, log, the command run), and the
summary tables (``ddpmlab.workflows.sweep_summary``). A job whose directory already holds a finished run
is not run again, and one with checkpoints of an interrupted run is continued (``train --resume``), so a
sweep can be started again after an interruption or a failure.
"""
from __future__ import annotations

import csv
import io
import itertools
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ddpmlab.config import load_config
from ddpmlab.core.fileio import atomic_write_bytes
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.runs.checkpoint import checkpoint_dirs

POLL_SECONDS = 0.05
JOB_THREADS = 1  # N workers of one thread each use N cores without fighting (ddpmlab.core.threads)


@dataclass(frozen=True)
class Job:
    """One training run of the grid: ``config`` (a packaged name or a file) with ``point`` (the grid's
    ``section.key=value`` overrides) and ``train.seed = seed``, after the sweep-wide ``sets``."""

    config: str
    label: str  # the config's name in paths and tables
    point: tuple[str, ...]
    seed: int
    sets: tuple[str, ...]
    out: Path
    evaluate: bool = False

    @property
    def name(self) -> str:
        return "/".join([self.label, *([point_label(self.point)] if self.point else []), f"seed_{self.seed}"])

    @property
    def log(self) -> Path:
        return self.out.with_name(self.out.name + ".log")

    def train_argv(self, resume: bool = False) -> list[str]:
        """``ddpmlab train`` of this job; ``resume``: continue its checkpoint (the same overrides, which
        ``--resume`` refuses in one line if they changed anything but ``train.iters`` and the like)."""
        sets = [*self.sets, *self.point, f"train.seed={self.seed}"]
        where = ["--resume", str(self.out)] if resume else ["--config", self.config, "--out", str(self.out)]
        return [sys.executable, "-m", "ddpmlab", "train", *where,
                *itertools.chain.from_iterable(("--set", s) for s in sets),
                "--threads", str(JOB_THREADS), "--no-progress"]

    def evaluate_argv(self) -> list[str]:
        return [sys.executable, "-m", "ddpmlab", "evaluate", str(self.out), "--threads", str(JOB_THREADS)]

    def commands(self) -> list[list[str]]:
        """The job's commands, in order (what ``--print-commands`` shows)."""
        return [self.train_argv()] + ([self.evaluate_argv()] if self.evaluate else [])

    def commands_to_run(self) -> list[list[str]]:
        """The commands still needed: none for a finished job, ``train --resume`` for an interrupted one."""
        trained = (self.out / "metrics.json").is_file()
        evaluated = not self.evaluate or (self.out / "evaluation.json").is_file()
        if trained and evaluated:
            return []
        if trained:
            return [self.evaluate_argv()]
        first = self.train_argv(resume=self.out.is_dir() and bool(checkpoint_dirs(self.out)))
        return [first] + ([self.evaluate_argv()] if self.evaluate else [])


@dataclass
class JobResult:
    job: Job
    status: str  # ok | failed | done earlier | interrupted | not started
    exit_code: int | None = None
    seconds: float = 0.0
    commands: list[str] = field(default_factory=list)  # shell lines of the processes actually started


def command_line(job: Job) -> str:
    """One shell line per job (its commands joined by ``&&``), as ``--print-commands`` prints it."""
    return " && ".join(shlex.join(argv) for argv in job.commands())


def point_label(point) -> str:
    """A grid point as a directory name: its overrides joined by ','; characters a path should not hold
    become '_'."""
    return re.sub(r"[^A-Za-z0-9._=+,-]", "_", ",".join(point))


def parse_seeds(text: str) -> list[int]:
    """'0-4', '1,3,5' or a mix ('0-2,7'): the seeds in order, without repeats."""
    seeds: list[int] = []
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise DDPMLabError(f"--seeds expects seeds like 0-4 or 0,2,7, got {text!r}")
        hi = int(m.group(2)) if m.group(2) is not None else int(m.group(1))
        seeds += [s for s in range(int(m.group(1)), hi + 1) if s not in seeds]
    return seeds


def parse_grid(texts) -> list[tuple[str, ...]]:
    """``--grid section.key=v1,v2`` options -> the grid's points (their Cartesian product), each a tuple
    of ``section.key=value`` overrides. Values are split at commas."""
    axes = []
    for text in texts:
        key, sep, values = text.partition("=")
        if not sep or "." not in key or not values.strip():
            raise DDPMLabError(f"--grid expects section.key=value1,value2,..., got {text!r}")
        axes.append([f"{key.strip()}={v.strip()}" for v in values.split(",") if v.strip()])
    return list(itertools.product(*axes))


def plan_sweep(configs, grid_texts, seeds, sets, out, evaluate: bool = False) -> list[Job]:
    """Every job of the sweep, each config validated with its overrides first (a bad config, key or
    value is a one-line error before anything runs)."""
    if not configs:
        configs = ["default"]
    points = parse_grid(grid_texts)
    labels: dict[str, str] = {}
    for config in configs:
        label, i = re.sub(r"[^A-Za-z0-9._+-]", "_", Path(config).stem), 2
        while label in labels.values():
            label, i = f"{Path(config).stem}-{i}", i + 1
        labels.setdefault(config, label)
    jobs = []
    for config in dict.fromkeys(configs):
        for point in points:
            for seed in seeds:
                load_config(config, [*sets, *point, f"train.seed={seed}"])
                sub = Path(out, labels[config], *([point_label(point)] if point else []), f"seed_{seed}")
                jobs.append(Job(config, labels[config], tuple(point), seed, tuple(sets), sub, evaluate))
    if len({j.out for j in jobs}) != len(jobs):
        raise DDPMLabError("two grid points map to the same directory; give the --grid values distinct names")
    return jobs


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
        job.out.mkdir(parents=True, exist_ok=True)
        self.log = open(job.log, "wb")
        self.proc = None
        self.next()

    def next(self) -> None:
        self.proc = subprocess.Popen(self.todo.popleft(), stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL)
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
                active.append(_Running(*pending.popleft()))
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
    atomic_write_bytes(Path(out) / "jobs.csv", jobs_csv(results).encode())

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
"""
from __future__ import annotations

import csv
import io
import itertools
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from ddpmlab.config.schema import load_config
from ddpmlab.core.fileio import atomic_write_bytes, new_file_for_append, os_error
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.registry import check_trust
from ddpmlab.runs.checkpoint import checkpoint_dirs
from ddpmlab.runs.ownership import LOCK_FILE

POLL_SECONDS = 0.05
JOB_THREADS = 1  # N workers of one thread each use N cores without fighting (ddpmlab.core.threads)
MAX_JOBS = 10_000  # the most jobs one sweep plans (a typo such as --seeds 0-99999999 is refused at once)
SEED_KEY, JOBS_FILE = "train.seed", "jobs.csv"


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
    trust_code: bool = False  # the sweep's --trust-code, passed on to each command of the job

    @property
    def name(self) -> str:
        return "/".join([self.label, *([point_label(self.point)] if self.point else []), f"seed_{self.seed}"])

    @property
    def log(self) -> Path:
        return self.out.with_name(self.out.name + ".log")

    def train_argv(self, resume: bool = False) -> list[str]:
        """``ddpmlab train`` of this job; ``resume``: continue its checkpoint (the same overrides, which
        ``--resume`` refuses in one line if they changed anything but ``train.iters`` and the like)."""
        sets = [*self.sets, *self.point, f"{SEED_KEY}={self.seed}"]
        where = ["--resume", str(self.out)] if resume else ["--config", self.config, "--out", str(self.out)]
        return [sys.executable, "-m", "ddpmlab", "train", *where,
                *itertools.chain.from_iterable(("--set", s) for s in sets),
                "--threads", str(JOB_THREADS), "--no-progress", *self._trust()]

    def evaluate_argv(self) -> list[str]:
        return [sys.executable, "-m", "ddpmlab", "evaluate", str(self.out), "--threads", str(JOB_THREADS),
                *self._trust()]

    def _trust(self) -> list[str]:
        return ["--trust-code"] if self.trust_code else []

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


def parse_seeds(text: str, option: str = "--seeds") -> list[int]:
    """'0-4', '1,3,5' or a mix ('0-2,7'): the seeds in order, without repeats; more than ``MAX_JOBS`` is
    refused in one line before any list is built."""
    seeds: dict[int, None] = {}
    count = 0
    for part in text.split(","):
        m = re.fullmatch(r"\s*(\d+)\s*(?:-\s*(\d+)\s*)?", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            raise DDPMLabError(f"{option} expects seeds like 0-4 or 0,2,7, got {text!r}")
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        count += hi - lo + 1
        if count > MAX_JOBS:
            raise DDPMLabError(f"{option} {text} names more than {MAX_JOBS} seeds; a sweep runs at most {MAX_JOBS} "
                               f"jobs")
        seeds.update(dict.fromkeys(range(lo, hi + 1)))
    return list(seeds)


def _key(override: str) -> str:
    return override.partition("=")[0].strip()


def seed_axis(seeds, grid_texts, sets) -> tuple[list[int], list[str], list[str]]:
    """(seeds, the other ``--grid`` options, the other ``--set`` values): the seeds come from ``seeds``
    (``--seeds``, parsed; ``None`` when not given), or from ``--grid train.seed=...`` or ``--set
    train.seed=S``, so each job trains with the seed its label names; two of them are refused in one line."""
    grid_seeds = [t for t in grid_texts if _key(t) == SEED_KEY]
    set_seeds = [s for s in sets if _key(s) == SEED_KEY]
    given = ["--seeds"] * (seeds is not None) + [f"--grid {t}" for t in grid_seeds] + [f"--set {s}" for s in set_seeds]
    if len(given) > 1:
        raise DDPMLabError(f"{SEED_KEY} is given more than once ({', '.join(given)}); give the sweep's seeds once, "
                           f"e.g. --seeds 1,2")
    if grid_seeds or set_seeds:
        option = given[0]
        seeds = parse_seeds(option.partition("=")[2], option.partition("=")[0])
    rest = [t for t in grid_texts if _key(t) != SEED_KEY], [s for s in sets if _key(s) != SEED_KEY]
    return (seeds if seeds is not None else [0]), *rest


def parse_grid(texts) -> list[tuple[str, ...]]:
    """``--grid section.key=v1,v2`` options -> the grid's points (their Cartesian product), each a tuple
    of ``section.key=value`` overrides. Values are split at commas; an empty value, a key given twice or
    more than ``MAX_JOBS`` points is refused in one line."""
    axes, size = {}, 1
    for text in texts:
        key, sep, values = text.partition("=")
        key, values = key.strip(), [v.strip() for v in values.split(",")]
        if not sep or "." not in key or not all(values):
            raise DDPMLabError(f"--grid expects section.key=value1,value2,... (no empty value), got {text!r}")
        if key in axes:
            raise DDPMLabError(f"--grid {key} is given twice; give all its values in one --grid {key}=v1,v2,...")
        axes[key] = [f"{key}={v}" for v in values]
        size *= len(values)
        if size > MAX_JOBS:
            raise DDPMLabError(f"--grid gives more than {MAX_JOBS} grid points; a sweep runs at most {MAX_JOBS} jobs")
    return list(itertools.product(*axes.values()))


def plan_sweep(configs, grid_texts, seeds, sets, out, evaluate: bool = False, trust_code: bool = False) -> list[Job]:
    """Every job of the sweep, each config validated with its overrides first (a bad config, key or
    value is a one-line error before anything runs; so is a config naming your network class without
    ``trust_code``, which each job's commands then get as ``--trust-code``). ``seeds``: a list, or ``None``
    when ``--seeds`` is not given (``seed_axis``). More than ``MAX_JOBS`` jobs is refused first."""
    if not configs:
        configs = ["default"]
    seeds, grid_texts, sets = seed_axis(seeds, grid_texts, sets)
    points = parse_grid(grid_texts)
    n_jobs = len(dict.fromkeys(configs)) * len(points) * len(seeds)
    if n_jobs > MAX_JOBS:
        raise DDPMLabError(f"the sweep has {n_jobs} jobs (configs x grid points x seeds); a sweep runs at most "
                           f"{MAX_JOBS}")
    labels: dict[str, str] = {}
    for config in configs:
        label, i = re.sub(r"[^A-Za-z0-9._+-]", "_", Path(config).stem), 2
        while label in labels.values():
            label, i = f"{Path(config).stem}-{i}", i + 1
        labels.setdefault(config, label)
    jobs = []
    for config in dict.fromkeys(configs):
        for point in points:
            cfg = load_config(config, [*sets, *point, f"{SEED_KEY}={max(seeds)}"])  # each seed is in 0..max
            check_trust(cfg.model.arch, trust_code, f"config {config!r}")
            for seed in seeds:
                sub = Path(out, labels[config], *([point_label(point)] if point else []), f"seed_{seed}")
                jobs.append(Job(config, labels[config], tuple(point), seed, tuple(sets), sub, evaluate, trust_code))
    if len({j.out for j in jobs}) != len(jobs):
        raise DDPMLabError("two grid points map to the same directory; give the --grid values distinct names")
    return jobs


def only_planned_runs(out, jobs: list[Job]) -> bool:
    """Whether the directory ``out`` holds nothing but the planned jobs' run directories and the
    directories above them, no file of its own: what the commands of ``--print-commands`` leave when run
    elsewhere. The sweep may then take ``out`` over to continue and summarise them."""
    out = Path(out)
    runs = {j.out.relative_to(out) for j in jobs}
    above = {p for r in runs for p in r.parents if p != Path(".")}
    todo = [Path(".")]
    try:
        while todo:
            rel = todo.pop()
            for name in os.listdir(out / rel):
                child, path = rel / name, out / rel / name
                if rel == Path(".") and name == LOCK_FILE:
                    continue  # held by this sweep
                if child in runs and path.is_dir():
                    continue  # a run directory: ``ddpmlab train`` judges what it holds
                if child not in above or path.is_symlink() or not path.is_dir():
                    return False
                todo.append(child)
    except OSError:
        return False
    return True


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

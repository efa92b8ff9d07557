"""Planning a ``ddpmlab sweep``: its jobs (configs x grid points x seeds, at most ``MAX_JOBS``), each a plain
``ddpmlab train`` command (and ``evaluate``) into ``CONFIG/POINT/seed_S/`` under the sweep's ``out``; the
seed axis and the ``--seeds`` and ``--grid`` options. Running them: ``ddpmlab.workflows.sweep``.
"""
from __future__ import annotations

import itertools
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from ddpmlab.config.schema import load_config
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.registry import check_trust
from ddpmlab.runs.checkpoint import checkpoint_dirs
from ddpmlab.runs.ownership import LOCK_FILE

JOB_THREADS = 1  # N workers of one thread each use N cores without fighting (ddpmlab.core.threads)
MAX_JOBS = 10_000  # the most jobs one sweep plans (a typo such as --seeds 0-99999999 is refused at once)
SEED_KEY = "train.seed"


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
    imports: tuple[str, ...] = ()  # the sweep's --import modules, passed on likewise (train records them)

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
        return (["--trust-code"] if self.trust_code else []) + [a for m in self.imports for a in ("--import", m)]

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


def plan_sweep(configs, grid_texts, seeds, sets, out, evaluate: bool = False, trust_code: bool = False,
               imports=()) -> list[Job]:
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
            cfg = load_config(config, [*sets, *point, f"{SEED_KEY}={max(seeds)}"], trust_code)  # seeds in 0..max
            check_trust(cfg.model.arch, trust_code, f"config {config!r}")
            for seed in seeds:
                sub = Path(out, labels[config], *([point_label(point)] if point else []), f"seed_{seed}")
                jobs.append(Job(config, labels[config], tuple(point), seed, tuple(sets), sub, evaluate, trust_code,
                                tuple(imports)))
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


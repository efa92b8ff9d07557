"""Several ddpmlab trainings at once on one machine, with default settings, and a sweep across the cores.

    python benchmarks/concurrency.py [--iters 500] [--counts 1,2,4] [--sweep-iters 300] [--threads N] [--md FILE]

1. One ``ddpmlab train --config default --set train.iters=ITERS`` alone, then 2 and 4 started together,
   each in its own process, with no thread flag and without ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``
   in its environment (``--threads N`` passes ``--threads N`` instead, e.g. 2 to see the old behaviour).
   Prints each one's wall time (process start to exit) and training time (metrics.json), and their
   ratios to the one alone. Required (issue 13): each of 2 within 1.5x, each of 4 within 3x.
2. ``ddpmlab sweep`` over 2 recipes (default, hybrid) x 5 seeds with ``--jobs 2``: its wall time against
   the sum of its jobs' times (jobs.csv). About 0.5 means both cores were busy all along.

``os.getloadavg()`` is printed before and after each part: other work on the machine skews every figure.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENV = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}


def load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def train_together(n: int, iters: int, threads: int | None, tmp: Path) -> list[tuple[float, float, int]]:
    """Start ``n`` trainings at once; (wall seconds, training seconds, threads used) of each."""
    procs = []
    for i in range(n):
        out = tmp / f"n{n}_{i}"
        argv = [sys.executable, "-m", "ddpmlab", "train", "--config", "default", "--set", f"train.iters={iters}",
                "--out", str(out), "--no-progress", *(["--threads", str(threads)] if threads else [])]
        procs.append((out, time.perf_counter(), subprocess.Popen(argv, env=ENV, stdout=subprocess.DEVNULL,
                                                                  stderr=subprocess.PIPE, text=True)))
    results = []
    for out, start, proc in procs:
        _, err = proc.communicate()
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            raise SystemExit(f"training failed: {err.strip()}")
        m = json.loads((out / "metrics.json").read_text())
        results.append((wall, m["train_seconds"], m.get("threads")))
    return results


def sweep_check(iters: int, tmp: Path) -> tuple[float, float, int]:
    """(sweep wall seconds, sum of its jobs' seconds, jobs) of 2 recipes x 5 seeds on 2 workers."""
    out = tmp / "sweep"
    argv = [sys.executable, "-m", "ddpmlab", "sweep", "--config", "default", "--config", "hybrid", "--seeds", "0-4",
            "--jobs", "2", "--set", f"train.iters={iters}", "--out", str(out), "--no-progress"]
    start = time.perf_counter()
    r = subprocess.run(argv, env=ENV, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"sweep failed: {r.stderr.strip()}")
    with open(out / "jobs.csv", newline="") as f:
        jobs = list(csv.DictReader(f))
    return wall, sum(float(j["seconds"]) for j in jobs), len(jobs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iters", type=int, default=500)
    ap.add_argument("--counts", default="1,2,4", help="how many trainings at once, in turn (first: the baseline)")
    ap.add_argument("--threads", type=int, default=None, help="pass --threads N to each training (default: none)")
    ap.add_argument("--sweep-iters", type=int, default=300, help="train.iters of each sweep job (0: no sweep)")
    ap.add_argument("--md", type=Path, default=None, help="also write the printed lines to this file")
    a = ap.parse_args()
    counts = [int(c) for c in a.counts.split(",")]
    lines = ["`" + " ".join(["python", "benchmarks/concurrency.py", *sys.argv[1:]]) + "`",
             f"cores usable: {len(os.sched_getaffinity(0))}; {load()}", ""]

    def say(line: str = "") -> None:
        print(line, flush=True)
        lines.append(line)

    for line in lines:
        print(line, flush=True)
    limits = {2: 1.5, 4: 3.0}
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        alone = None
        say("| at once | each: wall s (train s) | threads | wall / alone (max) | train / alone (max) | required | "
            "load average after |")
        say("|---|---|---|---|---|---|---|")
        for n in counts:
            res = train_together(n, a.iters, a.threads, Path(tmp))
            if alone is None:
                alone = (min(r[0] for r in res), min(r[1] for r in res))
            wall_ratio = max(r[0] for r in res) / alone[0]
            train_ratio = max(r[1] for r in res) / alone[1]
            need = limits.get(n)
            ok &= need is None or wall_ratio <= need
            each = ", ".join(f"{w:.2f} ({t:.2f})" for w, t, _ in res)
            threads = ",".join(str(r[2]) for r in res)
            say(f"| {n} | {each} | {threads} | {wall_ratio:.2f} | {train_ratio:.2f} | "
                f"{'<= ' + str(need) if need else ''} | {' '.join(f'{x:.2f}' for x in os.getloadavg())} |")
        say()
        say(f"concurrent trainings within the required ratios (wall time): {'yes' if ok else 'NO'}")
        if a.sweep_iters > 0:
            wall, total, n = sweep_check(a.sweep_iters, Path(tmp))
            say(f"sweep: {n} jobs (default, hybrid x seeds 0-4, train.iters={a.sweep_iters}) with --jobs 2: "
                f"wall {wall:.2f} s, sum of the jobs' times {total:.2f} s, wall / sum = {wall / total:.3f} "
                f"(0.5 = both cores busy); {load()}")
    if a.md:
        a.md.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

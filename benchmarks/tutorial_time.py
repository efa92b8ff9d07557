"""``ddpmlab tutorial`` end to end: today's behaviour (``--recipe seed``) against the full tutorial
(``--recipe both``) in one run, and the recommended recipe's quality over seeds.

    python benchmarks/tutorial_time.py [--seeds 0 1 2 3 4] [--base COMMIT] [--out FILE.json]

For each seed, ``ddpmlab tutorial --recipe seed`` and ``--recipe both`` (and, with ``--base``, that commit's
own ``ddpmlab tutorial``, exported with ``git archive``: the command before the recommended recipe was
added) run as fresh subprocesses, each into a new directory, timed from start to exit. The order rotates
from seed to seed, so that a change in the host's speed hits every side. Checks:
- time: the sum of ``both`` over the seeds within 2x the sum of ``seed`` (and of the base, when given);
- quality, from each ``both`` run's metrics.json: the recommended recipe's W1 <= 0.12 and its right
  component's fraction within 0.015 of 2/3, on every seed.
Prints a Markdown table, the checks and the load average before and after.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
W1_MAX, FRACTION_TOL, TIME_RATIO_MAX = 0.12, 0.015, 2.0


def export_src(commit: str, dest: Path) -> Path:
    """The ``src`` folder of ``commit`` (``git archive``)."""
    data = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def run_tutorial(src: Path, out: Path, seed: int, recipe: str | None) -> float:
    """Wall-clock seconds of one ``ddpmlab tutorial`` (``recipe`` None: the command's own default)."""
    args = [sys.executable, "-m", "ddpmlab", "tutorial", "--out", str(out), "--seed", str(seed), "--no-progress"]
    if recipe is not None:
        args += ["--recipe", recipe]
    env = {**os.environ, "PYTHONPATH": str(src)}
    start = time.perf_counter()
    r = subprocess.run(args, capture_output=True, text=True, env=env, cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(args[2:])} failed: {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return seconds


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--base", help="also time this commit's ddpmlab tutorial (before the recommended recipe)")
    p.add_argument("--out", type=Path, help="write the results as JSON here")
    a = p.parse_args()
    load_before = os.getloadavg()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        sides = {"seed": (ROOT / "src", "seed"), "both": (ROOT / "src", "both")}
        if a.base:
            sides["base"] = (export_src(a.base, tmp / "base"), None)
        names = list(sides)
        for i, seed in enumerate(a.seeds):
            row = {"seed": seed}
            for name in names[i % len(names):] + names[:i % len(names)]:  # rotate the order
                src, recipe = sides[name]
                row[f"{name}_s"] = round(run_tutorial(src, tmp / f"{name}{seed}", seed, recipe), 2)
            rec = json.loads((tmp / f"both{seed}" / "metrics.json").read_text())["recommended"]
            row.update(w1=rec["w1"], w1_floor=rec["w1_noise_floor"], right_fraction=rec["component_fractions"][1],
                       train_s=rec["train_seconds"])
            rows.append(row)
            print(json.dumps(row), flush=True)
    load_after = os.getloadavg()
    total = {name: sum(r[f"{name}_s"] for r in rows) for name in names}
    checks = {
        "both / seed": total["both"] / total["seed"],
        "quality": all(r["w1"] <= W1_MAX and abs(r["right_fraction"] - 2 / 3) <= FRACTION_TOL for r in rows),
    }
    if "base" in total:
        checks["both / base"] = total["both"] / total["base"]
    cols = ["seed"] + [f"{n}_s" for n in names] + ["w1", "w1_floor", "right_fraction", "train_s"]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.4f}" if isinstance(r[c], float) and c[-2:] != "_s" else str(r[c])
                                 for c in cols) + " |")
    print(f"\ntotal seconds: {', '.join(f'{n} {t:.1f}' for n, t in total.items())}")
    for key in ("both / seed", "both / base"):
        if key in checks:
            ok = "yes" if checks[key] <= TIME_RATIO_MAX else "NO"
            print(f"time {key}: {checks[key]:.2f} (required <= {TIME_RATIO_MAX}): {ok}")
    print(f"recommended recipe: W1 <= {W1_MAX} and right fraction within {FRACTION_TOL} of 2/3 on "
          f"{sum(r['w1'] <= W1_MAX and abs(r['right_fraction'] - 2 / 3) <= FRACTION_TOL for r in rows)} of "
          f"{len(rows)} seeds: {'yes' if checks['quality'] else 'NO'}")
    print(f"load average (1, 5, 15 min): before {', '.join(f'{v:.2f}' for v in load_before)}; "
          f"after {', '.join(f'{v:.2f}' for v in load_after)}; {os.cpu_count()} cores")
    if a.out:
        a.out.write_text(json.dumps({"rows": rows, "total_seconds": total, "checks": checks,
                                     "load_before": load_before, "load_after": load_after}, indent=2))


if __name__ == "__main__":
    main()

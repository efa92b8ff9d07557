"""Start-up time: ``import ddpmlab``, the full API and every ``--help`` against ``import torch`` (issue 28).

    python benchmarks/startup.py [--runs 7] [--out benchmarks/results]

Each case is a fresh interpreter (this checkout's ``src`` first on PYTHONPATH), timed from start to exit;
a warm-up round (not counted) fills the bytecode and file caches, then ``--runs`` rounds run every case
once each, the order rotating from round to round so that a change in the host's speed hits every case.
Reported per case: the median and the minimum wall time. Cases:

- ``python -c "import torch"``, the floor every command that computes pays;
- ``python -c "import ddpmlab"`` (lazy: no torch) and ``python -c "import ddpmlab as dl; dl.Trainer"``,
  the full API (its median minus the torch import's is ddpmlab's import overhead);
- ``ddpmlab --help`` and ``ddpmlab <command> --help`` for every command in ``ddpmlab.cli.COMMANDS``.

Then ``-X importtime`` of the full API and of ``ddpmlab --help``: the ten largest cumulative import times
of ddpmlab, scipy, plotly and matplotlib modules, torch's own, and which ddpmlab module first imported each
of torch, scipy, plotly and matplotlib. Checks (issue 28): every ``--help`` at most 1.0 s and the import
overhead at most 0.5 s (medians). Prints the load average before and after; writes startup.json and
startup.md into ``--out``.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from importlib.metadata import version
from pathlib import Path

from ddpmlab.cli import COMMANDS
from ddpmlab.core.fileio import atomic_write_bytes, atomic_write_json, ensure_writable_dir
from ddpmlab.core.utils import DDPMLabError

ROOT = Path(__file__).resolve().parents[1]
HELP_MAX_S, OVERHEAD_MAX_S = 1.0, 0.5  # issue 28's targets
HEAVY = ("torch", "scipy", "plotly", "matplotlib")  # what a --help must not import
OFFENDERS = ("ddpmlab", "scipy", "plotly", "matplotlib")  # packages whose modules the importtime tables list
TOP = "(top level, or a lazy import_module)"  # what -X importtime shows without an importing module
TORCH, PACKAGE, FULL_API = "import torch", "import ddpmlab", "import ddpmlab as dl; dl.Trainer"


def cli() -> list[str]:
    """The ``ddpmlab`` console script as a user runs it (``python -m ddpmlab`` where none is installed)."""
    script = Path(sys.executable).with_name("ddpmlab")
    return [sys.executable, str(script)] if script.is_file() else [sys.executable, "-m", "ddpmlab"]


def cases() -> dict[str, list[str]]:
    """Case name -> the interpreter's argument list (after ``python``'s own options)."""
    out = {TORCH: ["-c", TORCH], PACKAGE: ["-c", PACKAGE], FULL_API: ["-c", FULL_API],
           "ddpmlab --help": cli()[1:] + ["--help"]}
    out.update({f"ddpmlab {c} --help": cli()[1:] + [c, "--help"] for c in COMMANDS})
    return out


def env() -> dict:
    src = str(ROOT / "src")
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": src if not path else f"{src}{os.pathsep}{path}"}


def run(args: list[str], options: tuple[str, ...] = ()) -> tuple[float, str]:
    """Wall seconds of one fresh interpreter, and its stderr; a failing case stops the benchmark."""
    cmd = [sys.executable, *options, *args]
    start = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=tempfile.gettempdir())
    seconds = time.perf_counter() - start
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[1:])} failed ({r.returncode}): {(r.stderr.strip().splitlines() or ['?'])[-1]}")
    return seconds, r.stderr


def wall_times(runs: int) -> dict[str, list[float]]:
    """Every case's wall seconds over ``runs`` rotating rounds, after one warm-up round."""
    named = cases()
    names = list(named)
    for name in names:  # warm-up: bytecode and the file cache
        run(named[name])
    times = {name: [] for name in names}
    for r in range(runs):
        for name in names[r % len(names):] + names[:r % len(names)]:
            times[name].append(run(named[name])[0])
        print(f"round {r + 1} of {runs} done (load {fmt_load()})", flush=True)
    return times


def parse_importtime(stderr: str) -> list[dict]:
    """``-X importtime`` lines as dicts (name, level, self_ms, cumulative_ms, imported_by), in print order
    (a module after everything it imported; its importer is the next line at a lower level)."""
    rows = []
    for line in stderr.splitlines():
        if not line.startswith("import time:") or "imported package" in line:
            continue
        self_us, cum_us, name = line[len("import time:"):].split("|")
        name = name[1:]
        rows.append({"name": name.strip(), "level": (len(name) - len(name.lstrip())) // 2,
                     "self_ms": int(self_us) / 1000, "cumulative_ms": int(cum_us) / 1000})
    for i, row in enumerate(rows):
        row["imported_by"] = next((r["name"] for r in rows[i + 1:] if r["level"] < row["level"]), None)
    return rows


def first_import_chain(rows: list[dict], package: str) -> list[str] | None:
    """The chain importer <- ... that first brought ``package`` in: from the outermost module of the
    package up to the first ddpmlab module (or the top level)."""
    by_name = {r["name"]: r for r in rows}
    first = next((r for r in rows if r["name"].partition(".")[0] == package
                  and (r["imported_by"] or "").partition(".")[0] != package), None)
    if first is None:
        return None
    chain, row = [first["name"]], first
    while row["imported_by"] is not None and not chain[-1].startswith("ddpmlab"):
        chain.append(row["imported_by"])
        row = by_name[row["imported_by"]]
    return chain


def importtime(args: list[str]) -> dict:
    """Top offenders, torch's cumulative time and the heavy packages' first importers of one case."""
    rows = parse_importtime(run(args, ("-X", "importtime"))[1])
    ours = [r for r in rows if r["name"].partition(".")[0] in OFFENDERS]
    top = sorted(ours, key=lambda r: -r["cumulative_ms"])[:10]
    torch_row = next((r for r in rows if r["name"] == "torch"), None)
    return {"top": [{k: r[k] for k in ("name", "cumulative_ms", "self_ms", "imported_by")} for r in top],
            "torch_cumulative_ms": torch_row["cumulative_ms"] if torch_row else 0.0,
            "total_ms": sum(r["cumulative_ms"] for r in rows if r["level"] == 0),
            "heavy": {p: first_import_chain(rows, p) for p in HEAVY}}


def summarise(times: dict[str, list[float]]) -> dict:
    stats = {k: {"median_s": statistics.median(v), "min_s": min(v), "runs_s": v} for k, v in times.items()}
    helps = {k: v["median_s"] for k, v in stats.items() if k.endswith("--help")}
    overhead = stats[FULL_API]["median_s"] - stats[TORCH]["median_s"]
    slowest = max(helps, key=helps.get)
    return {"cases": stats, "overhead_s": overhead, "slowest_help": slowest,
            "checks": {"help": {"value_s": helps[slowest], "max_s": HELP_MAX_S, "pass": helps[slowest] <= HELP_MAX_S},
                       "overhead": {"value_s": overhead, "max_s": OVERHEAD_MAX_S, "pass": overhead <= OVERHEAD_MAX_S}}}


def markdown(result: dict) -> str:
    meta, checks = result["meta"], result["checks"]
    lines = ["# Start-up time (issue 28)", "",
             f"`python benchmarks/startup.py {' '.join(meta['argv'])}`: Python {meta['python']}, "
             f"torch {meta['torch']}, {meta['cpus']} CPUs; {meta['runs']} runs per case, fresh interpreters. "
             f"Load average before {meta['load_before']}, after {meta['load_after']}.", "",
             "| case | median s | min s |", "|---|---|---|"]
    lines += [f"| `{k}` | {v['median_s']:.3f} | {v['min_s']:.3f} |" for k, v in result["cases"].items()]
    lines += ["", f"- slowest --help: `{result['slowest_help']}` {checks['help']['value_s']:.3f} s (target <= "
              f"{HELP_MAX_S} s): {verdict(checks['help'])}",
              f"- import overhead beyond torch (full API minus `import torch`, medians): {result['overhead_s']:.3f} s "
              f"(target <= {OVERHEAD_MAX_S} s): {verdict(checks['overhead'])}"]
    for case, it in result["importtime"].items():
        lines += ["", f"`python -X importtime` of `{case}`: total {it['total_ms']:.0f} ms, torch "
                  f"{it['torch_cumulative_ms']:.0f} ms. Heavy packages and their first importer:"]
        lines += [f"- {p}: " + (" <- ".join(chain) + ("" if chain[-1].startswith("ddpmlab") else " <- " + TOP)
                                if chain else "not imported") for p, chain in it["heavy"].items()]
        lines += ["", "| module (10 largest cumulative) | cumulative ms | self ms | imported by |", "|---|---|---|---|"]
        lines += [f"| {r['name']} | {r['cumulative_ms']:.1f} | {r['self_ms']:.1f} | {r['imported_by'] or TOP} |"
                  for r in it["top"]]
    return "\n".join(lines) + "\n"


def verdict(check: dict) -> str:
    return "PASS" if check["pass"] else "FAIL"


def fmt_load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", type=int, default=7, help="counted runs per case (after one warm-up round)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = p.parse_args()
    if a.runs < 1:
        p.error("--runs must be at least 1")
    out = ensure_writable_dir(a.out)  # before the measurements, not after
    load_before = fmt_load()
    print(f"load average before: {load_before} ({os.cpu_count()} CPUs)", flush=True)
    result = summarise(wall_times(a.runs))
    named = cases()
    result["importtime"] = {case: importtime(named[case]) for case in (FULL_API, "ddpmlab --help")}
    result["meta"] = {"argv": sys.argv[1:], "runs": a.runs, "python": platform.python_version(),
                      "torch": version("torch"), "cpus": os.cpu_count(), "load_before": load_before,
                      "load_after": fmt_load()}
    text = markdown(result)
    atomic_write_json(out / "startup.json", result)
    atomic_write_bytes(out / "startup.md", text.encode())
    print(text)
    print(f"--help <= {HELP_MAX_S} s: {verdict(result['checks']['help'])}; import overhead <= {OVERHEAD_MAX_S} s: "
          f"{verdict(result['checks']['overhead'])}")
    print(f"load average after: {result['meta']['load_after']}")


if __name__ == "__main__":
    try:
        main()
    except DDPMLabError as exc:  # a bad config name, an unwritable --out: one line
        raise SystemExit(f"benchmarks/startup.py: error: {exc}") from None

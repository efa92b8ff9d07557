"""The summary of a sweep: for each config and grid point, the mean and spread over seeds of every metric
in the runs' ``metrics.json`` (and, after ``--evaluate``, the main figures of ``evaluation.json``), as
Markdown (``summary.md``) and CSV (``summary.csv``).

The spread is the sample standard deviation over seeds (n - 1 in the denominator); empty for one seed.
"""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

from ddpmlab.core.fileio import atomic_write_bytes
from ddpmlab.core.utils import DDPMLabError

NOT_METRICS = ("seed", "world_size", "resumed_from_step")  # describe the job, not its result
SUMMARY_FILES = ("summary.md", "summary.csv")


def run_metrics(run_dir: Path) -> dict:
    """The numeric metrics of a finished run: metrics.json's numbers, and from evaluation.json (if any)
    the model's bound and ODE NLL in nats and its sample metrics."""
    m = _read_json(Path(run_dir) / "metrics.json")
    out = {k: v for k, v in m.items() if _is_number(v) and k not in NOT_METRICS}
    ev_path = Path(run_dir) / "evaluation.json"
    if ev_path.is_file():
        model = _read_json(ev_path).get("model", {})
        out["bound_nats"] = model.get("bound", {}).get("total_nats")
        out["ode_nll_nats"] = model.get("ode", {}).get("nll_nats")
        out.update({k: v for k, v in model.get("samples", {}).items() if _is_number(v)})
        out = {k: v for k, v in out.items() if _is_number(v)}
    return out


def _read_json(path: Path) -> dict:
    try:
        d = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise DDPMLabError(f"{path}: cannot read ({exc})") from None
    if not isinstance(d, dict):
        raise DDPMLabError(f"{path}: not a JSON object")
    return d


def _is_number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def mean_std(values: list[float]) -> tuple[float, float | None]:
    n = len(values)
    mean = math.fsum(values) / n
    if n < 2:
        return mean, None
    return mean, math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))


def summarise(results, report=print) -> tuple[list[str], list[dict]]:
    """(metric names, one row per config and grid point): ``config``, ``grid``, ``seeds`` (finished
    runs), ``failed``, and ``(mean, std)`` under each metric name. A finished run whose metrics cannot
    be read is reported in one line and counted as failed."""
    groups: dict[tuple, dict] = {}
    names: list[str] = []
    for r in results:
        j = r.job
        g = groups.setdefault((j.label, ",".join(j.point)), {"runs": [], "failed": 0})
        if r.status not in ("ok", "done earlier"):
            g["failed"] += r.status == "failed"
            continue
        try:
            metrics = run_metrics(j.out)
        except DDPMLabError as exc:
            report(f"sweep: job {j.name}: {exc}")
            g["failed"] += 1
            continue
        g["runs"].append(metrics)
        names += [k for k in metrics if k not in names]
    rows = []
    for (label, grid), g in groups.items():
        row = {"config": label, "grid": grid, "seeds": len(g["runs"]), "failed": g["failed"]}
        for name in names:
            values = [m[name] for m in g["runs"] if name in m]
            row[name] = mean_std(values) if values else None
        rows.append(row)
    return names, rows


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def to_markdown(names, rows) -> str:
    head = ["config", "grid", "seeds", "failed", *names]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        cells = [row["config"], row["grid"] or "-", str(row["seeds"]), str(row["failed"])]
        for name in names:
            ms = row[name]
            cells.append("-" if ms is None else _fmt(ms[0]) if ms[1] is None else f"{_fmt(ms[0])} ± {_fmt(ms[1])}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(names, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["config", "grid", "seeds", "failed", *[f"{n}_{s}" for n in names for s in ("mean", "std")]])
    for row in rows:
        cells = [row["config"], row["grid"], row["seeds"], row["failed"]]
        for name in names:
            ms = row[name]
            cells += ["", ""] if ms is None else [repr(ms[0]), "" if ms[1] is None else repr(ms[1])]
        w.writerow(cells)
    return buf.getvalue()


def write_summary(out: Path, results, report=print) -> tuple[str, int]:
    """Write ``summary.md`` and ``summary.csv`` into ``out``; returns the Markdown table and the number of
    jobs without a readable result."""
    names, rows = summarise(results, report)
    md = to_markdown(names, rows)
    md_file, csv_file = SUMMARY_FILES
    atomic_write_bytes(Path(out) / md_file, md.encode())
    atomic_write_bytes(Path(out) / csv_file, to_csv(names, rows).encode())
    return md, sum(row["failed"] for row in rows)

"""Build the report: load the runs, refuse what cannot be compared, gather, lay out, write one file."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from ddpmlab.core.fileio import atomic_write_bytes, check_output_file, ensure_writable_dir
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.report.collect import ReportSettings, add_pictures, collect_run, data_identity
from ddpmlab.report.compare import group_runs
from ddpmlab.report.escape import esc
from ddpmlab.report.page import Page
from ddpmlab.report.sections import comparison_sections, run_section
from ddpmlab.report.steps import sum_check
from ddpmlab.runs.format import load_run


def _plotly_js() -> str:
    try:
        from plotly.offline import get_plotlyjs
    except ImportError:  # pragma: no cover - a declared dependency
        raise DDPMLabError("the report needs plotly (pip install plotly)") from None
    return get_plotlyjs()


def check_output(out: Path, force: bool) -> None:
    """Refuse an existing file (unless ``force``), a directory, a link or a special file (``force`` or not),
    before any work is done."""
    check_output_file(out, force)
    ensure_writable_dir(out.parent if str(out.parent) else Path("."))


def _data_names(runs: dict) -> str:
    return "; ".join(f"{Path(p).name or p}: {r.info['data']['name']}" for p, r in runs.items())


def build_report(run_dirs, out, force: bool = False, allow_mixed_data: bool = False,
                 settings: ReportSettings | None = None, trust_code: bool = False) -> dict:
    """Write the report of the finished runs ``run_dirs`` to ``out``; returns its path, size and counts.
    A run whose network is your own class imports its module only with ``trust_code``."""
    out, settings = Path(out), settings or ReportSettings()
    check_output(out, force)
    if not run_dirs:
        raise DDPMLabError("no run given")
    real = [os.path.realpath(d) for d in run_dirs]
    if len(set(real)) != len(real):
        raise DDPMLabError("the same run is given twice")
    runs = {d: load_run(d, trust_code=trust_code) for d in run_dirs}  # a directory not a finished run stops here
    mixed = len({data_identity(r) for r in runs.values()}) > 1
    if mixed and not allow_mixed_data:
        raise DDPMLabError(f"the runs were trained on different data ({_data_names(runs)}); a report compares "
                           "runs on the same data (pass --allow-mixed-data to compare them anyway)")
    views = [collect_run(d, settings, r) for d, r in runs.items()]
    groups = group_runs(views)
    if len(groups) > 3:  # fewer points per picture, so that the page stays under ~10 MB
        settings = replace(settings, n_chain=max(200, settings.n_chain * 3 // len(groups)),
                           n_shown=max(500, settings.n_shown * 3 // len(groups)), frames=min(settings.frames, 11))
    for g in groups:  # the pictures of the first run of each group
        add_pictures(g.views[0], settings)
    title = f"ddpmlab report: {views[0].name}" if len(views) == 1 else \
        f"ddpmlab report: {len(views)} runs in {len(groups)} group{'s' if len(groups) > 1 else ''}"
    page = Page(title)
    page.add(f"<h1>{esc(title)}</h1>")
    if mixed:
        page.add(f'<div class="warn">These runs were trained on different data ({esc(_data_names(runs))}); '
                 "their metrics are not comparable one to one (compared with --allow-mixed-data).</div>")
    # the figures of an evaluation.json are finite, but their sums and differences on the page may overflow:
    # such a value is shown as "-" (fmt) or a gap (plots.num), not warned about on stderr
    with np.errstate(over="ignore", invalid="ignore"):
        page.add(run_section(page, views[0]) if len(views) == 1 else comparison_sections(page, groups))
        page.data = {"mixed_data": mixed, "groups": [{"label": g.label, "color": g.color,
                                                       "runs": [v.name for v in g.views]} for g in groups],
                     "runs": [{"name": v.name, "path": str(v.path), "kind": v.kind, "metrics": v.evaluation_source,
                               "per_step_sums": sum_check(v.per_step) if v.per_step else None} for v in views]}
    text = page.render(_plotly_js()).encode()
    atomic_write_bytes(out, text)
    return {"path": str(out), "bytes": len(text), "runs": len(views), "groups": len(groups), "mixed_data": mixed}

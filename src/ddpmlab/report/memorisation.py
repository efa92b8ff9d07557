"""Which optimum a run on a finite training set follows at each t (issue 26): the distance of its x_0
prediction to the population optimum and to the empirical optimum over t (``evaluation.json``'s
``optimum_distances``, ``evaluation.memorisation_run.distances_of``), drawn like the per-step figures
(``report.steps``: a line with markers and a band of +- 2 standard errors), on x_t of the training points
(solid) and of held-out data (dashed), with how far apart the two optima are (grey, dotted and
dash-dotted): where that is small the comparison says nothing.
"""
from __future__ import annotations

import numpy as np

from ddpmlab.evaluation.memorisation_run import SOURCES
from ddpmlab.report.escape import esc
from ddpmlab.report.page import fmt
from ddpmlab.report.plots import ORACLE_COLOR, band, layout, line
from ddpmlab.runs.fields import NUMBERS, read_field

EMPIRICAL_COLOR, GAP_COLOR = "#d62728", "#7f7f7f"
PAIRS = (("model_vs_population", "model to the population optimum", ORACLE_COLOR),
         ("model_vs_empirical", "model to the empirical optimum", EMPIRICAL_COLOR),
         ("population_vs_empirical", "population to empirical optimum", GAP_COLOR))
DASHES = {"training": "solid", "heldout": "dash"}
GAP_DASHES = {"training": "dot", "heldout": "dashdot"}


def check_optimum_distances(ev: dict) -> None:
    """``ValueError`` naming the first field of ``optimum_distances`` (if any) that the report cannot draw."""
    if read_field(ev, "optimum_distances", dict, None) is None:
        return
    if read_field(ev, "optimum_distances.skipped", str, None) is not None:
        return
    read_field(ev, "optimum_distances.n_train", int)
    read_field(ev, "optimum_distances.rule", str)
    for source in SOURCES:
        path = f"optimum_distances.{source}"
        read_field(ev, f"{path}.n", int)
        read_field(ev, f"{path}.crossover_t", float, nullable=True)
        times = read_field(ev, f"{path}.t", NUMBERS)
        for key, _, _ in PAIRS:
            for name in (key, f"{key}_se"):
                if len(read_field(ev, f"{path}.{name}", NUMBERS)) != len(times):
                    raise ValueError(f"{path}.{name} and {path}.t differ in length")


def optimum_distances_figure(od: dict) -> dict:
    """The three distances over t for each source of x_t, each with a band of +- 2 SE (floored at a
    thousandth of the value, for the log axis)."""
    data = []
    for source, where in SOURCES.items():
        d = od[source]
        t = np.asarray(d["t"], dtype=np.float64)
        for key, label, color in PAIRS:
            mean, se = np.asarray(d[key], dtype=np.float64), np.asarray(d[f"{key}_se"], dtype=np.float64)
            dash = GAP_DASHES[source] if key == "population_vs_empirical" else DASHES[source]
            data += [band(t, np.maximum(mean - 2 * se, mean * 1e-3), mean + 2 * se, color),
                     line(t, mean, f"{label} ({where})", color, dash=dash, mode="lines+markers",
                          marker={"size": 4})]
    return {"data": data, "layout": layout(
        "x_0 prediction's distance to each optimum at each t, mean squared per dimension (+- 2 SE)", "t",
        "squared distance", xaxis={"type": "log", "title": {"text": "t (log)"}},
        yaxis={"type": "log", "title": {"text": "squared distance per dimension (log)"}})}


def optimum_block(page, view) -> str:
    """The figure with its caption (training points, x_0 per source, crossover t), a note saying why the
    run has none, or nothing for an evaluation made before they existed."""
    od = view.evaluation.get("optimum_distances") if isinstance(view.evaluation, dict) else None
    if not od:
        return ""
    if "skipped" in od:
        return f'<p class="muted">optimum distances skipped: {esc(od["skipped"])}</p>'
    cross = "; ".join(f"{where}: {'never' if od[s]['crossover_t'] is None else fmt(od[s]['crossover_t'])}"
                      for s, where in SOURCES.items())
    return ("<h3>Which optimum the model follows at each t</h3>" + page.figure(optimum_distances_figure(od))
            + f'<p class="muted">{fmt(od["n_train"])} training points; {fmt(od["training"]["n"])} x_0 per source '
              f"({esc(od['rule'])}); first t at which the model is nearer the population optimum: {esc(cross)}</p>")

"""The report's sections: one run in full, and the comparison of groups of runs."""
from __future__ import annotations

from ddpmlab.report import plots, steps
from ddpmlab.report.compare import differing_keys, mean_sd, metric_table
from ddpmlab.report.marginals import marginal_slider
from ddpmlab.report.escape import esc
from ddpmlab.report.page import fmt, table

RATIO_KEYS = ("w1", "ks", "sliced_w1", "mmd", "fd")  # sample metrics read as a multiple of their floor
KIND_TEXT = {"mixture": "Gaussian mixture: exact oracle", "distribution": "named distribution",
             "digits": "8x8 digit images", "heldout": "your file: held-out rows"}


def _ratio(r) -> str:
    if r["key"] in RATIO_KEYS and r["floor"] and r["model"] is not None:
        return fmt(r["model"] / r["floor"])
    return ""


def metrics_table(view) -> str:
    oracle = view.kind == "mixture"
    rows = [[esc(r["label"]), fmt(r["model"], r["model_se"])] + ([fmt(r["oracle"])] if oracle else [])
            + [fmt(r["floor"]), _ratio(r), esc(r["note"])] for r in view.rows]
    head = ["metric", "model"] + (["exact oracle"] if oracle else []) + ["floor", "model / floor", "floor is"]
    return table(head, rows)


def config_table(config: dict) -> str:
    rows = [[esc(f"{s}.{k}"), esc(v)] for s, values in config.items() for k, v in values.items()]
    return table(["config key", "value"], rows)


def _summary_line(view) -> str:
    """Data, schedule, model, objective, seed, training and held-out rows (run.json's checked fields)."""
    info, m, t = view.run.info, view.run.cfg.model, view.run.cfg.train
    s = info.get("summary", {})
    parts = [f"data <b>{esc(info['data']['name'])}</b> ({KIND_TEXT[view.kind]}, shape {esc(tuple(view.data_shape))})",
             esc(view.run.model.time_text()), esc(f"{m.family}: {m.arch} {view.family.prediction(m)}"),
             f"objective {esc(t.objective)}", f"seed {fmt(t.seed)}"]
    if "iters" in s:
        parts.append(f"{fmt(s['iters'])} steps in {fmt(s.get('train_seconds'))} s, "
                     f"final loss {fmt(s.get('final_loss'))}")
    if view.kind == "heldout":
        h = info["data"].get("heldout", {})
        parts.append(f"held out: {fmt(h.get('n', 0))} rows ({esc(h.get('rule') or h.get('reason', ''))})")
    return '<p class="muted">' + "; ".join(parts) + "</p>"


def per_step_block(page, view) -> str:
    ps = view.per_step
    check = steps.sum_check(ps)
    rows = [[who, fmt(c["sum_of_terms"]), fmt(c["bound"]), fmt(c["sum_of_terms"] - c["bound"])]
            for who, c in check.items()]
    entries = [(view.name, plots.MODEL_COLOR, [ps])]
    return ("<h3>Where the nats are lost</h3>"
            + table(["", "sum of L_0..L_T (nats)", "bound in the evaluation", "difference"], rows)
            + page.figure(steps.bound_terms_figure(entries)) + page.figure(steps.nats_lost_figure(entries))
            + page.figure(steps.eps_error_figure(entries))
            + f'<p class="muted">noise-prediction error on {fmt(ps["eps"]["n"])} data points per step; '
              "x_t ~ q(x_t | x_0)</p>")


def pictures_block(page, view) -> str:
    """Samples beside data, and the slider over t."""
    return ("<h3>Samples beside data</h3>" + page.figure(plots.samples_vs_data(view))
            + page.figure(plots.class_histogram(view))
            + "<h3>The model's reverse chain against q(x_t)</h3>"
            + page.slider(marginal_slider(view), "step t"))


def range_note(view) -> str:
    """A note when the evaluation counted samples far outside the data's range (``samples_out_of_range``)."""
    r = view.evaluation.get("samples_out_of_range") if isinstance(view.evaluation, dict) else None
    if not isinstance(r, dict) or not r.get("count"):
        return ""
    return (f'<div class="note">{fmt(r.get("count"))} of {fmt(r.get("of"))} samples lie far outside the data\'s '
            f'range ({esc(r.get("rule"))}): the sampler diverged</div>')


def run_section(page, view, heading: str = "h2", pictures: bool = True) -> str:
    notes = "".join(f'<div class="note">{esc(n)}</div>' for n in view.notes) + range_note(view)
    out = [f"<{heading}>{esc(view.name)}</{heading}>", _summary_line(view), notes,
           f'<p class="muted">metrics: {esc(view.evaluation_source)}</p>', metrics_table(view)]
    if view.per_step is not None:
        out.append(per_step_block(page, view))
    if pictures:
        out.append(pictures_block(page, view))
    if view.metrics:
        out.append(page.figure(plots.training_curves([(view.name, plots.MODEL_COLOR, [view.metrics])])))
    else:
        out.append('<p class="muted">no metrics.csv in this run (trained in memory): no training curve</p>')
    out.append(f"<details><summary>config</summary>{config_table(view.config)}</details>")
    return "\n".join(out)


def runs_table(groups) -> str:
    rows = []
    for g in groups:
        for v in g.views:
            s = v.run.info.get("summary", {})
            src = "evaluation.json" if v.evaluation_source.endswith("evaluation.json") else "computed by the report"
            rows.append([esc(v.name), f'<span style="color:{esc(g.color)}">&#9632;</span> {esc(g.label)}',
                         fmt(v.config["train"]["seed"]), fmt(s.get("iters")), fmt(s.get("final_loss")),
                         fmt(s.get("train_seconds")), src])
    return table(["run", "group", "seed", "steps", "final loss", "train s", "metrics"], rows)


def groups_config_table(groups) -> str:
    keys = [k for k in differing_keys([v.config for g in groups for v in g.views]) if k != "train.seed"]
    if not keys:
        return '<p class="muted">the runs differ only in their seeds</p>'
    rows = []
    for k in keys:
        s, key = k.split(".", 1)
        rows.append([esc(k)] + [esc(g.views[0].config[s][key]) for g in groups])
    return table(["config key"] + [g.label for g in groups], rows)


def group_metrics_table(groups) -> str:
    """Each metric: per group the mean +- sd over its seeds (n), the oracle's and the floor's means."""
    _, entries = metric_table(groups)
    oracle = any(o is not None for e in entries for o in e["oracle"])
    rows = []
    for e in entries:
        cells = [esc(e["label"])]
        for g in groups:
            m, sd, n = mean_sd(e["groups"].get(g.label, []))
            cells.append("-" if m is None else fmt(m, sd) + (f" <span class='muted'>(n={n})</span>" if n > 1 else ""))
        cells += ([fmt(mean_sd(e["oracle"])[0])] if oracle else []) + [fmt(mean_sd(e["floor"])[0]), esc(e["note"])]
        rows.append(cells)
    return table(["metric"] + [f"{g.label} ({len(g.views)} run{'s' if len(g.views) > 1 else ''})" for g in groups]
                 + (["exact oracle"] if oracle else []) + ["floor", "floor is"], rows)


def comparison_sections(page, groups) -> str:
    out = ["<h2>Runs</h2>", runs_table(groups), "<h2>What differs between the groups</h2>",
           groups_config_table(groups), "<h2>Metrics by group (mean &plusmn; sd over seeds)</h2>",
           group_metrics_table(groups)]
    if all(v.per_step is not None for g in groups for v in g.views):
        entries = [(g.label, g.color, [v.per_step for v in g.views]) for g in groups]
        out += ["<h2>Where the nats are lost, by group</h2>", page.figure(steps.bound_terms_figure(entries)),
                page.figure(steps.nats_lost_figure(entries)), page.figure(steps.eps_error_figure(entries))]
    curves = [(g.label, g.color, [v.metrics for v in g.views]) for g in groups if any(v.metrics for v in g.views)]
    if curves:
        out += ["<h2>Training curves</h2>", page.figure(plots.training_curves(curves))]
    for i, g in enumerate(groups):
        first = g.views[0]
        seeds = ", ".join(str(s) for s in g.seeds)
        body = [f'<p class="muted">seeds {esc(seeds)}; the pictures show the run {esc(first.name)}</p>',
                pictures_block(page, first)]
        body += [f"<details><summary>run {esc(v.name)}</summary>{run_section(page, v, 'h4', pictures=False)}</details>"
                 for v in g.views]
        out.append(f"<details{' open' if i == 0 else ''}><summary style='color:{esc(g.color)}'>group {esc(g.label)}"
                   f"</summary>{''.join(body)}</details>")
    return "\n".join(out)

"""The report's sections: one run in full, and the comparison of groups of runs, the groups' pictures side
by side (one column each, in the group's colour). Every sample metric says which sampler, steps and eta
drew its samples; every picture says its units (data units, or the model's)."""
from __future__ import annotations

from ddpmlab.report import plots, steps
from ddpmlab.report.compare import BOOKKEEPING, differing_keys, mean_sd, metric_table, objective_text, used_keys
from ddpmlab.report.marginals import marginal_slider
from ddpmlab.report.memorisation import optimum_block
from ddpmlab.report.escape import esc
from ddpmlab.report.page import fmt, table

RATIO_KEYS = ("w1", "ks", "sliced_w1", "mmd", "fd")  # sample metrics read as a multiple of their floor
# the rows of ``evaluation.summary.metric_rows`` measured on the model's samples (not its bound or its ODE)
SAMPLE_KEYS = RATIO_KEYS + ("nll_under_density", "fraction_error", "classes_present", "outside_support")
KIND_TEXT = {"mixture": "Gaussian mixture: exact oracle", "distribution": "named distribution",
             "digits": "8x8 digit images", "heldout": "your file: held-out rows"}


def _ratio(r) -> str:
    if r["key"] in RATIO_KEYS and r["floor"] and r["model"] is not None:
        return fmt(r["model"] / r["floor"])
    return ""


def metrics_table(view) -> str:
    """Each metric of the model beside the oracle's and the floor; a sample metric with its sampler."""
    oracle = view.kind == "mixture"
    rows = [[esc(r["label"]), fmt(r["model"], r["model_se"])] + ([fmt(r["oracle"])] if oracle else [])
            + [fmt(r["floor"]), _ratio(r), esc(r["note"]),
               f'<span class="drawn">{esc(view.sampling)}</span>' if r["key"] in SAMPLE_KEYS else ""]
            for r in view.rows]
    head = ["metric", "model"] + (["exact oracle"] if oracle else []) + ["floor", "model / floor", "floor is",
                                                                         "samples drawn by"]
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
    entries = [(view.name, view.color, [ps])]
    return ("<h3>Where the nats are lost</h3>"
            + table(["", "sum of L_0..L_T (nats)", "bound in the evaluation", "difference"], rows)
            + page.figure(steps.bound_terms_figure(entries)) + page.figure(steps.nats_lost_figure(entries))
            + page.figure(steps.eps_error_figure(entries))
            + f'<p class="muted">noise-prediction error on {fmt(ps["eps"]["n"])} data points per step; '
              "x_t ~ q(x_t | x_0)</p>")


def pictures_block(page, view, heading: str = "h3") -> str:
    """Samples beside data (data units), with the samples that fall outside the picture counted, and the
    slider over t (the model's units)."""
    off = plots.off_plot(view)
    caption = [f"samples drawn by {view.picture_sampling}", f"in {plots.DATA_UNITS}"]
    caption += [plots.off_plot_text(off)] if off else []
    return (f"<{heading}>Samples beside data</{heading}>"
            + f'<p class="muted off-plot">{esc("; ".join(caption))}</p>'
            + page.figure(plots.samples_vs_data(view)) + page.figure(plots.class_histogram(view))
            + f"<{heading}>The model's reverse chain against q(x_t)</{heading}>"
            + f'<p class="muted">in {esc(view.model_units)}'
            + ("" if view.standardised else " (the data were not rescaled: the same as data units)") + "</p>"
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
    out.append(optimum_block(page, view))
    if pictures:
        out.append(pictures_block(page, view))
    if view.metrics:
        curve = (view.name, view.color, [view.metrics], objective_text(view))
        out.append(page.figure(plots.training_curves([curve])))
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
    """The config keys that differ between the groups (a run's bookkeeping left out) that some group uses;
    a group whose runs do not use a key says so."""
    firsts = [g.views[0] for g in groups]
    used = [used_keys(v) for v in firsts]
    keys = [k for k in differing_keys([v.config for g in groups for v in g.views])
            if k not in BOOKKEEPING and any(k in u for u in used)]
    if not keys:
        return '<p class="muted">the runs differ only in their seeds, or in settings that they do not use</p>'
    rows = []
    for k in keys:
        s, key = k.split(".", 1)
        rows.append([esc(k)] + [esc(v.config[s].get(key)) if k in u else '<span class="muted">not used</span>'
                                for v, u in zip(firsts, used)])
    return table(["config key"] + [g.label for g in groups], rows)


def _drawn(g) -> str:
    """How a group's samples were drawn (its runs' evaluations; " / " between texts that differ)."""
    return " / ".join(dict.fromkeys(v.sampling for v in g.views))


def group_metrics_table(groups) -> str:
    """Each metric: per group the mean +- sd over its seeds (n), the oracle's and the floor's means; below a
    sample metric's value, the sampler, steps and eta that drew the group's samples."""
    keys, entries = metric_table(groups)
    oracle = any(o is not None for e in entries for o in e["oracle"])
    rows = []
    for key, e in zip(keys, entries):
        cells = [esc(e["label"])]
        for g in groups:
            m, sd, n = mean_sd(e["groups"].get(g.label, []))
            cell = "-" if m is None else fmt(m, sd) + (f" <span class='muted'>(n={n})</span>" if n > 1 else "")
            drawn = f'<div class="muted drawn">{esc(_drawn(g))}</div>' if key in SAMPLE_KEYS else ""
            cells.append(cell + drawn)
        cells += ([fmt(mean_sd(e["oracle"])[0])] if oracle else []) + [fmt(mean_sd(e["floor"])[0]), esc(e["note"])]
        rows.append(cells)
    return table(["metric"] + [f"{g.label} ({len(g.views)} run{'s' if len(g.views) > 1 else ''})" for g in groups]
                 + (["exact oracle"] if oracle else []) + ["floor", "floor is"], rows)


def group_columns(page, groups) -> str:
    """One column per group, side by side (a CSS grid), each headed by the group's name in its colour: the
    pictures of its first run."""
    cols = []
    for i, g in enumerate(groups):
        first = g.views[0]
        seeds = ", ".join(str(s) for s in g.seeds)
        cols.append(f'<div class="group" id="group{i}" style="border-top-color:{esc(g.color)}">'
                    f'<h3 class="group-name" style="color:{esc(g.color)}">{esc(g.label)}</h3>'
                    f'<p class="muted">seeds {esc(seeds)}; the pictures show the run {esc(first.name)}</p>'
                    f"{range_note(first)}{pictures_block(page, first, 'h4')}</div>")
    return f'<div class="groups">{"".join(cols)}</div>'


def comparison_sections(page, groups) -> str:
    out = ["<h2>Runs</h2>", runs_table(groups), "<h2>What differs between the groups</h2>",
           groups_config_table(groups), "<h2>Metrics by group (mean &plusmn; sd over seeds)</h2>",
           group_metrics_table(groups)]
    if all(v.per_step is not None for g in groups for v in g.views):
        entries = [(g.label, g.color, [v.per_step for v in g.views]) for g in groups]
        out += ["<h2>Where the nats are lost, by group</h2>", page.figure(steps.bound_terms_figure(entries)),
                page.figure(steps.nats_lost_figure(entries)), page.figure(steps.eps_error_figure(entries))]
    curves = [(g.label, g.color, [v.metrics for v in g.views], objective_text(g.views[0])) for g in groups
              if any(v.metrics for v in g.views)]
    if curves:
        out += ["<h2>Training curves</h2>", page.figure(plots.training_curves(curves))]
    out += ["<h2>The groups side by side</h2>", group_columns(page, groups)]
    runs = [v for g in groups for v in g.views]
    out.append(f"<details><summary>every run in full ({len(runs)} run{'s' if len(runs) > 1 else ''})</summary>"
               + "".join(run_section(page, v, "h3", pictures=False) for v in runs) + "</details>")
    return "\n".join(out)

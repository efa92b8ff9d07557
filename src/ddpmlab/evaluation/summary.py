"""An evaluation (any ``kind``) as rows: each metric of the model beside the exact oracle's value (mixture
data) and the floor, the value the truth itself would score. Read by the report and by ``ddpmlab
evaluate``'s table for data that are not a mixture.

A row: ``key`` (stable across runs), ``label``, ``model``, ``model_se``, ``oracle``, ``floor`` (numbers
or None) and ``note`` (what the floor is).
"""
from __future__ import annotations

from ddpmlab.evaluation.exact import FEW_STEP_LABEL
from ddpmlab.evaluation.memorisation_run import distance_rows, skipped_note


def _row(key, label, model, model_se=None, oracle=None, floor=None, note=""):
    return {"key": key, "label": label, "model": model, "model_se": model_se, "oracle": oracle, "floor": floor,
            "note": note}


def _ode_value(ode: dict | None):
    return None if not ode or "nll_nats" not in ode else ode["nll_nats"], None if not ode else ode.get("nll_nats_se")


def _bound_rows(mb: dict, ob: dict, d: dict) -> list[dict]:
    rows = [_row("bound_nats", "bound (nats)", mb["total_nats"], mb["total_nats_se"], ob["total_nats"],
                 d["entropy_nats"], "entropy of the data")]
    for key, label in (("prior_nats", "prior L_T"), ("steps_nats", "steps L_1..L_T-1"),
                       ("decoder_nats", "decoder L_0")):
        rows.append(_row(key, label, mb[key], mb[key + "_se"], ob[key]))
    rows.append(_row("bound_bpd", "bound (bits/dim)", mb["total_bpd"], mb["total_bpd_se"], ob["total_bpd"],
                     d["entropy_bpd"], "entropy of the data"))
    return rows


def _mixture_rows(ev: dict) -> list[dict]:
    m, o, d = ev["model"], ev["oracle"], ev["data"]
    rows = _bound_rows(m["bound"], o["bound"], d) if "bound" in m else []  # a family with a discrete bound
    (mv, mse), (ov, _) = _ode_value(m.get("ode")), _ode_value(o.get("ode"))
    rows.append(_row("ode_nll_nats", "ODE NLL (nats)", mv, mse, ov, d["entropy_nats"], "entropy of the data"))
    ms, os_ = m["samples"], o["samples"]
    if "w1" in ms:
        rows.append(_row("w1", "W1", ms["w1"], None, os_["w1"], ms["w1_noise_floor"], "a true sample"))
        rows.append(_row("ks", "KS", ms["ks"], None, os_["ks"], ms["ks_noise_floor"], "a true sample"))
    for key, label in (("sliced_w1", "sliced W1"), ("mmd", "MMD")):
        if key in ms:
            rows.append(_row(key, label, ms[key], None, os_[key], ms[key + "_noise_floor"], "a true sample"))
    if "nll_nats" in ms:
        rows.append(_row("nll_under_density", "-E log q(samples) (nats)", ms["nll_nats"], ms["nll_nats_se"],
                         os_["nll_nats"], ms["nll_nats_floor"], "entropy (a true sample)"))
    fm = m.get("flow_map")
    if fm:  # a few-step family's map against the exact one, at each t
        for t, e, e_se in zip(fm["t"], fm["error"], fm["error_se"]):
            rows.append(_row(f"flow_map_error_{t:g}", f"flow-map error at t = {t:g}", e, e_se, 0.0, 0.0,
                             "the exact map"))
    few = m.get("few_step")
    for k, mv, ov in zip(few["steps"], few["model"], few["oracle"]) if few else ():  # beside the exact map's
        label = f"{FEW_STEP_LABEL[few['metric']]} in {k} steps ({few['sampler']}, n = {few['n']})"
        rows.append(_row(f"few_step_{few['metric']}_{k}", label, mv, None, ov, few["floor"], "a true sample"))
    if few and "exact_map" in few:  # a flow's oracle is its exact velocity; the exact map's samples beside it
        rows.append(_row(f"few_step_{few['metric']}_exact_map", f"{FEW_STEP_LABEL[few['metric']]} of the exact map "
                         f"(n = {few['n']})", None, None, few["exact_map"], few["floor"], "the exact map's samples"))

    def dev(s):  # the largest error of a component's fraction
        return max(abs(a - b) for a, b in zip(s["component_fractions"], d["true_component_fractions"]))

    rows.append(_row("fraction_error", "largest component-fraction error", dev(ms), None, dev(os_),
                     max(ms["component_fractions_se"]), "binomial SE of a true sample"))
    return rows


def _nd_rows(ev: dict) -> list[dict]:
    s, d = ev["model"]["samples"], ev["data"]
    floor_note = "training data vs held-out" if ev["kind"] in ("digits", "heldout") else "a true sample"
    rows = []
    if "fd" in s:
        rows.append(_row("fd", "Frechet distance (classifier features)", s["fd"], None, None, s["fd_floor"],
                         "training vs held-out images"))
        rows.append(_row("classes_present", "classes present", s["classes_present"], None, None, 10,
                         "all ten digits"))
    rows.append(_row("sliced_w1", "sliced W1", s["sliced_w1"], None, None, s["sliced_w1_noise_floor"], floor_note))
    rows.append(_row("mmd", "MMD", s["mmd"], None, None, s["mmd_noise_floor"], floor_note))
    if "nll_nats" in s:
        rows.append(_row("nll_under_density", "-E log q(samples) (nats)", s["nll_nats"], s["nll_nats_se"], None,
                         s["nll_nats_floor"], "entropy (a true sample)"))
        rows.append(_row("outside_support", "samples outside the support", s["outside_support_fraction"], None,
                         None, 0.0, "none"))
    value, se = _ode_value(ev["model"].get("ode"))
    if value is not None:
        note = "entropy of the data" if "entropy_nats" in d else "unknown (held-out rows, data units)"
        rows.append(_row("ode_nll_nats", "ODE NLL (nats)", value, se, None, d.get("entropy_nats"), note))
    return rows


def _memorisation_rows(ev: dict) -> list[dict]:
    """Near-copies of training points beside true samples' fraction (and the empirical optimum's)."""
    m = ev.get("memorisation")
    if not m:
        return []
    optimum = m.get("empirical_optimum")
    note = "true samples" + ("" if optimum is None else f"; the empirical optimum's: {_num(optimum)}")
    return [_row("copy_fraction", f"near-copies of the {m['n_train']} training points", m["model"], None, None,
                 m["true_samples"], note)]


def metric_rows(ev: dict) -> list[dict]:
    """The rows of an evaluation (``evaluate_run`` or ``evaluation.finished.evaluate_finished_run``)."""
    rows = _mixture_rows(ev) if ev.get("kind", "mixture") == "mixture" else _nd_rows(ev)
    return rows + _memorisation_rows(ev)


def _num(v) -> str:
    if v is None:
        return "-"
    if isinstance(v, int):
        return str(v)
    return f"{v:.4f}" if abs(v) < 1e4 else f"{v:.3g}"


def format_rows(ev: dict) -> str:
    """A plain-text table of ``metric_rows``: metric, model, floor (and what the floor is)."""
    rows = [("", "model", "floor", "")]
    for r in metric_rows(ev):
        model = _num(r["model"]) + (f" +- {_num(r['model_se'])}" if r["model_se"] is not None else "")
        rows.append((r["label"], model, _num(r["floor"]), f"({r['note']})" if r["note"] else ""))
    s = ev["settings"]
    head = f"evaluation of {ev['data'].get('name', 'the run')} ({ev['kind']}), samples n={s['n_samples']}"
    if ev["kind"] == "digits":
        head += f"; class histogram {ev['model']['samples']['class_histogram']}"
    for label, model, optima in distance_rows(ev):  # issue 26: per t, the distances to both optima
        rows.append((label, model, "", f"(the population optimum's: {optima})"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join([head] + lines + [n for n in (skipped_note(ev),) if n])

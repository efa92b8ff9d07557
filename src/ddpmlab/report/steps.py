"""The per-step diagnosis on mixture data: where the nats are lost.

- the bound's terms L_0 .. L_T (Ho et al. eq. 5; L_0 the decoder, L_T the prior) of the model beside the
  exact oracle's; their sums are the two bounds of the evaluation;
- the nats lost at each step, L_t(model) - L_t(oracle);
- the noise-prediction error against the exact E[eps | x_t] at each step t = 1..T.

Each figure takes ``entries``: (label, color, [per-step dicts of the runs of one group]); a group of
several seeds is drawn as its mean with a band of +- one standard deviation over the seeds, a single run
with a band of +- 2 standard errors of its Monte-Carlo estimate.
"""
from __future__ import annotations

import numpy as np

from ddpmlab.report.plots import ORACLE_COLOR, band, layout, line, num


def _stack(per_steps, who: str, key: str) -> np.ndarray:
    return np.stack([np.asarray(p[who][key], dtype=np.float64) for p in per_steps])


def _mean_band(values: np.ndarray, se: np.ndarray | None):
    """(mean, lo, hi): +- sd over runs, or +- 2 SE for a single run."""
    mean = values.mean(0)
    if len(values) > 1:
        sd = values.std(0, ddof=1)
        return mean, mean - sd, mean + sd
    half = 2 * se[0] if se is not None else np.zeros_like(mean)
    return mean, mean - half, mean + half


def _axis_t(T: int) -> dict:
    return {"title": {"text": "t"}, "range": [-0.5, T + 0.5]}


def bound_terms_figure(entries) -> dict:
    data, T = [], 0
    oracles_seen = set()
    for label, color, per_steps in entries:
        t = np.asarray(per_steps[0]["t"])
        T = max(T, int(t[-1]))
        mean, lo, hi = _mean_band(_stack(per_steps, "model", "terms_nats"), _stack(per_steps, "model", "terms_nats_se"))
        data += [band(t, lo, hi, color), line(t, mean, f"{label}: model", color, sig=10, mode="lines+markers",
                                              marker={"size": 3})]
        if int(t[-1]) not in oracles_seen:  # one oracle per schedule length
            oracles_seen.add(int(t[-1]))
            o = _stack(per_steps, "oracle", "terms_nats").mean(0)
            data.append(line(t, o, f"exact oracle (T={int(t[-1])})", ORACLE_COLOR if len(entries) == 1 else "black",
                             dash="dash", sig=10))
    return {"data": data, "layout": layout("bound term L_t at each t (L_0 decoder, L_T prior; they sum to the bound)",
                                           "", "nats", xaxis=_axis_t(T))}


def nats_lost_figure(entries) -> dict:
    data, T = [], 0
    for label, color, per_steps in entries:
        t = np.asarray(per_steps[0]["t"])
        T = max(T, int(t[-1]))
        gap = _stack(per_steps, "model", "terms_nats") - _stack(per_steps, "oracle", "terms_nats")
        se = np.hypot(_stack(per_steps, "model", "terms_nats_se"), _stack(per_steps, "oracle", "terms_nats_se"))
        mean, lo, hi = _mean_band(gap, se)
        if len(entries) == 1 and len(per_steps) == 1:
            data.append({"type": "bar", "x": t.tolist(), "y": num(mean), "name": "model - oracle",
                         "marker": {"color": color}, "error_y": {"type": "data", "array": num(hi - mean),
                                                                 "visible": True, "thickness": 1, "width": 0}})
        else:
            data += [band(t, lo, hi, color), line(t, mean, label, color)]
    return {"data": data, "layout": layout("nats lost at each t: L_t(model) - L_t(oracle) (+- 2 SE, or +- sd over "
                                           "seeds)", "", "nats", xaxis=_axis_t(T))}


def eps_error_figure(entries) -> dict:
    data, T = [], 0
    for label, color, per_steps in entries:
        t = np.arange(1, len(per_steps[0]["eps"]["model_vs_exact"]) + 1)
        T = max(T, int(t[-1]))
        vals = np.stack([np.asarray(p["eps"]["model_vs_exact"]) for p in per_steps])
        mean, lo, hi = _mean_band(vals, None)
        name = f"{label}: |eps_model - E[eps | x_t]|^2" if len(entries) > 1 else "model vs exact E[eps | x_t]"
        if len(per_steps) > 1:
            data.append(band(t, np.maximum(lo, mean * 1e-3), hi, color))
        data.append(line(t, mean, name, color))
        if len(entries) == 1:
            loss = np.stack([np.asarray(p["eps"]["model_vs_noise"]) for p in per_steps]).mean(0)
            floor = np.stack([np.asarray(p["eps"]["exact_vs_noise"]) for p in per_steps]).mean(0)
            data.append(line(t, loss, "model vs the drawn noise (the simple loss)", color, dash="dot", width=1.5))
            data.append(line(t, floor, "exact E[eps | x_t] vs the drawn noise (its floor)", ORACLE_COLOR, dash="dash",
                             width=1.5))
    return {"data": data, "layout": layout("noise-prediction error at each step t, mean squared per dimension",
                                           "", "squared error", xaxis=_axis_t(T),
                                           yaxis={"type": "log", "title": {"text": "squared error (log)"}})}


def sum_check(per_step: dict) -> dict:
    """The sums of the terms beside the bounds they must equal."""
    return {who: {"sum_of_terms": float(np.sum(per_step[who]["terms_nats"])), "bound": per_step[who]["total_nats"]}
            for who in ("model", "oracle")}

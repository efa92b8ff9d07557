"""The tables and acceptance checks of ``flow_vs_ddpm.py`` (issue 15), and the merge of several runs'
JSON (disjoint data sets, or disjoint seeds of one data set) into one table."""
from __future__ import annotations

import json
import math
import statistics
from pathlib import Path

from ddpmlab.core.fileio import atomic_write_bytes, atomic_write_json, ensure_writable_dir
from ddpmlab.core.utils import DDPMLabError

FORMAT = 2  # per-seed, per-draw results on common noise; 1-D W1 to the exact mixture
LABEL = {"ddpm:dpm_solver": "DDPM, DPM-Solver++(2M)", "flow:euler": "flow, Euler", "flow:heun": "flow, Heun"}
CHECK = ("flow:heun:50", "ddpm:dpm_solver:25")  # 25 Heun steps (50 NFE) against the DDPM's 25-step ODE
NLL_CHECKED = ("seed_mixture", "eight_gaussians")
NLL_TOLERANCE = 0.05  # nats
ORDER = ("seed_mixture", "eight_gaussians", "moons", "checkerboard")  # the tables' order after a merge


def load_runs(paths) -> tuple[dict, list]:
    """Results and run records of several runs' JSON; a data set in several runs is joined seed by seed."""
    results, runs = {}, []
    for path in paths:
        try:
            d = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise DDPMLabError(f"cannot read the run {path}: {e}") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise DDPMLabError(f"{path} is not a flow_vs_ddpm.json of format {FORMAT} (an older run: run it again)")
        runs += d["runs"]
        for name, r in d["results"].items():
            if name not in results:
                results[name] = r
                continue
            old = results[name]
            if old["settings"] != r["settings"] or not math.isclose(old["floor"], r["floor"]):
                raise DDPMLabError(f"{path}: {name} was run with other settings ({r['settings']}) than before "
                                   f"({old['settings']}); runs to merge must agree")
            both = set(old["per_seed"]) & set(r["per_seed"])
            if both:
                raise DDPMLabError(f"{path}: {name} seed(s) {', '.join(sorted(both))} are in two runs")
            old["per_seed"].update(r["per_seed"])
            old.setdefault("oracle", r.get("oracle"))
    for r in results.values():
        r["per_seed"] = dict(sorted(r["per_seed"].items(), key=lambda kv: int(kv[0])))
    order = lambda name: ORDER.index(name) if name in ORDER else len(ORDER)  # noqa: E731
    return {k: results[k] for k in sorted(results, key=order)}, runs


def _mean_se(values, ses) -> tuple[float, float]:
    """Mean over seeds, and the mean of the per-seed standard errors: an upper bound for the mean's,
    the seeds sharing the same points (sd of a mean <= mean of the sds)."""
    return statistics.fmean(values), statistics.fmean(ses)


def paired(r, key_a: str, key_b: str) -> list[dict]:
    """Per seed: mean metric of a and b over the draws, and the paired mean difference a - b and its SE."""
    out = []
    for seed, one in r["per_seed"].items():
        a, b = one["w1"][key_a], one["w1"][key_b]
        diff = [x - y for x, y in zip(a, b)]
        se = statistics.stdev(diff) / math.sqrt(len(diff)) if len(diff) > 1 else float("nan")
        out.append({"seed": seed, "a": statistics.fmean(a), "b": statistics.fmean(b), "diff": statistics.fmean(diff),
                    "se": se})
    return out


def nll_summary(r, family: str) -> dict | None:
    """The family's ODE NLL over the seeds where it was integrated: mean +- SE, gap to -log q +- SE."""
    ok = [one["nll"][family] for one in r["per_seed"].values() if one["nll"][family]]
    if not ok:
        return None
    out = {"seeds": len(ok), "failed": len(r["per_seed"]) - len(ok)}
    out["mean"], out["se"] = _mean_se([v["mean"] for v in ok], [v["se"] for v in ok])
    if "gap" in ok[0]:
        out["gap"], out["gap_se"] = _mean_se([v["gap"] for v in ok], [v["gap_se"] for v in ok])
        out["within"] = sum(abs(v["gap"]) <= NLL_TOLERANCE for v in ok)
    return out


def _pm(v, se=None, digits=4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}" + (f" +- {se:.{digits}f}" if se is not None and math.isfinite(se) and se > 0 else "")


def _seed_mean(r, key: str) -> float:
    return statistics.fmean(statistics.fmean(one["w1"][key]) for one in r["per_seed"].values())


def markdown(results, runs) -> str:
    lines = ["# Flow matching against the DDPM default (same network, same training budget)", "",
             "Settings per data set: " + "; ".join(
                 f"{k}: seeds {', '.join(r['per_seed'])}, {r['settings']['draws']} draws of {r['settings']['n']} "
                 f"samples per seed and budget, training iterations x {r['settings']['iters_scale']} of the "
                 f"configs', ODE NLL on {r['settings']['n_ode']} true points" for k, r in results.items()) + ". "
             "Runs (data sets: load average before / after, wall time; 2 shared cores, so timings are unreliable): "
             + "; ".join(f"{', '.join(run['datasets'])} (seeds {' '.join(map(str, run['seeds']))}"
                         + (f", 2-D {' '.join(map(str, run['seeds_2d']))}" if run["seeds_2d"] else "")
                         + f", {run['threads']} thread(s)): {run['load'][0]} / {run['load'][1]}, {run['seconds']:.0f} s"
                         for run in runs) + ".", "",
             "W1 in 1-D is to the exact mixture (int |F_n - F| dx, no reference sample); sliced W1 in 2-D is to a "
             "fixed reference of 20,000 true points. Each model's draw d of seed s starts from the same noise "
             "x_T (common random numbers), so differences between models are paired. Heun takes floor(NFE / 2) "
             "steps. Oracle: the exact model of the mixture on the same solver (expected metric / mean path error "
             "against rk45 at 1e-8).", ""]
    nfe = next(iter(results.values()))["settings"]["nfe"]
    lines += ["| data | model | " + " | ".join(f"NFE {k}" for k in nfe) + " |", "|" + "---|" * (2 + len(nfe))]
    for name, r in results.items():
        lines.append(f"| {name} | floor: a true sample's {r['metric']} | "
                     + " | ".join(_pm(r["floor"], r["floor_se"]) for _ in nfe) + " |")
        for family, solver in (k.split(":") for k in LABEL):
            label = LABEL[f"{family}:{solver}"]
            lines.append(f"| {name} | trained {label} | "
                         + " | ".join(f"{_seed_mean(r, f'{family}:{solver}:{k}'):.4f}" for k in nfe) + " |")
            if r.get("oracle"):
                o = [r["oracle"][f"{family}:{solver}:{k}"] for k in nfe]
                lines.append(f"| {name} | oracle {label} | "
                             + " | ".join(f"{c['w1']:.4f} / {c['path_error']:.1e}" for c in o) + " |")
    for name, r in results.items():
        if all(k in one["w1"] for one in r["per_seed"].values() for k in CHECK):
            lines += ["", f"{name}, paired over {r['settings']['draws']} draws of common noise: trained flow at 25 "
                      "Heun steps (50 NFE) against the DDPM default's 25-step ODE (DPM-Solver++(2M), 25 NFE); no worse "
                      "where the mean difference is <= 0.", "",
                      "| seed | flow, 25 Heun steps | DDPM, 25-step ODE | flow - DDPM (+- SE over draws) | verdict |",
                      "|---|---|---|---|---|"]
            for p in paired(r, *CHECK):
                lines.append(f"| {p['seed']} | {p['a']:.4f} | {p['b']:.4f} | {p['diff']:+.4f} +- {p['se']:.4f} | "
                             f"{verdict(p)} |")
    lines += ["", "ODE NLL (nats; mean over seeds, +- the mean of the per-seed standard errors over the points, "
              "an upper bound for the mean's, the seeds sharing the points). NLL - (-log q) is paired on the same "
              "points: it estimates E[NLL] - H = KL(q || p) without the points' own spread.", "",
              "| data | points | entropy H | -log q, same points | DDPM ODE NLL | flow ODE NLL | "
              "DDPM NLL - (-log q) | flow NLL - (-log q) | s per seed: train DDPM / flow, NLL DDPM / flow, sampling |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, r in results.items():
        s = {f: nll_summary(r, f) for f in ("ddpm", "flow")}
        mlq = r.get("minus_log_q") or {}
        secs = {k: statistics.fmean(one["seconds"][k] for one in r["per_seed"].values())
                for k in ("train_ddpm", "train_flow", "nll_ddpm", "nll_flow", "sampling")}
        lines.append(
            f"| {name} | {r['settings']['n_ode']} | {_pm(r['entropy'], r['entropy_se'])} | "
            f"{_pm(mlq.get('mean'), mlq.get('se'))} | "
            + " | ".join(_pm(s[f]["mean"], s[f]["se"]) if s[f] else "-" for f in ("ddpm", "flow")) + " | "
            + " | ".join(_pm(s[f].get("gap"), s[f].get("gap_se")) if s[f] else "-" for f in ("ddpm", "flow")) + " | "
            f"{secs['train_ddpm']:.0f} / {secs['train_flow']:.0f}, {secs['nll_ddpm']:.0f} / {secs['nll_flow']:.0f}, "
            f"{secs['sampling']:.0f} |")
    return "\n".join(lines) + "\n"


def verdict(p) -> str:
    if p["diff"] <= 0:
        return "no worse"
    return f"worse by {p['diff'] / p['se']:.1f} SE" if p["se"] > 0 else "worse"


def checks(results) -> list[str]:
    """The acceptance checks of issue 15, in its words."""
    out = []
    r = results.get("seed_mixture")
    if r is not None and all(k in one["w1"] for one in r["per_seed"].values() for k in CHECK):
        ps = paired(r, *CHECK)
        wins = sum(p["diff"] <= 0 for p in ps)
        out.append(f"Trained `flow`, seed's mixture, 25 Heun steps: expected W1 no worse than the DDPM default's "
                   f"25-step ODE in the same run, on 5 of 5 seeds: {'PASS' if wins == len(ps) == 5 else 'FAIL'}, "
                   f"no worse on {wins} of {len(ps)} seeds (flow - DDPM, paired over "
                   f"{r['settings']['draws']} draws of common noise: "
                   + ", ".join(f"seed {p['seed']} {p['diff']:+.4f} +- {p['se']:.4f}" for p in ps) + ")")
    for name in NLL_CHECKED:
        r = results.get(name)
        if r is None:
            continue
        s = nll_summary(r, "flow")
        where = "the seed's mixture" if name == "seed_mixture" else f"`{name}`"
        if s is None:
            out.append(f"ODE NLL within {NLL_TOLERANCE} nats of the exact entropy on {where}: FAIL: the flow's ODE "
                       "could not be integrated on any seed")
            continue
        failed = f", {s['failed']} failed to integrate" if s["failed"] else ""
        direct, direct_se = s["mean"] - r["entropy"], math.hypot(s["se"], r["entropy_se"] or 0.0)
        out.append(f"ODE NLL within {NLL_TOLERANCE} nats of the exact entropy on {where}: "
                   f"{'PASS' if abs(s['gap']) <= NLL_TOLERANCE and not s['failed'] else 'FAIL'}: E[NLL] - H = "
                   f"{s['gap']:+.4f} +- {s['gap_se']:.4f} (NLL - (-log q) paired on {r['settings']['n_ode']} true "
                   f"points, mean over {s['seeds']} seeds; within {NLL_TOLERANCE} on {s['within']} of {s['seeds']} "
                   f"seeds{failed}); direct: flow NLL "
                   f"{s['mean']:.4f} +- {s['se']:.4f} vs H = {_pm(r['entropy'], r['entropy_se'])}: "
                   f"{direct:+.4f} +- {direct_se:.4f}")
    return out


def write(results, runs, out) -> None:
    md = markdown(results, runs) + "\n" + "\n".join(f"- {c}" for c in checks(results)) + "\n"
    out = ensure_writable_dir(out)
    atomic_write_json(out / "flow_vs_ddpm.json", {"format": FORMAT, "runs": runs, "results": results})
    atomic_write_bytes(out / "flow_vs_ddpm.md", md.encode())
    print(md)

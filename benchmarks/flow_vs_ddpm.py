"""Flow matching against the DDPM default: the same network and training budget on the same data,
measured against the same exact answers.

    python benchmarks/flow_vs_ddpm.py [--seeds 0 1 2 3 4] [--datasets seed_mixture eight_gaussians moons
        checkerboard] [--seeds-2d 0] [--draws 8] [--nfe 5 10 25 50] [--n 10000] [--n-ode 256] [--iters-scale 1] [--out DIR]

For each data set, the DDPM recipe (``default`` for the seed's mixture, ``eight_gaussians``, ``moons``,
``moons`` with the checkerboard) and its flow twin (``flow``, ``eight_gaussians_flow``, ``moons_flow``)
train once per seed. Sample quality at each budget of network evaluations (NFE): the expected W1 (1-D)
or sliced W1 (2-D, 128 fixed directions) of ``--n`` samples to a fixed reference of 100,000 (1-D) /
20,000 (2-D) true points, the mean over seeds and ``--draws`` draws each, beside the floor (a true
sample of the same size). Samplers: the DDPM's probability-flow ODE by DPM-Solver++(2M) (K = NFE steps),
the flow's ODE by Euler (K = NFE) and Heun (K = floor(NFE / 2), 2 NFE a step). For the Gaussian
mixtures the exact models run the same solvers (``MixtureOracle`` under the DDPM's schedule,
``FlowMixtureOracle``): their gap to the floor is the solver's own error, and their mean |x_K - x_exact|
on the same noise (x_exact: rk45 at tolerance 1e-8) is the path error. ODE NLL (RK45, tolerance 1e-5,
prior N(0, I)) of ``--n-ode`` true points, beside -log q on the same points and the entropy.
The acceptance checks of issue 15 are printed at the end. Writes flow_vs_ddpm.md / .json into --out.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import statistics
import time
from pathlib import Path

import torch

import ddpmlab as dl
from ddpmlab.config import load_config
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.data.named import NAMED
from ddpmlab.evaluation.flow_oracle import FlowMixtureOracle
from ddpmlab.evaluation.metrics import mixture_entropy_1d, w1
from ddpmlab.evaluation.metrics_nd import random_directions, sliced_w1
from ddpmlab.evaluation.ode import ode_log_likelihood
from ddpmlab.config.build import build_schedule
from ddpmlab.workflows.pipeline import fit

ROOT = Path(__file__).resolve().parents[1]
PAIRS = {  # data set: (DDPM config, flow config, overrides of both)
    "seed_mixture": ("default", "flow", []),
    "eight_gaussians": ("eight_gaussians", "eight_gaussians_flow", []),
    "moons": ("moons", "moons_flow", []),
    "checkerboard": ("moons", "moons_flow", ["data.name='checkerboard'"]),
}
METHODS = (("ddpm", "dpm_solver"), ("flow", "euler"), ("flow", "heun"))


def steps_for(solver: str, nfe: int) -> int:
    return max(1, nfe // 2) if solver in ("heun", "midpoint") else nfe


class Metric:
    """W1 (1-D) or sliced W1 (2-D) to one fixed reference sample."""

    def __init__(self, dist, dim: int):
        g = torch.Generator().manual_seed(12345)
        self.dim = dim
        self.ref = dist.sample(100_000 if dim == 1 else 20_000, g, dtype=torch.float64)
        self.dirs = None if dim == 1 else random_directions(dim, 128, g)

    def __call__(self, x) -> float:
        x = x.detach().double().reshape(x.shape[0], -1)
        return w1(x, self.ref) if self.dim == 1 else sliced_w1(x, self.ref, self.dirs)


def entropy(dist, generator) -> tuple[float, float]:
    if isinstance(dist, GaussianMixture) and dist.dim == 1:
        return mixture_entropy_1d(dist), 0.0
    if hasattr(dist, "entropy_nats"):
        return dist.entropy_nats(), 0.0
    if hasattr(dist, "log_prob"):
        v = -dist.log_prob(dist.sample(100_000, generator, dtype=torch.float64))
        return float(v.mean()), float(v.std() / math.sqrt(v.numel()))
    return float("nan"), float("nan")


FLOOR_DRAWS = 64  # one draw's metric varies a lot (component counts): the floor needs many


def floor_of(dist, metric, n: int) -> tuple[float, float]:
    """The expected metric of a true sample of size n (mean and standard error over FLOOR_DRAWS draws)."""
    g = torch.Generator().manual_seed(7)
    vals = [metric(dist.sample(n, g, dtype=torch.float64)) for _ in range(FLOOR_DRAWS)]
    return statistics.fmean(vals), statistics.stdev(vals) / math.sqrt(len(vals))


def expected_metric(model, metric, method, nfe, n, draws, seed) -> float:
    _, solver = method
    vals = []
    for d in range(draws):
        g = torch.Generator().manual_seed(1000 * seed + d)
        vals.append(metric(dl.sample(model, n, "ode", steps_for(solver, nfe), solver=solver, generator=g)))
    return statistics.fmean(vals)


def ode_nll(model, x) -> float | None:
    try:
        return ode_log_likelihood(model, x, rtol=1e-5, atol=1e-5, max_nfe=5000)["nll_nats"]
    except dl.DDPMLabError:
        return None


def run_dataset(name, args, log) -> dict:
    ddpm_cfg, flow_cfg, extra = PAIRS[name]
    dist = NAMED[name]()
    dim = math.prod(dist.event_shape)
    metric = Metric(dist, dim)
    g = torch.Generator().manual_seed(7)
    floor, floor_se = floor_of(dist, metric, args.n)
    x_ode = dist.sample(args.n_ode, g, dtype=torch.float64)
    exact_nll = float(-dist.log_prob(x_ode).mean()) if hasattr(dist, "log_prob") else None
    H, H_se = entropy(dist, g)
    res = {"floor": floor, "floor_se": floor_se, "entropy": H, "entropy_se": H_se, "exact_nll_same_points": exact_nll,
           "trained": {}, "nll": {"ddpm": [], "flow": []}, "train_seconds": {"ddpm": [], "flow": []}}
    cfgs = {}
    for family, cfg_name in (("ddpm", ddpm_cfg), ("flow", flow_cfg)):
        base = load_config(cfg_name, extra)
        cfgs[family] = base
    res["seeds"] = seeds = args.seeds if dim == 1 else (args.seeds_2d or args.seeds)
    for seed in seeds:
        models = {}
        for family in ("ddpm", "flow"):
            base = cfgs[family]
            iters = max(1, round(base.train.iters * args.iters_scale))
            cfg = load_config(ddpm_cfg if family == "ddpm" else flow_cfg,
                              extra + [f"train.seed={seed}", f"train.iters={iters}"])
            start = time.perf_counter()
            models[family] = fit(cfg, progress=False).sampling_model.eval()
            res["train_seconds"][family].append(time.perf_counter() - start)
            res["nll"][family].append(ode_nll(models[family], x_ode.reshape((-1,) + tuple(dist.event_shape))))
        for method in METHODS:
            for nfe in args.nfe:
                key = f"{method[0]}:{method[1]}:{nfe}"
                res["trained"].setdefault(key, []).append(
                    expected_metric(models[method[0]], metric, method, nfe, args.n, args.draws, seed))
        log(f"{name} seed {seed}: trained in {res['train_seconds']['ddpm'][-1]:.0f} s / "
            f"{res['train_seconds']['flow'][-1]:.0f} s; NLL ddpm {res['nll']['ddpm'][-1]}, flow {res['nll']['flow'][-1]}")
    if isinstance(dist, GaussianMixture):
        res["oracle"] = oracle_errors(dist, build_schedule(cfgs["ddpm"]), metric, args)
    return res


def oracle_errors(dist, schedule, metric, args) -> dict:
    oracles = {"ddpm": dl.MixtureOracle(dist, schedule), "flow": FlowMixtureOracle(dist)}
    x_T = torch.randn((args.n,) + tuple(dist.event_shape), generator=torch.Generator().manual_seed(99),
                      dtype=torch.float64)
    exact = {"ddpm": dl.sample(oracles["ddpm"], args.n, "ode", schedule.T, solver="rk45", x_T=x_T, rtol=1e-8,
                               atol=1e-8),
             "flow": dl.sample(oracles["flow"], args.n, "ode", 1, solver="rk45", x_T=x_T, rtol=1e-8, atol=1e-8)}
    out = {}
    for family, solver in METHODS:
        for nfe in args.nfe:
            key = f"{family}:{solver}:{nfe}"
            x = dl.sample(oracles[family], args.n, "ode", steps_for(solver, nfe), solver=solver, x_T=x_T)
            w = expected_metric(oracles[family], metric, (family, solver), nfe, args.n, args.draws, 0)
            out[key] = {"w1": w, "path_error": float((x - exact[family]).abs().mean())}
    return out


LABEL = {"ddpm:dpm_solver": "DDPM, DPM-Solver++(2M)", "flow:euler": "flow, Euler", "flow:heun": "flow, Heun"}


def markdown(results, args, load) -> str:
    metric = lambda name: "W1" if name == "seed_mixture" else "sliced W1"  # noqa: E731
    lines = ["# Flow matching against the DDPM default (same network, same training budget)", "",
             "Per data set: " + "; ".join(
                 f"{k}: seeds {', '.join(map(str, r.get('seeds', args.seeds)))}, "
                 f"{r.get('settings', {}).get('draws', args.draws)} draws of "
                 f"{r.get('settings', {}).get('n', args.n)} samples per seed and budget, training iterations x "
                 f"{r.get('settings', {}).get('iters_scale', args.iters_scale)} of the configs'"
                 for k, r in results.items())
             + f". ODE NLL on {args.n_ode} true points. "
             f"Load average before / after: {load[0]} / {load[1]} (2 shared cores: timings unreliable). "
             "Heun takes floor(NFE / 2) steps. Oracle: the exact model of the mixture on the same solver "
             "(expected metric / mean path error against rk45 at 1e-8).", ""]
    head = "| data | model | " + " | ".join(f"NFE {k}" for k in args.nfe) + " |"
    lines += [head, "|" + "---|" * (2 + len(args.nfe))]
    for name, r in results.items():
        floor = f"{r['floor']:.4f} +- {r['floor_se']:.4f}" if "floor_se" in r else f"{r['floor']:.4f}"
        lines.append(f"| {name} | floor ({metric(name)} of a true sample) | "
                     + " | ".join(floor for _ in args.nfe) + " |")
        for family, solver in METHODS:
            cells = [statistics.fmean(r["trained"][f"{family}:{solver}:{k}"]) for k in args.nfe]
            lines.append(f"| {name} | trained {LABEL[family + ':' + solver]} | "
                         + " | ".join(f"{c:.4f}" for c in cells) + " |")
            if "oracle" in r:
                o = [r["oracle"][f"{family}:{solver}:{k}"] for k in args.nfe]
                lines.append(f"| {name} | oracle {LABEL[family + ':' + solver]} | "
                             + " | ".join(f"{c['w1']:.4f} / {c['path_error']:.1e}" for c in o) + " |")
    lines += ["", "| data | entropy (nats) | -log q, same points | DDPM ODE NLL | flow ODE NLL | "
              "train s DDPM / flow |", "|---|---|---|---|---|---|"]
    fmt = lambda v: "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"  # noqa: E731
    for name, r in results.items():
        nll = {f: [v for v in r["nll"][f] if v is not None] for f in ("ddpm", "flow")}
        ent = fmt(r["entropy"]) + (f" +- {r['entropy_se']:.4f}" if r["entropy_se"] and math.isfinite(r["entropy_se"])
                                   else "")
        lines.append(f"| {name} | {ent} | {fmt(r['exact_nll_same_points'])} | "
                     f"{fmt(statistics.fmean(nll['ddpm']) if nll['ddpm'] else None)} | "
                     f"{fmt(statistics.fmean(nll['flow']) if nll['flow'] else None)} | "
                     f"{statistics.fmean(r['train_seconds']['ddpm']):.0f} / "
                     f"{statistics.fmean(r['train_seconds']['flow']):.0f} |")
    return "\n".join(lines) + "\n"


def checks(results, args) -> list[str]:
    out = []
    r = results.get("seed_mixture")
    if r is not None and 25 in args.nfe and 50 in args.nfe:
        flow = r["trained"]["flow:heun:50"]  # 25 Heun steps
        ddpm = r["trained"]["ddpm:dpm_solver:25"]  # the DDPM default's 25-step ODE
        wins = sum(f <= d for f, d in zip(flow, ddpm))
        out.append(f"seed_mixture: flow 25 Heun steps W1 <= DDPM 25-step ODE on {wins} of {len(flow)} seeds "
                   f"({', '.join(f'{f:.4f}/{d:.4f}' for f, d in zip(flow, ddpm))})")
    for name in ("seed_mixture", "eight_gaussians"):
        r = results.get(name)
        if r is None:
            continue
        nll = [v for v in r["nll"]["flow"] if v is not None]
        if nll:
            gap = statistics.fmean(nll) - r["exact_nll_same_points"]
            out.append(f"{name}: flow ODE NLL - (-log q) on the same points = {gap:+.4f} nats "
                       f"(mean over seeds; within 0.05: {abs(gap) <= 0.05}); vs the entropy "
                       f"{statistics.fmean(nll) - r['entropy']:+.4f}")
    return out


def merge(args) -> None:
    """One table from several runs' JSON (e.g. the 1-D and 2-D data sets run as two processes)."""
    results, loads, first = {}, [], None
    for path in args.merge:
        d = json.loads(Path(path).read_text())
        first = first or d["args"]
        for name, r in d["results"].items():
            r.setdefault("settings", {k: d["args"][k] for k in ("draws", "n", "iters_scale")})
            if "floor_se" not in r:  # an older run's floor of a few draws: recomputed with FLOOR_DRAWS
                dist = NAMED[name]()
                r["floor"], r["floor_se"] = floor_of(dist, Metric(dist, math.prod(dist.event_shape)),
                                                     r["settings"]["n"])
            results[name] = r
        md = Path(path).with_suffix(".md")
        found = re.search(r"Load average before / after: (\S+) / (\S+) ", md.read_text()) if md.exists() else None
        loads.append(d.get("load") or (list(found.groups()) if found else ["?", "?"]))
    for k in ("nfe", "draws", "n", "n_ode", "iters_scale", "seeds"):
        setattr(args, k, first[k])
    load = (", ".join(str(x[0]) for x in loads) + " (per run)", ", ".join(str(x[1]) for x in loads))
    write(results, args, load)


def write(results, args, load) -> None:
    md = markdown(results, args, load)
    acc = checks(results, args)
    md += "\n" + "\n".join(f"- {c}" for c in acc) + "\n"
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "flow_vs_ddpm.md").write_text(md)
    (out / "flow_vs_ddpm.json").write_text(json.dumps({"args": vars(args), "load": list(load),
                                                        "results": results}, indent=1))
    print(md)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--seeds-2d", type=int, nargs="+", default=None, help="seeds of the 2-D data sets (default --seeds)")
    p.add_argument("--datasets", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    p.add_argument("--draws", type=int, default=8)
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 25, 50])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--n-ode", type=int, default=256)
    p.add_argument("--iters-scale", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="write one table from the flow_vs_ddpm.json of earlier runs (same --nfe) instead of running")
    args = p.parse_args()
    if args.merge:
        return merge(args)
    torch.set_num_threads(args.threads)
    load0 = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"
    print(f"load average {load0}", flush=True)
    results = {}
    for name in args.datasets:
        results[name] = run_dataset(name, args, lambda s: print(s, flush=True))
    load1 = open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"
    write(results, args, (load0, load1))


if __name__ == "__main__":
    main()

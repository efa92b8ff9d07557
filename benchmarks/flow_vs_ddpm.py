"""Flow matching against the DDPM default: the same network and training budget on the same data,
measured against the same exact answers (issue 15).

    python benchmarks/flow_vs_ddpm.py [--datasets seed_mixture eight_gaussians moons checkerboard]
        [--seeds 0 1 2 3 4] [--seeds-2d ...] [--draws 8] [--nfe 5 10 25 50] [--n 10000] [--n-ode 8192]
        [--n-ode-2d 1024] [--iters-scale 1] [--threads 1] [--out DIR]
    python benchmarks/flow_vs_ddpm.py --merge A/flow_vs_ddpm.json B/flow_vs_ddpm.json [--out DIR]

For each data set, the DDPM recipe (``default`` for the seed's mixture, ``eight_gaussians``, ``moons``,
``moons`` with the checkerboard) and its flow twin (``flow``, ``eight_gaussians_flow``, ``moons_flow``)
train once per seed. Sample quality at each budget of network evaluations (NFE): the DDPM's
probability-flow ODE by DPM-Solver++(2M) (K = NFE steps), the flow's ODE by Euler (K = NFE) and Heun
(K = floor(NFE / 2), 2 NFE a step). Metric: in 1-D the W1 to the exact mixture, int |F_n - F| dx in
closed form (``w1_to_mixture_1d``: no reference sample, so no reference noise); in 2-D the sliced W1
(128 fixed directions) to a fixed reference of 20,000 true points. Each value is the expected metric of
``--n`` samples: the mean over ``--draws`` draws, beside the floor (a true sample of the same size,
64 draws).

Common random numbers: draw d of seed s starts every model (trained DDPM, trained flow, each solver and
budget) from the same initial noise z ~ N(0, I) (``initial_noise``: what ``dl.sample`` would draw from
torch's generator seeded 1000 s + d, passed to it as x_T), and every ODE sampler is a deterministic map
of z; the DDPM's and the flow's maps nearly coincide (both carry N(0, I) to the data; trained at full
budget their samples of one z correlate at 0.9999). So the per-draw difference flow - DDPM shares the
draw's luck (how many samples land in each component, which dominates one draw's W1) and its mean over
the draws has a much smaller standard error than either W1 (seed's mixture, full budget, 16 draws: 0.002
paired against 0.006 - 0.008 unpaired). The acceptance check of issue 15 compares, per seed, the trained
flow at 25 Heun steps (50 NFE) with the DDPM default's 25-step ODE (DPM-Solver++(2M), 25 NFE): the paired
mean difference and its standard error over the draws; the flow is "no worse" on a seed where the mean
difference is <= 0 (the table says by how many standard errors it is worse where it is).

ODE NLL (RK45 at tolerance 1e-5 per point, prior N(0, I), exact divergence) of ``--n-ode`` (1-D) /
``--n-ode-2d`` (2-D) true points, the same points for every model and seed, in chunks of ``ODE_CHUNK``:
the mean with its standard error over the points, beside the mean of -log q on the same points and the
entropy H (1-D: quadrature; a 2-D mixture: Monte-Carlo over 2^22 points, SE 0.0005). E[NLL] - H =
E_q[NLL - (-log q)] = KL(q || p), so the paired mean of NLL - (-log q) over the points estimates the
NLL's distance to the entropy without the points' own spread of -log q (a control variate of known mean
H): the NLL check reads it, with its standard error, and prints the direct mean NLL - H beside it.
Defaults: 8192 points in 1-D (sd of -log q 0.77: the direct mean's SE 0.0085; about 5 - 10 ms a point
at one thread), 1024 in 2-D (sd 0.97: direct SE 0.03, but a point costs 30 - 50 ms, 2 backward passes
through the 128 x 3 MLP at 1000 - 1600 RK45 evaluations; the paired SE is what the check needs).

Two processes: run disjoint ``--datasets`` (or disjoint ``--seeds`` of the same data sets) into two
``--out`` folders, then ``--merge`` their JSON into one table; a data set split over seeds is joined
seed by seed (its settings must agree). The acceptance checks of issue 15 are printed at the end.
Writes flow_vs_ddpm.md / .json into --out.
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

import torch

import ddpmlab as dl
from ddpmlab.config.budget import AUTO, auto_iters
from ddpmlab.config.build import build_schedule
from ddpmlab.config.schema import load_config
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.data.named import NAMED
from ddpmlab.evaluation.metrics import mixture_entropy_1d, w1_to_mixture_1d
from ddpmlab.evaluation.metrics_nd import random_directions, sliced_w1
from ddpmlab.evaluation.ode import ode_log_likelihood
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.workflows.pipeline import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flow_vs_ddpm_report import CHECK, load_runs, write  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PAIRS = {  # data set: (DDPM config, flow config, overrides of both)
    "seed_mixture": ("default", "flow", []),
    "eight_gaussians": ("eight_gaussians", "eight_gaussians_flow", []),
    "moons": ("moons", "moons_flow", []),
    "checkerboard": ("moons", "moons_flow", ["data.name='checkerboard'"]),
}
METHODS = (("ddpm", "dpm_solver"), ("flow", "euler"), ("flow", "heun"))
FLOOR_DRAWS = 64  # one draw's metric varies a lot (component counts): the floor needs many
ODE_CHUNK = 512  # points per ODE solve: the solver's step fits the hardest point of a chunk
ENTROPY_MC = 2 ** 22  # Monte-Carlo points for the entropy of a mixture above 1-D


def steps_for(solver: str, nfe: int) -> int:
    return max(1, nfe // 2) if solver in ("heun", "midpoint") else nfe


class Metric:
    """W1 to the exact mixture (1-D), else sliced W1 (128 fixed directions) to one fixed reference."""

    def __init__(self, dist, dim: int):
        g = torch.Generator().manual_seed(12345)
        self.dist, self.exact = dist, dim == 1 and isinstance(dist, GaussianMixture)
        self.ref = None if self.exact else dist.sample(20_000, g, dtype=torch.float64)
        self.dirs = None if self.exact else random_directions(dim, 128, g)

    def __call__(self, x) -> float:
        x = x.detach().double().reshape(x.shape[0], -1)
        return w1_to_mixture_1d(self.dist, x) if self.exact else sliced_w1(x, self.ref, self.dirs)


def entropy(dist) -> tuple[float, float]:
    """The exact entropy (nats) and its standard error (0 where exact, else Monte-Carlo)."""
    if isinstance(dist, GaussianMixture) and dist.dim == 1:
        return mixture_entropy_1d(dist), 0.0
    if hasattr(dist, "entropy_nats"):
        return dist.entropy_nats(), 0.0
    if not hasattr(dist, "log_prob"):
        return float("nan"), float("nan")
    g, s, s2 = torch.Generator().manual_seed(11), 0.0, 0.0
    for _ in range(ENTROPY_MC // 2 ** 18):
        v = -dist.log_prob(dist.sample(2 ** 18, g, dtype=torch.float64))
        s, s2 = s + float(v.sum()), s2 + float(v.square().sum())
    mean = s / ENTROPY_MC
    return mean, math.sqrt(max(s2 / ENTROPY_MC - mean ** 2, 0.0) / ENTROPY_MC)


def floor_of(dist, metric, n: int) -> tuple[float, float]:
    """The expected metric of a true sample of size n (mean and standard error over FLOOR_DRAWS draws)."""
    g = torch.Generator().manual_seed(7)
    vals = [metric(dist.sample(n, g, dtype=torch.float64)) for _ in range(FLOOR_DRAWS)]
    return statistics.fmean(vals), statistics.stdev(vals) / math.sqrt(len(vals))


def initial_noise(seed: int, draw: int, n: int, shape) -> torch.Tensor:
    """Draw ``draw`` of seed ``seed``: the x_T ~ N(0, I) that every model of the draw starts from."""
    return torch.randn((n,) + tuple(shape), generator=torch.Generator().manual_seed(1000 * seed + draw))


def metric_per_draw(model, metric, key: str, n: int, draws: int, seed: int) -> list[float]:
    """The metric of each draw's samples, model ``key`` = family:solver:NFE, from the draws' shared noise."""
    _, solver, nfe = key.split(":")
    return [metric(dl.sample(model, n, "ode", steps_for(solver, int(nfe)), solver=solver,
                             x_T=initial_noise(seed, d, n, model.data_shape))) for d in range(draws)]


def ode_nll(model, x, minus_log_q, threads: int) -> dict | None:
    """ODE NLL of the points x (chunks of ODE_CHUNK): mean and SE over the points, and the paired mean and
    SE of NLL - (-log q) when -log q is known. None if the flow is too stiff to integrate."""
    try:
        nll = torch.cat([-ode_log_likelihood(model, x[i:i + ODE_CHUNK], rtol=1e-5, atol=1e-5, max_nfe=5000,
                                             threads=threads)["log_likelihood"]
                         for i in range(0, x.shape[0], ODE_CHUNK)])
    except dl.DDPMLabError:
        return None
    se = lambda v: float(v.std() / math.sqrt(v.numel()))  # noqa: E731
    out = {"mean": float(nll.mean()), "se": se(nll)}
    if minus_log_q is not None:
        out.update(gap=float((nll - minus_log_q).mean()), gap_se=se(nll - minus_log_q))
    return out


def settings_of(args, dim: int) -> dict:
    return {"draws": args.draws, "n": args.n, "n_ode": args.n_ode if dim == 1 else args.n_ode_2d,
            "iters_scale": args.iters_scale, "nfe": args.nfe}


def run_dataset(name, args, log) -> dict:
    ddpm_cfg, flow_cfg, extra = PAIRS[name]
    dist = NAMED[name]()
    dim = math.prod(dist.event_shape)
    metric = Metric(dist, dim)
    settings = settings_of(args, dim)
    floor, floor_se = floor_of(dist, metric, args.n)
    x_ode = dist.sample(settings["n_ode"], torch.Generator().manual_seed(8), dtype=torch.float64)
    mlq = -dist.log_prob(x_ode).double() if hasattr(dist, "log_prob") else None
    H, H_se = entropy(dist)
    res = {"settings": settings, "metric": "W1 to the exact mixture" if metric.exact else "sliced W1",
           "floor": floor, "floor_se": floor_se, "entropy": H, "entropy_se": H_se,
           "minus_log_q": None if mlq is None else {"mean": float(mlq.mean()),
                                                   "se": float(mlq.std() / math.sqrt(mlq.numel()))},
           "per_seed": {}}
    x_ode = x_ode.reshape((-1,) + tuple(dist.event_shape))
    keys = sorted({f"{f}:{s}:{k}" for f, s in METHODS for k in args.nfe} | set(CHECK if dim == 1 else ()))
    cfgs = {"ddpm": ddpm_cfg, "flow": flow_cfg}
    base_iters = {f: load_config(c, extra).train.iters for f, c in cfgs.items()}
    base_iters = {f: auto_iters(dist.event_shape) if i == AUTO else i for f, i in base_iters.items()}
    for seed in (args.seeds if dim == 1 else (args.seeds_2d or args.seeds)):
        one = {"seconds": {}, "nll": {}, "w1": {}}
        models = {}
        for family, cfg_name in cfgs.items():
            iters = max(1, round(base_iters[family] * args.iters_scale))
            cfg = load_config(cfg_name, extra + [f"train.seed={seed}", f"train.iters={iters}",
                                                 f"train.threads={args.threads}"])
            start = time.perf_counter()
            models[family] = fit(cfg, progress=False).sampling_model.eval()
            one["seconds"][f"train_{family}"] = time.perf_counter() - start
            start = time.perf_counter()
            one["nll"][family] = ode_nll(models[family], x_ode, mlq, args.threads)
            one["seconds"][f"nll_{family}"] = time.perf_counter() - start
        start = time.perf_counter()
        for key in keys:
            one["w1"][key] = metric_per_draw(models[key.split(":")[0]], metric, key, args.n, args.draws, seed)
        one["seconds"]["sampling"] = time.perf_counter() - start
        res["per_seed"][str(seed)] = one
        log(f"{name} seed {seed}: " + ", ".join(f"{k} {v:.1f} s" for k, v in one["seconds"].items())
            + "; NLL " + ", ".join(f"{f} {v['mean']:.4f}" if v else f"{f} -" for f, v in one["nll"].items()))
    if isinstance(dist, GaussianMixture):
        start = time.perf_counter()
        res["oracle"] = oracle_errors(dist, build_schedule(load_config(ddpm_cfg, extra)), metric, args)
        res["oracle_seconds"] = time.perf_counter() - start
        log(f"{name} oracles: {res['oracle_seconds']:.1f} s")
    return res


def oracle_errors(dist, schedule, metric, args) -> dict:
    """The exact models on the same solvers: expected metric (draws of seed 0's noise) and the mean path
    error |x_K - x_exact| on one draw, x_exact by rk45 at tolerance 1e-8."""
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
            w = statistics.fmean(metric_per_draw(oracles[family], metric, key, args.n, args.draws, 0))
            out[key] = {"w1": w, "path_error": float((x - exact[family]).abs().mean())}
    return out


def loadavg() -> str:
    return open("/proc/loadavg").read().split()[0] if os.path.exists("/proc/loadavg") else "?"


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--seeds-2d", type=int, nargs="+", default=None, help="seeds of the 2-D data sets (default --seeds)")
    p.add_argument("--datasets", nargs="+", default=list(PAIRS), choices=list(PAIRS))
    p.add_argument("--draws", type=int, default=8)
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 25, 50])
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--n-ode", type=int, default=8192, help="true points of the ODE NLL in 1-D")
    p.add_argument("--n-ode-2d", type=int, default=1024, help="true points of the ODE NLL in 2-D")
    p.add_argument("--iters-scale", type=float, default=1.0)
    p.add_argument("--threads", type=int, default=1, help="torch threads for training, sampling and the NLL")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    p.add_argument("--merge", nargs="+", default=None, metavar="JSON",
                   help="write one table from the flow_vs_ddpm.json of earlier runs instead of running")
    args = p.parse_args()
    try:
        if args.merge:
            results, loads = load_runs(args.merge)
            return write(results, loads, args.out)
        torch.set_num_threads(args.threads)
        load0, start = loadavg(), time.perf_counter()
        print(f"load average {load0}", flush=True)
        results = {name: run_dataset(name, args, lambda s: print(s, flush=True)) for name in args.datasets}
        run = {"datasets": args.datasets, "seeds": args.seeds, "seeds_2d": args.seeds_2d, "threads": args.threads,
               "load": [load0, loadavg()], "seconds": time.perf_counter() - start}
        write(results, [run], args.out)
    except dl.DDPMLabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""Few-step generation scored against the exact flow map (issue 25).

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/few_step.py [--datasets seed_mixture eight_gaussians]
        [--seeds 0-4] [--seeds-2d 0-4] [--methods ...] [--draws 4] [--n 10000] [--iters-scale 1] [--out DIR]
        [--name few_step]
    python benchmarks/few_step.py --combine A.json B.json [--name few_step]

Per data set and seed, each few-step method trains from its packaged config (``configs/<method>.toml`` on
the seed's mixture, ``<method>_8gaussians.toml`` on eight gaussians; MeanFlow's config with the data set
changed), through the Python API, is saved and loaded back as ``ddpmlab train`` leaves it, and samples at
1, 2 and 4 network calls with its own sampler (consistency: multistep consistency sampling; MeanFlow and
shortcut: ``flow_map``; reflow: Euler on its ODE). Beside them, the same seed's baselines: the DDPM default
(``default`` / ``eight_gaussians``) by DPM-Solver++(2M) at 1, 2, 4 and 25 calls, and the flow config (``flow``
/ ``eight_gaussians_flow``) by Heun (2 calls a step) at 2, 4 and 24 calls. The teachers are those
baselines' runs: consistency distillation distils the DDPM default, reflow the flow; a method's training
time includes its teacher's.

Metric: W1 to the exact mixture in 1-D (closed form, ``w1_to_mixture_1d``), sliced W1 (128 fixed
directions) to 20,000 fixed true points in 2-D, in data units; each value is the mean over ``--draws``
draws of ``--n`` samples, every model of a draw started from the same noise (common random numbers).
Beside them the exact map's samples from that noise (``exact_flow_map`` from t = 1 to 0: closed form in
1-D, RK45 in 2-D; exact at any number of steps) and the floor (a true sample of the same size). The
flow-map error E|f(x_t, t -> 0) - Phi(x_t)|^2 (``evaluation.flow_map_error``) at t = 0.25, 0.5, 1 for each
method (reflow: its one Euler step x_t - t v(x_t, t)).

The acceptance check (seed's mixture): the best method's 1-step W1 within 2x and its 2-step W1 within
1.3x of the DDPM default's 25-step W1 on every seed; otherwise it prints how close each method came.
Writes NAME.md and NAME.json (every row) into ``--out`` (default benchmarks/results), with the load average.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import ddpmlab as dl
from ddpmlab.config.budget import auto_iters
from ddpmlab.config.schema import load_config
from ddpmlab.core.fileio import atomic_write_bytes, atomic_write_json
from ddpmlab.data.named import NAMED
from ddpmlab.evaluation.flow_map_error import flow_map_error
from ddpmlab.models.flow_map import exact_flow_map
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.runs.format import load_run
from ddpmlab.workflows.pipeline import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flow_vs_ddpm import Metric, floor_of, initial_noise  # noqa: E402
from quality_suite import parse_ints  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CALLS = (1, 2, 4)
ERROR_TIMES = (0.25, 0.5, 1.0)
ERROR_POINTS = 1000
# method: (config on the seed's mixture, config on eight gaussians, the baseline it distils or None)
METHODS = {
    "consistency_distill": ("consistency_distill", "consistency_distill_8gaussians", "ddpm"),
    "consistency_train": ("consistency_train", "consistency_train_8gaussians", None),
    "meanflow": ("meanflow", "meanflow", None),
    "shortcut": ("shortcut", "shortcut_8gaussians", None),
    "reflow": ("reflow", "reflow_8gaussians", "flow"),
}
BASELINES = {  # name: (config on the seed's mixture, on eight gaussians, ODE solver, calls)
    "ddpm": ("default", "eight_gaussians", "dpm_solver", (1, 2, 4, 25)),
    "flow": ("flow", "eight_gaussians_flow", "heun", (2, 4, 24)),
}
DATA_OVERRIDE = {"eight_gaussians": "data.name='eight_gaussians'"}


def loadavg() -> str:
    return " ".join(f"{v:.2f}" for v in os.getloadavg())


def train(config: str, dataset: str, seed: int, args, directory: Path, teacher: Path | None = None):
    """Train ``config`` on ``dataset`` (seed, iters scaled), save it in ``directory``; (run, seconds)."""
    base = load_config(config, [f"train.teacher={str(teacher)!r}"] if teacher else [])
    extra = [f"train.seed={seed}", f"train.threads={args.threads}"]
    if args.iters_scale != 1:
        iters = base.train.iters if isinstance(base.train.iters, int) else auto_iters(NAMED[dataset]().event_shape)
        extra.append(f"train.iters={max(1, round(iters * args.iters_scale))}")
    if dataset in DATA_OVERRIDE and base.data.name != dataset:
        extra.append(DATA_OVERRIDE[dataset])
    if teacher:
        extra.append(f"train.teacher={str(teacher)!r}")
    cfg = load_config(config, extra)
    start = time.perf_counter()
    trainer = fit(cfg, progress=False)
    seconds = time.perf_counter() - start
    out = directory / f"{config}-{dataset}-{seed}"
    trainer.save(out)
    return load_run(out), seconds, out


def samples(run, calls: int, z: torch.Tensor, generator, solver: str | None = None) -> torch.Tensor:
    """The run's samples at ``calls`` network calls from the noise z (data units)."""
    s = run.cfg.sample
    sampler = "ode" if solver else s.sampler
    solver = solver or (s.ode_solver if sampler == "ode" else None)
    steps = max(1, calls // 2) if solver in ("heun", "midpoint") else calls
    options = {"solver": solver} if sampler == "ode" else {}
    with torch.no_grad():
        x = dl.sample(run.model, z.shape[0], sampler, steps, generator=generator, x_T=z, **options)
    return run.to_data_units(x)


def w1_per_draw(run, calls, metric, args, seed, solver=None) -> list[float]:
    out = []
    for d in range(args.draws):
        z = initial_noise(seed, d, args.n, run.model.data_shape)
        out.append(metric(samples(run, calls, z, torch.Generator().manual_seed(50_000 + 100 * seed + d), solver)))
    return out


def map_error(run, dist) -> list[float] | None:
    """E|f(x_t, t -> 0) - Phi(x_t)|^2 at ERROR_TIMES: a flow-map model's map, a flow's one Euler step."""
    model = run.model
    if hasattr(model, "flow_map"):
        fn = model.flow_map
    elif hasattr(model, "velocity"):
        def fn(x, t, s):
            return x - (t - s) * model.velocity(x, t)
    else:
        return None
    oracle = FlowMixtureOracle(dist, data_shape=tuple(model.data_shape))
    x0 = dist.sample(ERROR_POINTS, torch.Generator().manual_seed(3), dtype=torch.float64)
    x0 = x0.reshape((-1,) + tuple(model.data_shape))
    r = flow_map_error(lambda x, t, s: fn(x.to(model.dtype), t, s), oracle, x0, ERROR_TIMES,
                       torch.Generator().manual_seed(4))
    return r["error"]


def exact_per_draw(dist, metric, args, seed, shape) -> list[float]:
    oracle = FlowMixtureOracle(dist, data_shape=shape)
    return [metric(exact_flow_map(oracle, initial_noise(seed, d, args.n, shape).double(), 1.0, 0.0))
            for d in range(args.draws)]


def run_dataset(dataset: str, seeds: list[int], args, log) -> list[dict]:
    dist = NAMED[dataset]()
    shape = tuple(dist.event_shape)
    metric = Metric(dist, math.prod(shape))
    floor, floor_se = floor_of(dist, metric, args.n)
    rows = []
    column = 0 if dataset == "seed_mixture" else 1
    for seed in seeds:
        with tempfile.TemporaryDirectory() as tmp:
            teachers = {}
            exact = exact_per_draw(dist, metric, args, seed, shape)
            rows.append({"dataset": dataset, "seed": seed, "method": "exact map", "kind": "exact",
                         "w1": {str(k): statistics.fmean(exact) for k in CALLS}, "floor": floor, "floor_se": floor_se})
            for name, (c1, c2, solver, calls) in BASELINES.items():
                run, seconds, path = train((c1, c2)[column], dataset, seed, args, Path(tmp))
                teachers[name] = (path, seconds)
                w1 = {str(k): statistics.fmean(w1_per_draw(run, k, metric, args, seed, solver)) for k in calls}
                rows.append({"dataset": dataset, "seed": seed, "method": f"{name} ({solver})", "kind": "baseline",
                             "train_seconds": round(seconds, 1), "w1": w1, "floor": floor, "floor_se": floor_se})
                log(f"{dataset} seed {seed} {name}: {seconds:.1f} s, W1 " + ", ".join(f"{k}: {v:.4f}" for k, v in w1.items()))
            for name in args.methods:
                c1, c2, teacher = METHODS[name]
                path, teacher_seconds = teachers[teacher] if teacher else (None, 0.0)
                run, seconds, _ = train((c1, c2)[column], dataset, seed, args, Path(tmp), path)
                w1 = {str(k): statistics.fmean(w1_per_draw(run, k, metric, args, seed)) for k in CALLS}
                error = map_error(run, dist)
                rows.append({"dataset": dataset, "seed": seed, "method": name, "kind": "few-step",
                             "teacher": teacher, "train_seconds": round(seconds, 1),
                             "train_seconds_with_teacher": round(seconds + teacher_seconds, 1),
                             "w1": w1, "flow_map_error": error, "floor": floor, "floor_se": floor_se})
                log(f"{dataset} seed {seed} {name}: {seconds:.1f} s (+ teacher {teacher_seconds:.1f} s), W1 "
                    + ", ".join(f"{k}: {v:.4f}" for k, v in w1.items())
                    + ("" if error is None else ", map error " + ", ".join(f"{e:.2e}" for e in error)))
    return rows


def _cell(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.fmean(values):.4f} ({max(values):.4f})"


def table(rows: list[dict]) -> list[str]:
    lines = []
    for dataset in dict.fromkeys(r["dataset"] for r in rows):
        rs = [r for r in rows if r["dataset"] == dataset]
        seeds = sorted({r["seed"] for r in rs})
        calls = sorted({int(k) for r in rs for k in r["w1"]})
        metric = "W1" if dataset == "seed_mixture" else "sliced W1"
        lines += [f"### {dataset} (seeds {', '.join(map(str, seeds))}): {metric}, mean over seeds (worst seed)", "",
                  "| method | " + " | ".join(f"{k} call{'s' * (k > 1)}" for k in calls)
                  + " | train s (with teacher) | flow-map error at t = " + ", ".join(map(str, ERROR_TIMES)) + " |",
                  "|---|" + "---|" * (len(calls) + 2)]
        for method in dict.fromkeys(r["method"] for r in rs):
            mr = [r for r in rs if r["method"] == method]
            cells = [_cell([r["w1"][str(k)] for r in mr if str(k) in r["w1"]]) for k in calls]
            secs = [r.get("train_seconds_with_teacher", r.get("train_seconds")) for r in mr]
            secs = "-" if secs[0] is None else f"{statistics.fmean(secs):.1f}"
            errs = [r.get("flow_map_error") for r in mr if r.get("flow_map_error")]
            err = "-" if not errs else ", ".join(f"{statistics.fmean(e[i] for e in errs):.2e}"
                                                 for i in range(len(ERROR_TIMES)))
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {secs} | {err} |")
        lines.append(f"| floor (a true sample) | {rs[0]['floor']:.4f} +- {rs[0]['floor_se']:.4f} |"
                     + " |" * (len(calls) + 1))
        lines.append("")
    return lines


def acceptance(rows: list[dict]) -> list[str]:
    """On the seed's mixture: per method and seed, its 1- and 2-call W1 over the DDPM default's 25-call W1."""
    rs = [r for r in rows if r["dataset"] == "seed_mixture"]
    if not rs:
        return []
    ref = {r["seed"]: r["w1"]["25"] for r in rs if r["method"].startswith("ddpm")}
    seeds = sorted(ref)
    out = [f"Acceptance (seed's mixture, seeds {', '.join(map(str, seeds))}): 1-call W1 within 2x and 2-call W1 "
           "within 1.3x of the DDPM default's 25-call W1 on every seed.", ""]
    best = None
    for method in dict.fromkeys(r["method"] for r in rs if r["kind"] == "few-step"):
        mr = {r["seed"]: r for r in rs if r["method"] == method}
        r1 = [mr[s]["w1"]["1"] / ref[s] for s in seeds if s in mr]
        r2 = [mr[s]["w1"]["2"] / ref[s] for s in seeds if s in mr]
        ok = len(r1) == len(seeds) and max(r1) <= 2.0 and max(r2) <= 1.3
        out.append(f"- {method}: 1 call {min(r1):.2f}-{max(r1):.2f}x, 2 calls {min(r2):.2f}-{max(r2):.2f}x "
                   f"({sum(v <= 2.0 for v in r1)} and {sum(v <= 1.3 for v in r2)} of {len(seeds)} seeds): "
                   f"{'met' if ok else 'not met'}")
        if best is None or statistics.fmean(r1) < best[1]:
            best = (method, statistics.fmean(r1), ok)
    if best:
        out += ["", f"Best few-step method at 1 call: {best[0]} (mean ratio {best[1]:.2f}x): acceptance "
                f"{'MET' if best[2] else 'NOT MET'}."]
    return out


def write(rows: list[dict], args, header: str) -> None:
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / f"{args.name}.json", {"header": header, "rows": rows})
    text = "\n".join(["# Few-step generation against the exact flow map (issue 25)", "", header, ""]
                     + table(rows) + acceptance(rows)) + "\n"
    atomic_write_bytes(out / f"{args.name}.md", text.encode())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", nargs="+", default=["seed_mixture", "eight_gaussians"])
    ap.add_argument("--seeds", type=parse_ints, default=list(range(5)))
    ap.add_argument("--seeds-2d", type=parse_ints, default=None)
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    ap.add_argument("--draws", type=int, default=4)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--iters-scale", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="few_step")
    ap.add_argument("--combine", nargs="+", default=None, help="merge the rows of earlier runs' JSON files")
    args = ap.parse_args()
    if args.combine:
        parts = [json.loads(Path(p).read_text()) for p in args.combine]
        write([r for p in parts for r in p["rows"]], args, "Combined from:\n\n" + "\n\n".join(p["header"] for p in parts))
        return
    torch.set_num_threads(args.threads)
    start, before = time.perf_counter(), loadavg()
    command = "python benchmarks/few_step.py " + " ".join(sys.argv[1:])
    rows = []
    for dataset in args.datasets:
        seeds = args.seeds if dataset == "seed_mixture" or args.seeds_2d is None else args.seeds_2d
        rows += run_dataset(dataset, seeds, args, lambda m: print(m, flush=True))
        header = (f"`{command}`: load average {before} at the start, {loadavg()} now; {args.threads} thread(s); "
                  f"{time.perf_counter() - start:.0f} s so far; draws {args.draws} of {args.n} samples")
        write(rows, args, header)
    print("\n".join(table(rows) + acceptance(rows)))


if __name__ == "__main__":
    main()

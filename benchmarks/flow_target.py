"""What the stable target buys a flow: the ``flow`` config trained with the plain target eps - x_0 and
with the stable target field (Xu et al. 2023) over the batch and over its first 256 examples, each
against the DDPM default's 25-step ODE on the same seed and the same noise (issue 15's check).

    python benchmarks/flow_target.py [--seeds 0 1 ... 9] [--draws 8] [--n 10000] [--threads 1] [--out DIR]

Per seed: the DDPM default (``default``) and each flow variant train once (same network, data stream,
iterations and batch); each draw d starts every model from the same x_T (``flow_vs_ddpm.initial_noise``),
the DDPM sampled by DPM-Solver++(2M) in 25 steps, the flows by 25 Heun steps, and the exact flow
(``FlowMixtureOracle``) by the same 25 Heun steps as the best possible flow there. Metric: W1 to the exact
mixture in closed form. The table gives per seed the paired mean difference flow - DDPM over the draws
with its standard error, the mixture-weight error (samples in the left mode minus the x_T that the exact
map sends there: the share the model moved across the modes), and the training seconds.
Writes flow_target.md / .json into --out.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

import ddpmlab as dl
from ddpmlab.config.schema import load_config
from ddpmlab.core.fileio import atomic_write_bytes, atomic_write_json, ensure_writable_dir
from ddpmlab.data.named import NAMED
from ddpmlab.evaluation.metrics import w1_to_mixture_1d
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.workflows.pipeline import fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from flow_vs_ddpm import initial_noise, loadavg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = {  # name: (config, overrides)
    "DDPM default, DPM-Solver++(2M) 25": ("default", []),
    "flow, plain target": ("flow", ["train.flow_target=conditional"]),
    "flow, stable target, 256 references": ("flow", ["train.reference_batch=256"]),
    "flow, stable target, whole batch": ("flow", []),
}
DDPM = next(iter(VARIANTS))
ORACLE = "exact flow (best possible)"


def draws_of(model, solver: str, seed: int, draws: int, n: int, dist, z_split: float):
    """Per draw: W1 to the exact mixture, and the share moved across the modes (left mode - left x_T)."""
    w1, moved = [], []
    for d in range(draws):
        z = initial_noise(seed, d, n, (1,))
        if isinstance(model, FlowMixtureOracle):  # the exact flow runs in float64
            z = z.double()
        x = dl.sample(model, n, "ode", 25, solver=solver, x_T=z).double().reshape(n, 1)
        w1.append(w1_to_mixture_1d(dist, x))
        moved.append(float((x < 0).double().mean() - (z < z_split).double().mean()))
    return w1, moved


def run(args) -> dict:
    dist = NAMED["seed_mixture"]()
    z_split = float(torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(dist.weights[0].item())))
    oracle = FlowMixtureOracle(dist)
    out = {}
    for seed in args.seeds:
        one = {}
        for name, (cfg_name, extra) in VARIANTS.items():
            cfg = load_config(cfg_name, extra + [f"train.seed={seed}", f"train.threads={args.threads}"])
            start = time.perf_counter()
            model = fit(cfg, progress=False).sampling_model.eval()
            seconds = time.perf_counter() - start
            w1, moved = draws_of(model, "dpm_solver" if name == DDPM else "heun", seed, args.draws, args.n, dist,
                                 z_split)
            one[name] = {"w1": w1, "moved": moved, "train_seconds": seconds}
        w1, moved = draws_of(oracle, "heun", seed, args.draws, args.n, dist, z_split)
        one[ORACLE] = {"w1": w1, "moved": moved, "train_seconds": 0.0}
        out[str(seed)] = one
        print(f"seed {seed}: " + ", ".join(f"{k} {statistics.fmean(v['w1']):.4f}" for k, v in one.items()),
              flush=True)
    return out


def table(per_seed: dict) -> tuple[list[str], dict]:
    names = [n for n in VARIANTS if n != DDPM] + [ORACLE]
    lines = ["| seed | DDPM W1 | " + " | ".join(f"{n}: W1, - DDPM (+- SE)" for n in names) + " |",
             "|---|---|" + "---|" * len(names)]
    summary = {n: {"no_worse": 0, "diffs": [], "moved": [], "train": []} for n in names}
    summary[DDPM] = {"moved": [], "train": []}
    for seed, one in per_seed.items():
        base = one[DDPM]["w1"]
        summary[DDPM]["moved"].append(abs(statistics.fmean(one[DDPM]["moved"])))
        summary[DDPM]["train"].append(one[DDPM]["train_seconds"])
        cells = []
        for n in names:
            diff = [a - b for a, b in zip(one[n]["w1"], base)]
            mean, se = statistics.fmean(diff), statistics.stdev(diff) / math.sqrt(len(diff))
            s = summary[n]
            s["no_worse"] += mean <= 0
            s["diffs"].append(mean)
            s["moved"].append(abs(statistics.fmean(one[n]["moved"])))
            s["train"].append(one[n]["train_seconds"])
            cells.append(f"{statistics.fmean(one[n]['w1']):.4f}, {mean:+.4f} +- {se:.4f}")
        lines.append(f"| {seed} | {statistics.fmean(base):.4f} | " + " | ".join(cells) + " |")
    return lines, summary


def write(per_seed: dict, meta: dict, out: Path) -> None:
    lines, summary = table(per_seed)
    k = len(per_seed)
    md = ["# The flow's regression target: plain eps - x_0 against the stable target field", "",
          f"Seeds {', '.join(per_seed)}; {meta['draws']} draws of {meta['n']} samples per seed, each draw's x_T "
          f"shared by every model; W1 to the exact mixture. Load average {meta['load'][0]} before, "
          f"{meta['load'][1]} after; {meta['seconds']:.0f} s; {meta['threads']} thread(s), 2 shared cores.", "",
          *lines, "",
          "| model | no worse than the DDPM on | mean W1 - DDPM | mean abs share moved across the modes | "
          "mean training s |", "|---|---|---|---|---|"]
    for n, s in summary.items():
        if n == DDPM:
            md.append(f"| {n} | - | - | {statistics.fmean(s['moved']):.4f} | {statistics.fmean(s['train']):.2f} |")
        else:
            md.append(f"| {n} | {s['no_worse']} of {k} | {statistics.fmean(s['diffs']):+.4f} | "
                      f"{statistics.fmean(s['moved']):.4f} | {statistics.fmean(s['train']):.2f} |")
    text = "\n".join(md) + "\n"
    out = ensure_writable_dir(out)
    atomic_write_json(out / "flow_target.json", {"meta": meta, "per_seed": per_seed})
    atomic_write_bytes(out / "flow_target.md", text.encode())
    print(text)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    p.add_argument("--draws", type=int, default=8)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    load0, start = loadavg(), time.perf_counter()
    print(f"load average {load0}", flush=True)
    try:
        per_seed = run(args)
        meta = {"draws": args.draws, "n": args.n, "threads": args.threads, "load": [load0, loadavg()],
                "seconds": time.perf_counter() - start}
        write(per_seed, meta, Path(args.out))
    except dl.DDPMLabError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""The recommended recipe on 2-D toy sets: sliced W1 of 10,000 samples within 2x its noise floor.

    python benchmarks/data2d.py [--datasets moons eight_gaussians] [--n 10000] [--threads 1] [--out DIR]

For each set, its packaged config (``configs/<name>.toml``: configs/default.toml with that data
section) is trained once, timed, and sampled (ancestral, all steps). Sample metrics are taken against a
fresh reference of 100,000 true points; each floor is the mean score of ``--floor-repeats`` true
samples of the same size (one true sample's sliced W1 varies by about 30 %). Where the density is
exact, also -E[log q(samples)] beside the entropy, and the model's own NLL by the probability-flow ODE
on 500 true points beside the same entropy. Figures (scatter, density, reverse.gif) and results.json go
to ``--out``. Exit code 0 when every set passes.
"""
from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from ddpmlab.config.schema import load_config
from ddpmlab.core.fileio import atomic_write_json, ensure_writable_dir
from ddpmlab.evaluation.metrics_nd import against_distribution
from ddpmlab.figures.plots2d import write_figures
from ddpmlab.sampling.api import draw_samples
from ddpmlab.workflows.pipeline import fit

ROOT = Path(__file__).resolve().parents[1]


def model_nll(model, dist, generator, n: int = 500) -> dict:
    from ddpmlab.evaluation.ode import ode_log_likelihood

    x = dist.sample(n, generator, dtype=torch.float64)
    r = ode_log_likelihood(model, x, generator=generator)
    return {"ode_nll_nats": r["nll_nats"], "ode_nll_nats_se": r["nll_nats_se"], "ode_n": n}


def bench(name: str, n: int, floor_repeats: int, out: Path) -> dict:
    cfg = load_config(name, [f"train.threads={torch.get_num_threads()}"])  # --threads, not the policy's
    trainer = fit(cfg, progress=False)
    start = time.perf_counter()
    traj = draw_samples(trainer.sampling_model, n, cfg.sample.sampler, cfg.sample.steps, cfg.sample.eta,
                        torch.Generator().manual_seed(1), keep_trajectory=True)  # (T + 1, n, 2)
    sample_seconds = time.perf_counter() - start
    traj = trainer.data.to_data_units(traj)
    dist = trainer.data.dist
    g = torch.Generator().manual_seed(2)
    r = {"dataset": name, "train_seconds": round(trainer.train_seconds, 1), "iters": trainer.step,
         "sample_seconds": round(sample_seconds, 1),
         **against_distribution(dist, traj[0], g, n_ref=100_000, floor_repeats=floor_repeats)}
    if hasattr(dist, "log_prob") and hasattr(trainer.sampling_model, "eps_continuous"):
        r.update(model_nll(trainer.sampling_model, dist, g))
    r["sliced_w1_ratio"] = r["sliced_w1"] / r["sliced_w1_noise_floor"]
    r["pass"] = bool(r["sliced_w1_ratio"] <= 2.0)
    fig_dir = ensure_writable_dir(out / name)
    write_figures(fig_dir, dist.sample(5000, g), traj[:, :5000], dist=dist, title=name)  # 5000 points each
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--datasets", nargs="+", default=["moons", "eight_gaussians"])
    ap.add_argument("--n", type=int, default=10_000, help="samples per set (default 10000)")
    ap.add_argument("--floor-repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "benchmarks" / "data2d")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    load_before = os.getloadavg()[0]
    results = [bench(name, a.n, a.floor_repeats, a.out) for name in a.datasets]
    print(f"2-D benchmark, {a.n} samples each, {a.threads} thread(s); load average {load_before:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end")
    print(f"{'dataset':16} {'train s':>8} {'iters':>6} {'sliced W1':>10} {'floor (sd)':>16} {'ratio':>6} "
          f"{'MMD':>8} {'floor':>8} {'-E log q':>16} {'entropy':>16} {'ODE NLL':>16}  pass")
    for r in results:
        pm = lambda k: (f"{r[k]:.4f}+-{r[k + '_se']:.4f}" if k in r else "-")  # noqa: E731
        floor = f"{r['sliced_w1_noise_floor']:.4f} ({r['sliced_w1_noise_floor_sd']:.4f})"
        ent = f"{r['nll_nats_floor']:.4f}+-{r['nll_nats_floor_se']:.4f}" if "nll_nats_floor" in r else "-"
        print(f"{r['dataset']:16} {r['train_seconds']:8.1f} {r['iters']:6d} {r['sliced_w1']:10.4f} {floor:>16} "
              f"{r['sliced_w1_ratio']:6.2f} {r['mmd']:8.4f} {r['mmd_noise_floor']:8.4f} {pm('nll_nats'):>16} "
              f"{ent:>16} {pm('ode_nll_nats'):>16}  {'yes' if r['pass'] else 'NO'}")
    atomic_write_json(ensure_writable_dir(a.out) / "results.json", results)
    print(f"figures and results.json in {a.out}")
    return 0 if all(r["pass"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())

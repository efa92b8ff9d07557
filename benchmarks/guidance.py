"""Classifier-free guidance on the seed mixture with component labels (issue 14), against the exact oracle.

    python benchmarks/guidance.py [--seeds 0,1,2,3,4] [--n 10000] [--sampler ancestral] [--steps 0]
                                  [--weights 0,1,3] [--out benchmarks/results/guidance.json]

For each seed, trains the recommended recipe (``default`` config) with ``data.labels = true`` and
``train.label_dropout = 0.1``, then per class and guidance weight w draws ``n`` samples of the model and
of the exact guided oracle (``LabelledMixtureOracle`` under ``Guided``) with the same sampler, and
reports each one's W1 to the true conditional N(mu_c, 1) beside the floor (``n`` true draws), and the
fraction whose exact posterior q(c | x) picks c. The check (issue 14): at w = 0, per-class W1 <= 0.10
and accuracy >= 0.98 for both classes on every seed. The w sweep shows model and oracle side by side:
the oracle's distance at w > 0 is what guidance itself does to the distribution.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from ddpmlab.config.schema import load_config
from ddpmlab.evaluation.guidance import evaluate_classes
from ddpmlab.workflows.pipeline import fit

W1_MAX, ACC_MIN = 0.10, 0.98


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2,3,4")
    p.add_argument("--n", type=int, default=10_000, help="samples per class and weight")
    p.add_argument("--sampler", default="ancestral")
    p.add_argument("--steps", type=int, default=0)
    p.add_argument("--weights", default="0,1,3")
    p.add_argument("--label-dropout", type=float, default=0.1)
    p.add_argument("--out", default=None, help="write the results as JSON here")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    weights = [float(w) for w in args.weights.split(",")]
    results, ok = {}, True
    load_before = os.getloadavg()
    start = time.perf_counter()
    for seed in (int(s) for s in args.seeds.split(",")):
        cfg = load_config("default", ["data.labels=true", f"train.label_dropout={args.label_dropout}",
                                      f"train.seed={seed}"])
        t0 = time.perf_counter()
        trainer = fit(cfg, progress=False)
        train_s = time.perf_counter() - t0
        gen = torch.Generator().manual_seed(1000 + seed)
        per_w = {w: evaluate_classes(trainer.sampling_model, trainer.data.dist, [0, 1], w, args.n, gen,
                                     args.sampler, args.steps) for w in weights}
        passed = all(r["model"]["w1"] <= W1_MAX and r["model"]["accuracy"] >= ACC_MIN
                     for r in per_w[weights[0]].values()) if weights[0] == 0 else None
        ok = ok and bool(passed)
        results[seed] = {"train_seconds": round(train_s, 1), "pass_w0": passed,
                         "weights": {str(w): {str(c): r for c, r in rep.items()} for w, rep in per_w.items()}}
        verdict = "" if passed is None else f", w = 0 check {'PASS' if passed else 'FAIL'}"
        print(f"seed {seed} (trained in {train_s:.1f} s){verdict}")
        print(f"  {'w':>4} {'class':>5}  {'W1 model':>9} {'W1 oracle':>9} {'floor':>7}  {'acc model':>9} "
              f"{'acc oracle':>10}  {'mean/std model':>15} {'mean/std oracle':>15}")
        for w, rep in per_w.items():
            for c, r in rep.items():
                m, o = r["model"], r["oracle"]
                print(f"  {w:4g} {c:5d}  {m['w1']:9.4f} {o['w1']:9.4f} {r['floor']:7.4f}  {m['accuracy']:9.4f} "
                      f"{o['accuracy']:10.4f}  {m['mean']:7.3f}/{m['std']:.3f} {o['mean']:7.3f}/{o['std']:.3f}")
    summary = {"all_seeds_pass_w0": ok, "seconds": round(time.perf_counter() - start, 1),
               "loadavg_before": load_before, "loadavg_after": os.getloadavg(), "sampler": args.sampler,
               "steps": args.steps, "n_per_class": args.n, "label_dropout": args.label_dropout, "seeds": results}
    print(f"w = 0: per-class W1 <= {W1_MAX} and accuracy >= {ACC_MIN} on every seed: {'PASS' if ok else 'FAIL'}; "
          f"{summary['seconds']} s; load average before {load_before[0]:.2f}, after {summary['loadavg_after'][0]:.2f}")
    if args.out:
        Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")


if __name__ == "__main__":
    main()

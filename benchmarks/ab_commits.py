"""Step time of this checkout against another commit, in one run: the seed's faithful recipe (the
tutorial config) and the recommended default recipe, trained through each commit's own ``fit``.

    python benchmarks/ab_commits.py --base 5096d30 [--rounds 5] [--tutorial-iters 300] [--default-iters 400]
        [--default-set model.width=64 ...] [--also flow:400 ...] [--results-seeds 0-4] [--out results/ab.json]

Each measurement is a fresh subprocess with PYTHONPATH on that commit's ``src`` (exported with
``git archive``), one intra-op thread, alternating base / current so that a change in the host's speed
hits both; the best of the rounds is compared. "current" is this working tree's ``src``, committed or
not. Prints ms per step for each side and the ratio current / base (< 1.05 is "within 5%"), with the
load average; beside the wall time, the child's CPU time per step (``time.process_time``), which a
busy host inflates less (time spent waiting for a core is not counted): on a shared machine, read
the CPU ratio for direction only, and quote wall times measured alone.

``--results-seeds 0-4``: whether both sides give the same results. Each side trains the default recipe
(its full ``train.iters``) with each seed in a fresh subprocess and hands back its loss per step and its
EMA weights; they are compared bit for bit, and W1 of 10,000 ancestral samples of each side's weights
(drawn by this checkout's sampler, the same seed for both) is printed beside the other.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
from io import BytesIO
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality_suite import parse_ints  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time, torch
torch.set_num_threads(1)
try:
    from ddpmlab.workflows.pipeline import fit
except ImportError:
    from ddpmlab.pipeline import fit
from ddpmlab.config.schema import load_config  # in every commit since the A/B benchmark
name, iters, extra = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
cfg = load_config(name, extra + [f"train.iters={iters}"])
fit(load_config(name, extra + ["train.iters=20"]), progress=False)  # warm-up: first-call costs
start, cpu = time.perf_counter(), time.process_time()
fit(cfg, progress=False)
print(json.dumps({"ms_per_step": 1000 * (time.perf_counter() - start) / iters,
                  "cpu_ms_per_step": 1000 * (time.process_time() - cpu) / iters}))
"""


RESULTS_CHILD = r"""
import sys, torch
from safetensors.torch import save_file
torch.set_num_threads(1)
try:
    from ddpmlab.workflows.pipeline import fit
except ImportError:
    from ddpmlab.pipeline import fit
from ddpmlab.config.schema import load_config
seed, out = sys.argv[1], sys.argv[2]
trainer = fit(load_config("default", [f"train.seed={seed}"]), progress=False)
state = {k: v.detach().clone().contiguous() for k, v in trainer.sampling_model.state_dict().items()}
state["loss_history"] = torch.tensor(trainer.loss_history, dtype=torch.float64)
save_file(state, out)
"""


def export_src(commit: str, dest: Path) -> Path:
    data = subprocess.run(["git", "archive", commit, "src"], cwd=ROOT, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")
    return dest / "src"


def measure(src: Path, config: str, iters: int, overrides=()) -> dict:
    """{"ms_per_step": wall, "cpu_ms_per_step": CPU} of one fresh child process."""
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", CHILD, config, str(iters), *overrides], env=env, capture_output=True, text=True,
                         cwd=tempfile.gettempdir())
    if out.returncode:
        sys.exit(f"ab_commits: the {config} run on {src} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def train_results(src: Path, seed: int, out: Path) -> dict:
    """The default recipe trained with ``seed`` by the code in ``src``: its losses and EMA weights."""
    from safetensors.torch import load_file
    env = {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": "1"}
    run = subprocess.run([sys.executable, "-c", RESULTS_CHILD, str(seed), str(out)], env=env, capture_output=True,
                         text=True, cwd=tempfile.gettempdir())
    if run.returncode:
        sys.exit(f"ab_commits: training seed {seed} on {src} failed:\n{run.stderr[-2000:]}")
    return load_file(out)


def ancestral_w1(state: dict, seed: int) -> float:
    """W1 to the seed's mixture of 10,000 ancestral samples of these weights, by this checkout's code."""
    from ddpmlab.config.build import build_model
    from ddpmlab.config.schema import load_config
    from ddpmlab.data.base import make_training_data
    from ddpmlab.evaluation.metrics import w1_against
    from ddpmlab.sampling.api import draw_samples
    cfg = load_config("default", [f"train.seed={seed}"])
    data = make_training_data(cfg.data, torch.Generator().manual_seed(seed))
    model = build_model(cfg, data.data_shape)
    model.load_state_dict({k: v for k, v in state.items() if k != "loss_history"})
    gen = torch.Generator().manual_seed(1000 + seed)
    return float(w1_against(data.dist, draw_samples(model, 10_000, "ancestral", generator=gen), gen)["w1"])


def compare_results(sides: dict, seeds: list[int], tmp: Path) -> dict:
    rows = {}
    for seed in seeds:
        got = {side: train_results(src, seed, tmp / f"{side}_{seed}.safetensors") for side, src in sides.items()}
        base, cur = got["base"], got["current"]
        same_losses = torch.equal(base["loss_history"], cur["loss_history"])
        loss_gap = float((base["loss_history"] - cur["loss_history"]).abs().max())
        same_keys = base.keys() == cur.keys()
        same_weights = same_keys and all(torch.equal(base[k], cur[k]) for k in base)
        w1 = {side: ancestral_w1(state, seed) if same_keys else None for side, state in got.items()}
        rows[seed] = {"losses_bit_for_bit": same_losses, "max_loss_difference": loss_gap,
                      "weights_bit_for_bit": same_weights, "w1": w1}
        print(f"seed {seed}: losses equal {same_losses} (max difference {loss_gap:.3g}), EMA weights equal "
              f"{same_weights}, W1 base {w1['base']}, current {w1['current']}", flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="the commit to compare against")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--tutorial-iters", type=int, default=300)
    p.add_argument("--default-iters", type=int, default=400)
    p.add_argument("--default-set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="overrides of the default recipe on both sides (the same work when the default changed)")
    p.add_argument("--also", action="append", default=[], metavar="CONFIG:ITERS",
                   help="another shipped config to time, with its training steps (e.g. flow:400)")
    p.add_argument("--results-seeds", default=None, metavar="0-4",
                   help="also train the default recipe with these seeds on both sides and compare the results")
    p.add_argument("--out", default=None, help="also write the JSON result to this file")
    args = p.parse_args()
    configs = [("tutorial", args.tutorial_iters, []), ("default", args.default_iters, args.default_set)]
    configs += [(name, int(iters), []) for name, _, iters in (a.partition(":") for a in args.also)]
    print("load average before:", os.getloadavg())
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"base": export_src(args.base, Path(tmp)), "current": ROOT / "src"}
        results = {}
        for config, iters, extra in configs:
            runs = {side: [] for side in sides}
            for _ in range(args.rounds):
                for side, src in sides.items():
                    runs[side].append(measure(src, config, iters, extra))
            times = {side: [r["ms_per_step"] for r in v] for side, v in runs.items()}
            cpu = {side: [r["cpu_ms_per_step"] for r in v] for side, v in runs.items()}
            best = {side: min(v) for side, v in times.items()}
            best_cpu = {side: min(v) for side, v in cpu.items()}
            results[config] = {"ms_per_step": best, "all": times, "ratio_current_over_base":
                               round(best["current"] / best["base"], 4), "cpu_ms_per_step": best_cpu,
                               "all_cpu": cpu, "cpu_ratio_current_over_base":
                               round(best_cpu["current"] / best_cpu["base"], 4)}
            print(f"{config}: base {best['base']:.3f} ms/step, current {best['current']:.3f} ms/step, "
                  f"ratio {best['current'] / best['base']:.3f}; CPU {best_cpu['base']:.3f} vs "
                  f"{best_cpu['current']:.3f} ms/step, ratio {best_cpu['current'] / best_cpu['base']:.3f} "
                  f"(best of {args.rounds}, 1 thread)", flush=True)
        if args.results_seeds:
            results["results"] = compare_results(sides, parse_ints(args.results_seeds), Path(tmp))
    print("load average after:", os.getloadavg())
    print(json.dumps({"base": args.base, **results}))
    if args.out:
        Path(args.out).write_text(json.dumps({"base": args.base, "load_average_after": os.getloadavg(), **results},
                                             indent=1) + "\n")


if __name__ == "__main__":
    main()

"""8x8 digits with the small U-Net: trained within 15 minutes on 2 CPU cores, Frechet distance within 3x
the train/held-out floor, every class present.

    python benchmarks/digits.py [--threads 1] [--out DIR] [--set section.key=value ...]

Trains ``configs/digits.toml`` once (timed), draws as many samples as there are training images
(ancestral, the config's respaced steps), and reports the Frechet distance to the held-out images in the
features of the project's digit classifier (trained on first use and cached, see
``ddpmlab.evaluation.digit_classifier``) beside the floor (training images to held-out images), the
class histogram of the samples, and sliced W1 / MMD to the held-out images beside the same floor.
Writes samples.png (100 samples), reverse.gif, results.json and the run (``run/``) to ``--out``.
Exit code 0 when all three criteria hold.
"""
from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from ddpmlab.config.schema import load_config
from ddpmlab.core.fileio import atomic_write_json, ensure_writable_dir
from ddpmlab.data.digits import digits_split
from ddpmlab.evaluation.digit_classifier import load_classifier
from ddpmlab.evaluation.fid import evaluate_digit_samples
from ddpmlab.evaluation.metrics_nd import against_heldout
from ddpmlab.figures.plots2d import image_grid, reverse_gif
from ddpmlab.runs.format import save_run
from ddpmlab.sampling.api import draw_samples
from ddpmlab.workflows.pipeline import fit

ROOT = Path(__file__).resolve().parents[1]
BUDGET_SECONDS = 15 * 60


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (default 1: the machine is shared)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "benchmarks" / "digits")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = ensure_writable_dir(a.out)
    load_before = os.getloadavg()
    wall = time.perf_counter()

    start = time.perf_counter()
    classifier, accuracy = load_classifier()
    classifier_seconds = time.perf_counter() - start

    cfg = load_config("digits", [f"train.threads={a.threads}", *a.set])  # --threads, not the policy's choice
    trainer = fit(cfg, progress=False)
    model = trainer.sampling_model
    save_run(ensure_writable_dir(out / "run"), cfg, trainer.data.describe(), trainer.model,
             trainer.ema.shadow if trainer.ema is not None else None,
             extra={"summary": {"iters": trainer.step, "train_seconds": round(trainer.train_seconds, 1)}})

    start = time.perf_counter()
    samples = draw_samples(model, cfg.sample.n, cfg.sample.sampler, cfg.sample.steps, cfg.sample.eta,
                           torch.Generator().manual_seed(1))  # (n, 1, 8, 8)
    sample_seconds = time.perf_counter() - start

    fd = evaluate_digit_samples(samples, classifier)
    train, _ = digits_split("train")
    held, _ = digits_split("heldout")
    nd = against_heldout(samples.clamp(-1, 1), train, held, torch.Generator().manual_seed(2))
    traj = draw_samples(model, 64, cfg.sample.sampler, cfg.sample.steps, cfg.sample.eta,
                        torch.Generator().manual_seed(3), keep_trajectory=True)
    image_grid(samples[:100], out / "samples.png", nrow=10, title="digits: 100 samples")
    image_grid(train[:100], out / "training_images.png", nrow=10, title="digits: 100 training images")
    reverse_gif(traj, out / "reverse.gif", title="digits")
    total = time.perf_counter() - wall

    result = {"train_seconds": round(trainer.train_seconds, 1), "iters": trainer.step,
              "sample_seconds": round(sample_seconds, 1), "classifier_seconds": round(classifier_seconds, 1),
              "total_seconds": round(total, 1), "threads": a.threads,
              "load_average_start": [round(v, 2) for v in load_before],
              "load_average_end": [round(v, 2) for v in os.getloadavg()],
              "classifier_heldout_accuracy": accuracy, **{k: v for k, v in fd.items() if k != "classifier_heldout_accuracy"},
              "fd_ratio": fd["fd"] / fd["fd_floor"], "heldout_metrics": nd}
    checks = {"time": total <= BUDGET_SECONDS, "fd": result["fd_ratio"] <= 3.0, "classes": fd["classes_present"] == 10}
    result["pass"] = checks
    atomic_write_json(out / "results.json", result)

    print(f"digits benchmark, {a.threads} thread(s); load average {load_before[0]:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end (2 cores)")
    print(f"classifier: held-out accuracy {accuracy:.4f} ({classifier_seconds:.1f} s, cached after the first run)")
    print(f"training:   {trainer.step} steps in {trainer.train_seconds:.1f} s; sampling {cfg.sample.n} in "
          f"{sample_seconds:.1f} s; total {total:.1f} s (budget {BUDGET_SECONDS} s)")
    print(f"Frechet distance (samples vs held-out): {fd['fd']:.3f}; floor (train vs held-out): {fd['fd_floor']:.3f}; "
          f"ratio {result['fd_ratio']:.2f} (samples vs train: {fd['fd_to_train']:.3f})")
    print(f"class histogram of {fd['n_samples']} samples: {fd['class_histogram']} ({fd['classes_present']}/10 present)")
    print(f"sliced W1 to held-out: {nd['sliced_w1']:.4f} (floor {nd['sliced_w1_noise_floor']:.4f}); "
          f"MMD: {nd['mmd']:.4f} (floor {nd['mmd_noise_floor']:.4f})")
    print(f"checks: {json.dumps(checks)}")
    print(f"sample grid: {out / 'samples.png'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

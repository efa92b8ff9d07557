"""Class-conditional digits with classifier-free guidance (issue 14): a conditional U-Net trained with
label dropout, then at w = 2 the project's digit classifier must agree with the requested class on
>= 90% of 1000 samples (100 per digit), all within 15 CPU minutes including training.

    python benchmarks/guidance_digits.py [--threads 1] [--weights 0,1,2,4] [--out DIR] [--set section.key=value ...]

Trains ``configs/digits.toml`` with ``data.labels = true`` and ``train.label_dropout = 0.1`` (timed),
draws 100 samples per digit at w = 2 (ancestral, the config's respaced steps; training and these samples
are the timed part) and ``--per-class-sweep`` per digit at the other weights, and reports per digit the
classifier's agreement and the Frechet distance in its features to the held-out images of
that digit beside the floor (that digit's training images). Writes ``classes.png`` (one row per digit,
the weights side by side) and ``results.json`` to ``--out``; exit code 0 when both checks hold.
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
from ddpmlab.evaluation.digit_classifier import load_classifier
from ddpmlab.evaluation.guidance import digit_classes
from ddpmlab.figures.guidance import class_image_rows
from ddpmlab.models.guidance import Guided
from ddpmlab.sampling.api import draw_samples
from ddpmlab.workflows.pipeline import fit

ROOT = Path(__file__).resolve().parents[1]
BUDGET_SECONDS, ACC_MIN, W_CHECK, PER_CLASS = 15 * 60, 0.90, 2.0, 100


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--weights", default="0,1,2,4")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "benchmarks" / "guidance_digits")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE")
    ap.add_argument("--per-class-sweep", type=int, default=20, help="samples per digit at the other weights")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    out = ensure_writable_dir(a.out)
    weights = sorted({float(w) for w in a.weights.split(",")} | {W_CHECK})
    load_before, wall = os.getloadavg(), time.perf_counter()
    classifier, _ = load_classifier()
    cfg = load_config("digits", ["data.labels=true", "train.label_dropout=0.1", *a.set])
    trainer = fit(cfg, progress=False)
    model, s = trainer.sampling_model, cfg.sample
    report, images, total = {}, {}, None
    for w in [W_CHECK] + [v for v in weights if v != W_CHECK]:  # the checked weight first, timed
        cond = torch.arange(10).repeat_interleave(PER_CLASS if w == W_CHECK else a.per_class_sweep)
        x = draw_samples(Guided(model, w), cond.numel(), s.sampler, s.steps, s.eta,
                         torch.Generator().manual_seed(1), cond=cond)  # (n, 1, 8, 8)
        by_class = {c: x[cond == c] for c in range(10)}
        images[w] = by_class
        report[w] = digit_classes(by_class, classifier)
        total = total if total is not None else time.perf_counter() - wall
    report = {w: report[w] for w in weights}
    images = {w: images[w] for w in weights}
    class_image_rows(images, out / "classes.png")
    acc = {w: sum(r["accuracy"] for r in rep.values()) / 10 for w, rep in report.items()}
    checks = {"accuracy_w2": acc[W_CHECK] >= ACC_MIN, "time": total <= BUDGET_SECONDS}
    atomic_write_json(out / "results.json", {
        "train_seconds": round(trainer.train_seconds, 1), "total_seconds": round(total, 1), "threads": a.threads,
        "load_average_start": load_before, "load_average_end": os.getloadavg(), "accuracy": acc,
        "per_class": {str(w): {str(c): r for c, r in rep.items()} for w, rep in report.items()}, "pass": checks})
    print(f"guided digits, {a.threads} thread(s); load average {load_before[0]:.1f} at start, "
          f"{os.getloadavg()[0]:.1f} at end; trained {trainer.step} steps in {trainer.train_seconds:.1f} s; "
          f"training + 1000 samples at w = {W_CHECK:g}: {total:.1f} s (budget {BUDGET_SECONDS} s)")
    for w, rep in report.items():
        per = " ".join(f"{c}:{r['accuracy']:.2f}" for c, r in rep.items())
        fd = " ".join(f"{c}:{r['fd']:.1f}/{r['fd_floor']:.1f}" for c, r in rep.items())
        print(f"w = {w:g}: classifier agrees on {acc[w]:.3f} ({per}); per-class FD / floor {fd}")
    print(f"checks: {json.dumps(checks)}; figure {out / 'classes.png'}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""The default and digits configs on a CUDA device beside this machine's CPU (issue 28, item 4).

    python benchmarks/gpu.py [--configs default digits] [--steps 100] [--samples 0] [--threads 1]
                             [--out benchmarks/results/gpu.md]

For each config and each device (``cpu``, and ``cuda`` when torch sees one), the trainer is built as the
CLI builds it (``Trainer.from_config`` with ``train.device`` set), a few steps warm it up, and then:

- **ms per training step**: the median of ``--steps`` steps, each timed alone (``torch.cuda.synchronize``
  around it on the GPU);
- **sampling**: the wall time of the config's sampler on its own step count for ``--samples`` samples
  (0: the config's ``sample.n``), the trained weights (the EMA's) as they are after these steps.

Each row shows the CPU / GPU ratio. Without a CUDA device it says so, measures the CPU alone and exits 0,
so the script runs anywhere. The load average is printed before and after; with ``--out`` the table is
written there (Markdown).
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from ddpmlab.config.schema import load_config
from ddpmlab.core.fileio import atomic_write_bytes, ensure_writable_dir
from ddpmlab.core.threads import using_threads
from ddpmlab.sampling.api import sample
from ddpmlab.training.trainer import Trainer


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def measure(name: str, device: str, steps: int, samples: int) -> dict:
    """ms per training step (median) and seconds to sample, for config ``name`` on ``device``."""
    cfg = load_config(name, [f"train.device='{device}'", f"train.iters={steps + 10}"])
    trainer = Trainer.from_config(cfg)
    for _ in range(10):
        trainer.train_step()
    times = []
    for _ in range(steps):
        _sync(device)
        start = time.perf_counter()
        trainer.train_step()
        _sync(device)
        times.append(time.perf_counter() - start)
    trainer.release_parameters()
    n = samples or cfg.sample.n
    generator = torch.Generator().manual_seed(0)
    _sync(device)
    start = time.perf_counter()
    x = sample(trainer.sampling_model, n, sampler=cfg.sample.sampler, steps=cfg.sample.steps, generator=generator)
    _sync(device)
    seconds = time.perf_counter() - start
    if not bool(torch.isfinite(x).all()):
        raise SystemExit(f"{name} on {device}: the samples are not finite")
    steps_run = cfg.sample.steps or trainer.model.schedule.T  # 0: every step
    return {"step_ms": 1000 * statistics.median(times), "sample_s": seconds, "n": n,
            "sampler": f"{cfg.sample.sampler}, {steps_run} steps"}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=["default", "digits"])
    p.add_argument("--steps", type=int, default=100, help="timed training steps per config and device")
    p.add_argument("--samples", type=int, default=0, help="samples drawn (0: the config's sample.n)")
    p.add_argument("--threads", type=int, default=1, help="intra-op threads on the CPU side")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    args = p.parse_args()
    cuda = torch.cuda.is_available()
    devices = ["cpu"] + (["cuda"] if cuda else [])
    print(f"load average before: {os.getloadavg()}")
    if cuda:
        print(f"CUDA device: {torch.cuda.get_device_name(0)}")
    else:
        print("no CUDA device on this machine: the CPU alone is measured")
    rows = []
    with using_threads(args.threads):
        for name in args.configs:
            got = {d: measure(name, d, args.steps, args.samples) for d in devices}
            rows.append((name, got))
    lines = ["| config | device | ms per step | sampling (n, sampler) | CPU / GPU step | CPU / GPU sampling |",
             "|---|---|---|---|---|---|"]
    for name, got in rows:
        for d, r in got.items():
            ratio = ("", "")
            if d == "cuda":
                ratio = (f"{got['cpu']['step_ms'] / r['step_ms']:.2f}x", f"{got['cpu']['sample_s'] / r['sample_s']:.2f}x")
            lines.append(f"| {name} | {d} | {r['step_ms']:.3f} | {r['sample_s']:.2f} s ({r['n']}, {r['sampler']}) "
                         f"| {ratio[0]} | {ratio[1]} |")
    table = "\n".join(lines)
    print(table)
    print(f"load average after: {os.getloadavg()}")
    if args.out is not None:
        ensure_writable_dir(args.out.parent)
        head = (f"# CPU ({args.threads} thread{'s' if args.threads != 1 else ''}) beside "
                f"{torch.cuda.get_device_name(0) if cuda else 'no CUDA device'}\n\n"
                f"`python benchmarks/gpu.py --steps {args.steps}`\n\n")
        atomic_write_bytes(args.out, (head + table + "\n").encode())


if __name__ == "__main__":
    main()

"""What the commands do, as functions: train a run from a config, sample from a finished run."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch

from ddpmlab.training import distributed
from ddpmlab.config import Config
from ddpmlab.core.fileio import atomic_write_bytes, ensure_writable_dir
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.runs.checkpoint import checkpoint_dirs, latest_checkpoint, read_checkpoint
from ddpmlab.runs.format import RUN_FILE, load_run
from ddpmlab.sampling import draw_samples
from ddpmlab.training.trainer import Trainer


def train_run(cfg: Config, out, progress: bool = True, resume: bool = False) -> dict:
    """Train ``cfg`` into the run directory ``out``: ``metrics.csv`` and checkpoints while training, the
    finished run (run.json, model.safetensors, config.toml, metrics.json) at the end. ``resume``
    continues from ``out``'s latest checkpoint (``cfg`` may differ from its config only in
    ``checkpoint.RESUMABLE_KEYS``). Under torchrun every rank calls this and rank 0 writes.

    Raises ``TrainingInterrupted`` after SIGINT / SIGTERM (checkpoint written) and ``NonFiniteLoss``
    (nothing written, earlier checkpoints intact)."""
    ctx = distributed.setup(cfg.train.device)
    try:
        return _train_run(cfg, Path(out), progress, resume, ctx)
    finally:
        distributed.teardown(ctx)


def _train_run(cfg: Config, out: Path, progress: bool, resume: bool, ctx: distributed.DistContext) -> dict:
    checkpoint = None
    if resume:
        path = latest_checkpoint(out)
        if path is None:
            raise DDPMLabError(f"{str(out)!r} holds no checkpoint to resume from")
        checkpoint = read_checkpoint(path)
        if checkpoint.step > cfg.train.iters or ((out / RUN_FILE).exists() and checkpoint.step == cfg.train.iters):
            raise DDPMLabError(f"{path} is at step {checkpoint.step} and train.iters = {cfg.train.iters}: nothing "
                               f"to train; to train further pass --set train.iters=N with N > {checkpoint.step}")
    elif (out / RUN_FILE).exists():
        raise DDPMLabError(f"{str(out)!r} already holds a finished run; choose another --out")
    elif checkpoint_dirs(out):
        raise DDPMLabError(f"{str(out)!r} holds checkpoints of an unfinished run; continue it with "
                           f"--resume {out}, or choose another --out")
    if ctx.is_main:
        ensure_writable_dir(out)
    trainer = Trainer.from_config(cfg, ctx, checkpoint, out=out)
    trainer.run(progress=progress)
    return trainer.save(extra={"resumed_from_step": checkpoint.step if checkpoint is not None else None})


def fit(cfg: Config, progress: bool = True) -> Trainer:
    """Build the data and trainer of ``cfg`` and train it in this process (nothing is written)."""
    trainer = Trainer.from_config(cfg)
    trainer.run(progress=progress)
    return trainer


def sample_to_file(run_dir: Path, n: int, out: Path, sampler=None, steps=None, eta=None, seed: int = 0,
                   ode_solver=None, trust_code: bool = False, time_shift=None):
    """Sample a finished run into ``out`` (.npy, data units). Returns the array's shape."""
    run = load_run(run_dir, trust_code=trust_code)
    s = run.cfg.sample
    ensure_writable_dir(out.parent if str(out.parent) else Path("."))
    generator = torch.Generator().manual_seed(seed)
    x = draw_samples(run.model, n, sampler or s.sampler, s.steps if steps is None else steps,
                     s.eta if eta is None else eta, generator, ode_solver=ode_solver or s.ode_solver,
                     time_shift=s.time_shift if time_shift is None else time_shift)
    arr = run.to_data_units(x).numpy()
    buf = io.BytesIO()
    np.save(buf, arr)
    atomic_write_bytes(out, buf.getvalue())
    return arr.shape

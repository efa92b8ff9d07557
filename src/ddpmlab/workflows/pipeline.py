"""What the commands do, as functions: train a run from a config, sample from a finished run."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch

from ddpmlab.config.checks import log_alpha_bar_T, prior_check_applies, prior_mismatch
from ddpmlab.config.sections import Config
from ddpmlab.core.fileio import atomic_write_npy, ensure_writable_dir
from ddpmlab.core.utils import DDPMLabError, DDPMLabWarning, NonFiniteError
from ddpmlab.evaluation.finished import run_range
from ddpmlab.evaluation.range_check import warn_out_of_range
from ddpmlab.runs.checkpoint import checkpoint_dirs
from ddpmlab.runs.format import RUN_FILE, load_run
from ddpmlab.runs.resume import resumable_checkpoint
from ddpmlab.sampling.api import draw_samples
from ddpmlab.training import distributed
from ddpmlab.training.trainer import Trainer
from ddpmlab.workflows.conditional import class_labels, guided_model, resolve_classes
from ddpmlab.workflows.threads import model_threads


def train_run(cfg: Config, out, progress: bool = True, resume: bool = False, trust_code: bool = False,
              callbacks=()) -> dict:
    """Train ``cfg`` into the run directory ``out``: ``metrics.csv`` and checkpoints while training, the
    finished run (run.json, model.safetensors, config.toml, metrics.json) at the end. ``resume``
    continues from ``out``'s latest checkpoint (``cfg`` may differ from its config only in
    ``checkpoint.RESUMABLE_KEYS``). A config naming your network class imports it only with
    ``trust_code``. The trainer runs ``callbacks`` (``ddpmlab.training.callbacks``). Under torchrun every
    rank calls this and rank 0 writes.

    Raises ``TrainingInterrupted`` after SIGINT / SIGTERM (checkpoint written) and ``NonFiniteLoss``
    (nothing written, earlier checkpoints intact)."""
    ctx = distributed.setup(cfg.train.device)
    try:
        return _train_run(cfg, Path(out), progress, resume, ctx, trust_code, callbacks)
    finally:
        distributed.teardown(ctx)


def _train_run(cfg: Config, out: Path, progress: bool, resume: bool, ctx: distributed.DistContext,
               trust_code: bool, callbacks) -> dict:
    checkpoint = None
    if resume:
        checkpoint = _resumable(out, ctx)
        path = checkpoint.path
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
    trainer = Trainer.from_config(cfg, ctx, checkpoint, out=out, trust_code=trust_code, callbacks=callbacks)
    if ctx.is_main:
        _warn_prior_mismatch(cfg, trainer)
    with model_threads(cfg.train.threads, trainer.model, training_rows(cfg, trainer)) as threads:
        trainer.run(progress=progress)
    # threads: the intra-op threads the run trained with (ddpmlab.core.threads)
    return trainer.save(extra={"resumed_from_step": checkpoint.step if checkpoint is not None else None,
                               "threads": threads})


def _resumable(out: Path, ctx: distributed.DistContext):
    """The newest intact checkpoint of ``out``; a damaged newer one skipped is one warning line."""
    checkpoint, skipped = resumable_checkpoint(out)
    if skipped and ctx.is_main:
        names = ", ".join(p.name for p, _ in skipped)
        warnings.warn(f"{names} unreadable ({skipped[0][1]}); resuming from {checkpoint.path.name}, the newest "
                      f"intact checkpoint (the damaged one is kept as {skipped[0][0].name}.unreadable)",
                      DDPMLabWarning, stacklevel=2)
    return checkpoint


def _warn_prior_mismatch(cfg: Config, trainer: Trainer) -> None:
    """One warning line when the training data leave x_T far from the N(0, I) prior (see
    ``config.checks.prior_mismatch``)."""
    if not prior_check_applies(cfg):
        return
    mean, std = trainer.data.moments(cfg.train.seed)
    text = prior_mismatch(cfg, mean, std, log_alpha_bar_T(cfg))
    if text:
        warnings.warn(text, DDPMLabWarning, stacklevel=2)


def _refuse_non_finite(x: torch.Tensor, sampler: str) -> None:
    """Samples holding NaN or infinity are never written (exit 3, one line)."""
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        raise NonFiniteError(f"the {sampler} sampler produced {int(bad.reshape(len(x), -1).any(1).sum())} of "
                             f"{len(x)} samples with NaN or infinity; nothing written (the run's weights or its "
                             f"schedule are broken)")


def fit(cfg: Config, progress: bool = True, trust_code: bool = False) -> Trainer:
    """Build the data and trainer of ``cfg`` and train it in this process (nothing is written), with the
    thread policy's intra-op thread count (``cfg.train.threads``; restored after). A config naming your
    network class imports it only with ``trust_code``."""
    trainer = Trainer.from_config(cfg, trust_code=trust_code)
    with model_threads(cfg.train.threads, trainer.model, training_rows(cfg, trainer)):
        trainer.run(progress=progress)
    return trainer


def training_rows(cfg: Config, trainer: Trainer) -> int:
    """Examples per network call of one training step in this process."""
    if cfg.train.batch_size > 0:
        return max(1, cfg.train.batch_size // trainer.ctx.world_size)
    return trainer.data.train.shape[0] // trainer.ctx.world_size


def sample_to_file(run_dir: Path, n: int, out: Path, sampler=None, steps=None, eta=None, seed: int = 0,
                   ode_solver=None, trust_code: bool = False, threads: int = 0, classes: str | None = None,
                   guidance: float = 0.0, time_shift=None, grid=None):
    """Sample a finished run into ``out`` (.npy, data units), with ``threads`` intra-op threads (0: the
    thread policy's choice). Returns the array's shape. With ``classes`` (``"0,2"`` or the run's label
    values) ``n`` samples per class, in that order, guided at weight ``guidance`` (classifier-free
    guidance; 0 = the plain conditional model)."""
    run = load_run(run_dir, trust_code=trust_code)
    s = run.cfg.sample
    wanted = resolve_classes(classes, run) if classes is not None else None
    model = guided_model(run, wanted, guidance)
    cond = class_labels(wanted, n)
    ensure_writable_dir(out.parent if str(out.parent) else Path("."))
    generator = torch.Generator().manual_seed(seed)
    sampler = sampler or s.sampler
    eta = recorded_option(s, "eta", eta, sampler)
    ode_solver = recorded_option(s, "ode_solver", ode_solver, sampler)
    with model_threads(threads, run.model, n):
        x = draw_samples(model, n * len(wanted or [0]), sampler, s.steps if steps is None else steps,
                         eta, generator, ode_solver=ode_solver, cond=cond,
                         time_shift=s.time_shift if time_shift is None else time_shift, grid=grid or s.grid)
    _refuse_non_finite(x, sampler)
    x = run.to_data_units(x)
    warn_out_of_range(run_range(run, x), f"samples of the {sampler} sampler")
    arr = x.numpy()
    atomic_write_npy(out, arr)
    return arr.shape


RECORDED_FOR = {"eta": "ddim", "ode_solver": "ode"}  # the sampler each [sample] option is documented for


def recorded_option(s, key: str, given, sampler: str):
    """The value of the sampler option ``key`` for ``sampler``: the one ``given`` on the command line, else
    the run's recorded ``sample.<key>`` when it was recorded for this sampler (the run's own
    ``sample.sampler``, or the sampler the key belongs to), else None (the sampler's own default)."""
    if given is not None:
        return given
    return getattr(s, key) if sampler in (s.sampler, RECORDED_FOR[key]) else None

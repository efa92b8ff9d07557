"""The training loop, top to bottom: batch, per-example objective, mean, step, EMA; metrics rows,
checkpoints, and a clean stop on SIGINT / SIGTERM or a non-finite loss.

``Trainer(model, objective, data, ...)`` takes your parts: any model of the contract (a
``DiffusionModel`` around your own ``nn.Module``, the seed's networks), any objective callable
``objective(model, x0, generator, cond) -> (B,)`` and a tensor (N, *dims) or ``TrainingData``;
``Trainer.from_config(cfg)`` builds them from a run config (what the CLI does).

Every random draw (data batches, t, noise) comes from one ``torch.Generator`` (``self.generator``); the
model is initialised under ``torch.manual_seed(seed)`` when built from a config. So one config and seed
give one result, and a checkpoint (``ddpmlab.training.state``) resumes bit for bit. Under torchrun every
rank runs this same loop with its own shard, generator and batch of ``batch_size / N`` examples
(``ddpmlab.training.distributed``), the loss goes through DistributedDataParallel, and only rank 0 writes.
"""
from __future__ import annotations

import contextlib
import math
import signal
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from ddpmlab.config.budget import resolve_iters
from ddpmlab.config.build import build_model
from ddpmlab.config.sections import Config, TrainConfig
from ddpmlab.core.fileio import atomic_write_json
from ddpmlab.core.utils import DDPMLabError, DDPMLabWarning
from ddpmlab.core.validate import check_count, check_generator, check_trainable, diagnosed
from ddpmlab.data.base import TrainingData, make_training_data
from ddpmlab.models.ema import EMA
from ddpmlab.models.guidance import drop_labels, num_classes_of
from ddpmlab.runs.checkpoint import RunWriter, latest_checkpoint
from ddpmlab.runs.format import check_saveable, describe_config, save_run
from ddpmlab.runs.resume import resumable_checkpoint
from ddpmlab.training.distributed import (DistContext, local_batch_size, rank_seed, resolve_device, shard,
                                          sum_over_ranks)
from ddpmlab.training.inputs import objective_of, train_options, training_data
from ddpmlab.training.teacher import attach_teacher
from ddpmlab.training.optimization import ObjectiveLoss, make_optimizer
from ddpmlab.training.run_directory import SUMMARY_FILE, RunDirectoryOwner
from ddpmlab.training.signals import NonFiniteLoss, TrainingInterrupted, stop_on_signals
from ddpmlab.training.state import CheckpointState


def _set_num_classes(cfg: Config, data: TrainingData) -> None:
    """A class-labelled data set makes the network class-conditional: model.num_classes from the data."""
    if data.num_classes and not cfg.model.num_classes:
        cfg.model.num_classes = data.num_classes
    elif data.num_classes > cfg.model.num_classes:
        raise DDPMLabError(f"the data have {data.num_classes} classes, more than model.num_classes = "
                           f"{cfg.model.num_classes}")


class Trainer(CheckpointState, RunDirectoryOwner):
    """Model, optimiser, EMA, objective and RNG of one run (one rank), and the loop that trains them.

    >>> trainer = Trainer(model, Simple(), x, out="runs/mine", ema_decay=0.995, checkpoint_every=100)
    >>> trainer.run(2000)      # checkpoints and metrics.csv in out; SIGINT/SIGTERM stop after a checkpoint
    >>> trainer.save()         # the finished run: run.json, model.safetensors, config.toml, metrics.json

    ``options`` are ``[train]`` config keys (``ddpmlab.config.sections.TrainConfig``); ``objective`` may also be
    a registered name ("simple", ...). ``data`` is a tensor or NumPy array (N, *dims) (converted to the
    model's dtype) or a ``TrainingData``. What does not fit is one line: data of another example shape,
    labels outside the model's classes or a model with nothing to train when the trainer is built; a
    network that cannot take the batch (another width, labels it has no argument for) at the first step.

    ``out`` is owned like ``ddpmlab train --out``'s (``ddpmlab.runs.ownership``): locked while the trainer
    writes it (``run``, ``save``), and only a new or empty directory, or the trainer's own, is written.
    ``resume=True`` continues the run in ``out`` from its newest intact checkpoint (the same model,
    objective, data and options); ``overwrite=True`` replaces the run in ``out`` (finished or not: its
    files are deleted at the trainer's first write). Any other run, and files ddpmlab did not write, are
    refused when the trainer is built.
    """

    def __init__(self, model: nn.Module, objective, data, *, out=None, resume: bool = False,
                 overwrite: bool = False, labels=None, callbacks=(), config: Config | None = None,
                 ctx: DistContext | None = None, generator: torch.Generator | None = None, checkpoint=None,
                 **options):
        # the objective's options are checked against it by objective_of (custom: not yet known here)
        t = train_options(options, config.train if config is not None else TrainConfig(objective="custom"), config)
        check_trainable(model)
        objective = objective_of(objective, t)
        self.data = training_data(data, labels, model)
        resolve_iters(t, self.data.data_shape)  # train.iters = "auto": the number for this data, recorded
        self.cfg = config if config is not None else describe_config(model, objective, self.data, t)
        if config is not None:  # a described config keeps the objective's name and options
            self.cfg.train = t
        self.ctx = ctx if ctx is not None else DistContext(device=resolve_device(t.device))
        self.out = Path(out) if out is not None else None
        self.overwrite, self.resumed = bool(overwrite), bool(resume) or checkpoint is not None
        if (resume or overwrite) and self.out is None:
            raise DDPMLabError(f"{'resume' if resume else 'overwrite'}=True is about the run in out=DIR; pass out")
        if overwrite and self.resumed:
            raise DDPMLabError("resume=True continues the run in out and overwrite=True replaces it; pass one")
        self._written: set[str] = set()  # the directories this trainer has written (its own runs)
        self.generator = check_generator(generator) or torch.Generator().manual_seed(t.seed)
        self.shard = shard(self.data, self.ctx)  # this rank's examples (all of them with one process)
        self.batch_size = local_batch_size(t.batch_size, self.data, self.ctx)
        self.model = model.to(self.ctx.device)
        if self.model.needs_data_moments:  # preconditioning: the same on every rank (all of the data, or its seed)
            self.model.set_data_moments(*self.data.moments(t.seed))
        self.optimizer = make_optimizer(list(self.model.parameters()), t, self.ctx)
        self.ema = EMA(self.model, t.ema_decay) if t.ema_decay > 0 else None
        self.objective = objective
        bind = getattr(objective, "bind", None)  # optional: an objective's set-up for this model
        if bind is not None:
            bind(self.model)
        self.callbacks = list(callbacks)
        self.step = 0
        self.loss_history: list[float] = []  # per step, averaged over ranks
        self.train_seconds = 0.0
        self.signal_received: int | None = None  # set by ``stop_on_signals``' handler
        self.stop_signal: int | None = None  # a signal some rank received, agreed by all ranks each step
        if self.out is not None:
            with self._claim(self.out, write=False):  # refused now rather than after training
                if resume and checkpoint is None:
                    checkpoint, skipped = resumable_checkpoint(self.out)  # the newest intact one
                    for path, why in skipped:
                        warnings.warn(f"{path.name} unreadable ({why}); resuming from {checkpoint.path.name}",
                                      DDPMLabWarning, stacklevel=2)
        if checkpoint is not None:
            self.load_state(checkpoint)
        loss = ObjectiveLoss(self.model, self.objective)
        if self.ctx.distributed:
            device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            loss = nn.parallel.DistributedDataParallel(loss, device_ids=device_ids)
        self.loss_fn = loss
        # loss and .grad in one pass without autograd (value_and_grad, None if it declines) where no graph is needed
        self._one_pass = None if self.ctx.distributed else getattr(self.objective, "value_and_grad", None)

    @classmethod
    def from_config(cls, cfg: Config, ctx: DistContext | None = None, checkpoint=None, out=None, net=None,
                    trust_code: bool = False, callbacks=()) -> "Trainer":
        """The data, generator, model, objective and Trainer of ``cfg`` for this process, continued from
        ``checkpoint``. ``net`` replaces the config's network with your own module; a config naming your
        class (``package.module:Class``) imports it only with ``trust_code=True``."""
        ctx = ctx if ctx is not None else DistContext(device=resolve_device(cfg.train.device))
        t = cfg.train
        if t.objective == "custom":
            raise DDPMLabError("train.objective = 'custom' records your own objective; pass it to Trainer(...)")
        generator = torch.Generator().manual_seed(t.seed)
        data = make_training_data(cfg.data, generator)  # the same training set on every rank
        _set_num_classes(cfg, data)
        if ctx.distributed:  # each rank its own batches, t and noise
            generator = torch.Generator().manual_seed(rank_seed(t.seed, ctx.rank))
        torch.manual_seed(t.seed)
        model = build_model(cfg, data.data_shape, trust_code=trust_code, net=net)
        objective = objective_of(t.objective, t)
        callbacks = (*callbacks, *attach_teacher(objective, cfg, trust_code))  # a teacher objective's teacher
        return cls(model, objective, data, out=out, config=cfg, ctx=ctx, generator=generator, checkpoint=checkpoint,
                   callbacks=callbacks)

    @property
    def sampling_model(self):
        """The EMA weights when kept, else the trained weights."""
        return self.ema.shadow if self.ema is not None else self.model

    def _hooks(self):
        return self.callbacks

    def learning_rate(self, step: int) -> float:
        """Linear warm-up, then constant or cosine decay to 0 at ``train.iters``."""
        t = self.cfg.train
        lr = t.lr * min(1.0, (step + 1) / t.warmup) if t.warmup else t.lr
        if t.lr_decay == "cosine" and t.iters > 0:
            lr *= 0.5 * (1 + math.cos(math.pi * min(step, t.iters) / t.iters))
        return lr

    def train_step(self) -> float:
        """One optimisation step; returns the loss (mean over ranks). A NaN or infinite loss on any rank
        raises ``NonFiniteLoss`` before the weights change."""
        t = self.cfg.train
        if t.warmup or t.lr_decay != "none":
            for group in self.optimizer.param_groups:
                group["lr"] = self.learning_rate(self.step)
        hooks = self._hooks()
        for h in hooks:
            h.on_step_start(self)
        x0, cond = self.shard.draw(self.batch_size, self.generator)  # (B / N, *dims), labels or None
        x0 = x0.to(self.ctx.device)
        cond = drop_labels(cond, t.label_dropout, num_classes_of(self.model), self.generator)  # classifier-free
        cond = cond.to(self.ctx.device) if cond is not None else None
        self.optimizer.zero_grad(set_to_none=True)  # (a FlatAdamW re-attaches its buffer here)
        one_pass = self._one_pass if cond is None and not hooks else None  # sets the gradients itself
        with diagnosed(self.model, x0, cond):  # a network that cannot take the batch: one line
            loss = one_pass(self.model, x0, self.generator) if one_pass is not None else None
            if loss is None:  # autograd's path
                one_pass = None
                loss = self.loss_fn(x0, self.generator, cond).mean()
        for h in hooks:
            loss = h.on_loss(self, loss)
        # every rank learns the mean loss and whether any rank got a stop signal, so all act alike
        got = self.signal_received
        loss_sum, n_sigint, n_sigterm = sum_over_ranks(
            [float(loss.detach()), got == signal.SIGINT, got == signal.SIGTERM], self.ctx)
        self.stop_signal = signal.SIGTERM if n_sigterm else signal.SIGINT if n_sigint else None
        mean_loss = loss_sum / self.ctx.world_size
        if not math.isfinite(mean_loss):
            raise NonFiniteLoss(self.step + 1, mean_loss)
        if one_pass is None:
            loss.backward()  # under DDP the gradients are averaged over ranks here
        for h in hooks:
            h.on_gradients(self, x0)
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        if self.ema is not None:  # one average of the optimiser's one buffer, where it has one
            self.ema.update(self.model, self.optimizer.flat if getattr(self.optimizer, "attached", False) else None)
        self.step += 1
        for h in hooks:
            h.on_step_end(self, mean_loss)
        return mean_loss

    def run(self, steps: int | None = None, progress: bool = True, writer: RunWriter | None = None) -> None:
        """Train until ``steps`` steps in total (default: ``train.iters``). Writing to ``out`` (or a given
        ``writer``): a metrics row per step, a checkpoint every ``checkpoint_every`` steps and at the end,
        and after SIGINT / SIGTERM a checkpoint, then ``TrainingInterrupted``. ``out`` is locked meanwhile."""
        steps = self.cfg.train.iters if steps is None else check_count(steps, "steps", minimum=0)
        if steps < self.step:
            raise DDPMLabError(f"run(steps) trains until step {steps} in all, but this trainer is already at step "
                               f"{self.step}")
        own = writer is None and self.out is not None
        with self._claim(self.out) if own else contextlib.nullcontext():
            if own:
                writer = RunWriter(self.out, self.cfg.train.keep_checkpoints, self.ctx.is_main, start_step=self.step)
            try:
                if writer is None:
                    self._loop(steps, progress, None)
                else:
                    with stop_on_signals(self):
                        self._loop(steps, progress, writer)
            except NonFiniteLoss as exc:
                last = latest_checkpoint(writer.run_dir) if writer is not None else None
                raise NonFiniteLoss(exc.step, exc.value, last, writer.run_dir if writer is not None else None) from None
            finally:
                self.release_parameters()
                if own:
                    writer.close()

    def release_parameters(self) -> None:
        """Give each parameter, and each of the EMA's, its own storage again (``FlatAdamW.detach``,
        ``EMA.release``; the next step re-attaches)."""
        detach = getattr(self.optimizer, "detach", None)
        if detach is not None:
            detach()
        if self.ema is not None:
            self.ema.release()

    def _loop(self, steps: int, progress: bool, writer: RunWriter | None) -> None:
        every = self.cfg.train.checkpoint_every
        start, seconds_before = time.perf_counter(), self.train_seconds
        bar = tqdm(total=steps, initial=self.step, desc="training", disable=not (progress and self.ctx.is_main),
                   mininterval=0.25, leave=False)
        try:
            while self.step < steps:
                loss = self.train_step()
                self.loss_history.append(loss)
                self.train_seconds = seconds_before + time.perf_counter() - start
                bar.update(1)
                if self.step % 20 == 0:
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if writer is None:
                    continue
                writer.log(self.step, loss, self.optimizer.param_groups[0]["lr"], self.train_seconds)
                if self.stop_signal is not None or (every and self.step % every == 0):
                    self.save_checkpoint(writer)
                if self.stop_signal is not None:
                    raise TrainingInterrupted(self.stop_signal, self.step, writer.last_saved, writer.run_dir)
            if writer is not None and writer.last_saved_step != self.step:
                self.save_checkpoint(writer)  # the last step's checkpoint
        finally:
            bar.close()
        for h in self._hooks():
            h.on_finish(self)

    def summary(self) -> dict:
        history = self.loss_history
        return {"iters": self.step, "train_seconds": round(self.train_seconds, 4),
                "final_loss": float(np.mean(history[-50:])) if history else None,
                "seed": self.cfg.train.seed, "world_size": self.ctx.world_size}

    def save(self, out=None, extra: dict | None = None) -> dict:
        """Write the finished run into ``out`` (default: the trainer's): run.json, model.safetensors (the
        trained and EMA weights), config.toml and metrics.json. Only the main rank writes, holding ``out``
        as ``run`` does (a directory of another run or of your own files is refused). Returns the summary."""
        out = Path(out) if out is not None else self.out
        if out is None:
            raise DDPMLabError("Trainer.save needs a directory: Trainer(..., out=DIR) or save(out=DIR)")
        summary = {**self.summary(), **(extra or {})}
        self.release_parameters()
        if self.ctx.is_main:
            check_saveable(self.cfg, self.model)  # before the claim, which may delete an old run (overwrite)
            with self._claim(out):
                save_run(out, self.cfg, self.data.describe(), self.model,
                         self.ema.shadow if self.ema is not None else None, extra={"summary": summary},
                         data=self.data)
                atomic_write_json(out / SUMMARY_FILE, summary)
        return summary

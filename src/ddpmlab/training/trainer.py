"""The training loop, top to bottom: batch, per-example objective, mean, step, EMA; metrics rows,
checkpoints, and a clean stop on SIGINT / SIGTERM or a non-finite loss.

Every random draw (data batches, t, noise) comes from one ``torch.Generator`` (``self.generator``); the
model is initialised under ``torch.manual_seed(seed)``. So one config and seed give one result, and a
checkpoint holding the weights, EMA, AdamW moments and step counts, both RNG states, the importance
sampler's history and the step resumes bit for bit. Under torchrun every rank runs this same loop with
its own shard, generator and batch of ``batch_size / N`` examples (``ddpmlab.training.distributed``), the loss
goes through DistributedDataParallel, and only rank 0 writes.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import save as st_save
from torch import nn
from tqdm import tqdm

from ddpmlab.config.build import build_model
from ddpmlab.runs.checkpoint import META_FILE, Checkpoint, RunWriter, check_resume_config, check_tensors
from ddpmlab.config import Config
from ddpmlab.data import TrainingData, make_training_data
from ddpmlab.training.distributed import (DistContext, barrier, gather, local_batch_size, rank_seed, resolve_device, shard,
                                 sum_over_ranks)
from ddpmlab.core.fileio import atomic_write_bytes
from ddpmlab.models.ema import EMA
from ddpmlab.objectives.losses import make_objective
from ddpmlab.objectives.timesteps import ImportanceTimesteps
from ddpmlab.core.utils import DDPMLabError

OPTIMIZER_STATE = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq", "step")  # AdamW's per-parameter tensors


class NonFiniteLoss(DDPMLabError):
    """The loss of step ``step`` (1-based) was NaN or infinite; the weights were left as after step - 1."""

    def __init__(self, step: int, value: float, checkpoint: Path | None = None):
        kept = (f"last good checkpoint kept: {checkpoint}" if checkpoint is not None
                else "no checkpoint had been written yet")
        super().__init__(f"non-finite loss ({value}) at step {step}; training stopped, no run files written; {kept}")
        self.step, self.value, self.checkpoint = step, value, checkpoint


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM stopped training after step ``step``, once the checkpoint was written."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, run_dir=None):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        self.exit_code = 128 + signum  # 130 for SIGINT, 143 for SIGTERM, as a shell reports them
        resume = f"; continue with: ddpmlab train --resume {run_dir}" if run_dir is not None else ""
        super().__init__(f"interrupted by {signal.Signals(signum).name} after step {step}; "
                         f"checkpoint written to {checkpoint}{resume}")


@dataclass
class FaultHooks:
    """Fault injection for the tests, read from environment variables that are unset in normal use.

    DDPMLAB_TEST_NAN_AT_STEP=k        step k's loss (steps count from 1) becomes NaN;
    DDPMLAB_TEST_SIGNAL_AT_STEP=k     the process sends itself SIGTERM during step k (``k:INT``: SIGINT);
    DDPMLAB_TEST_DUMP_DIR=DIR         each rank r writes DIR/rank<r>_step1.safetensors (its generator state
                                      before step 1, its batch, the gradient after backward) and
                                      DIR/rank<r>_final.safetensors (its weights at the end).
    """

    nan_at_step: int = 0
    signal_at_step: int = 0
    signal_num: int = signal.SIGTERM
    dump_dir: str = ""

    @classmethod
    def from_env(cls) -> "FaultHooks":
        hooks = cls(dump_dir=os.environ.get("DDPMLAB_TEST_DUMP_DIR", ""))
        try:
            hooks.nan_at_step = int(os.environ.get("DDPMLAB_TEST_NAN_AT_STEP", "0"))
            at, _, name = os.environ.get("DDPMLAB_TEST_SIGNAL_AT_STEP", "0").partition(":")
            hooks.signal_at_step = int(at)
        except ValueError:
            raise DDPMLabError("DDPMLAB_TEST_* hooks take a step number") from None
        hooks.signal_num = signal.SIGINT if name.upper() == "INT" else signal.SIGTERM
        return hooks

    def on_step_start(self, trainer: "Trainer") -> None:
        if self.signal_at_step == trainer.step + 1:
            os.kill(os.getpid(), self.signal_num)
        if self.dump_dir and trainer.step == 0:
            self._generator_state = trainer.generator.get_state()

    def loss(self, trainer: "Trainer", loss: torch.Tensor) -> torch.Tensor:
        return loss * float("nan") if self.nan_at_step == trainer.step + 1 else loss

    def on_gradients(self, trainer: "Trainer", x0: torch.Tensor) -> None:
        if self.dump_dir and trainer.step == 0:
            grads = {f"grad.{n}": p.grad for n, p in trainer.model.named_parameters() if p.grad is not None}
            self._dump(trainer, "step1", {"generator": self._generator_state, "x0": x0, **grads})

    def on_finish(self, trainer: "Trainer") -> None:
        if self.dump_dir:
            self._dump(trainer, "final", {f"model.{k}": v for k, v in trainer.model.state_dict().items()})

    def _dump(self, trainer, name: str, tensors: dict) -> None:
        path = Path(self.dump_dir) / f"rank{trainer.ctx.rank}_{name}.safetensors"
        atomic_write_bytes(path, st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


class ObjectiveLoss(nn.Module):
    """The per-example objective as a module around the model, so that DDP sees the whole loss in
    ``forward`` (objectives call model methods other than ``forward``; DDP's gradient hooks need the
    wrapper's ``forward`` to run)."""

    def __init__(self, model: nn.Module, objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.objective(self.model, x0, generator)  # (B,)


class Trainer:
    """Model, optimiser, EMA, objective and RNG of one run (one rank), and the loop that trains them."""

    def __init__(self, cfg: Config, data: TrainingData, generator: torch.Generator, ctx: DistContext | None = None,
                 checkpoint: Checkpoint | None = None):
        self.cfg, self.data, self.generator = cfg, data, generator
        self.ctx = ctx if ctx is not None else DistContext(device=resolve_device(cfg.train.device))
        t = cfg.train
        self.shard = shard(data, self.ctx)  # this rank's examples (all of them with one process)
        self.batch_size = local_batch_size(t.batch_size, data, self.ctx)
        torch.manual_seed(t.seed)
        self.model = build_model(cfg, data.data_shape).to(self.ctx.device)
        if self.model_precond is not None:  # the same on every rank: all of the data, or its own seed
            self.model_precond.set_moments(*data.moments(t.seed))
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=t.lr, weight_decay=t.weight_decay, fused=True)
        self.ema = EMA(self.model, t.ema_decay) if t.ema_decay > 0 else None
        self.objective = make_objective(t.objective, self.model, t.hybrid_weight, t.importance_sampling)
        self.step = 0
        self.loss_history: list[float] = []  # per step, averaged over ranks
        self.train_seconds = 0.0
        self.signal_received: int | None = None  # set by ``stop_on_signals``' handler
        self.stop_signal: int | None = None  # a signal some rank received, agreed by all ranks each step
        self.hooks = FaultHooks.from_env()
        if checkpoint is not None:
            self.load_state(checkpoint)
        loss = ObjectiveLoss(self.model, self.objective)
        if self.ctx.distributed:
            device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
            loss = nn.parallel.DistributedDataParallel(loss, device_ids=device_ids)
        self.loss_fn = loss

    @property
    def model_precond(self):
        return getattr(self.model, "precond", None)

    @property
    def sampling_model(self):
        """The EMA weights when kept, else the trained weights."""
        return self.ema.shadow if self.ema is not None else self.model

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
        self.hooks.on_step_start(self)
        x0 = self.shard.batch(self.batch_size, self.generator).to(self.ctx.device)  # (B / N, *dims)
        loss = self.hooks.loss(self, self.loss_fn(x0, self.generator).mean())
        # every rank learns the mean loss and whether any rank got a stop signal, so all act alike
        got = self.signal_received
        loss_sum, n_sigint, n_sigterm = sum_over_ranks(
            [float(loss.detach()), got == signal.SIGINT, got == signal.SIGTERM], self.ctx)
        self.stop_signal = signal.SIGTERM if n_sigterm else signal.SIGINT if n_sigint else None
        mean_loss = loss_sum / self.ctx.world_size
        if not math.isfinite(mean_loss):
            raise NonFiniteLoss(self.step + 1, mean_loss)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # under DDP the gradients are averaged over ranks here
        self.hooks.on_gradients(self, x0)
        if t.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), t.grad_clip)
        self.optimizer.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return mean_loss

    def run(self, iters: int | None = None, progress: bool = True, writer: RunWriter | None = None) -> None:
        """Train until ``iters`` steps in total (default: the config's). With a ``writer`` (``train_run``):
        a metrics row per step, a checkpoint every ``train.checkpoint_every`` steps and at the end, and
        after a stop signal a checkpoint, then ``TrainingInterrupted``."""
        t = self.cfg.train
        iters = t.iters if iters is None else iters
        start, seconds_before = time.perf_counter(), self.train_seconds
        bar = tqdm(total=iters, initial=self.step, desc="training", disable=not (progress and self.ctx.is_main),
                   mininterval=0.25, leave=False)
        try:
            while self.step < iters:
                loss = self.train_step()
                self.loss_history.append(loss)
                self.train_seconds = seconds_before + time.perf_counter() - start
                bar.update(1)
                if self.step % 20 == 0:
                    bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
                if writer is None:
                    continue
                writer.log(self.step, loss, self.optimizer.param_groups[0]["lr"], self.train_seconds)
                if self.stop_signal is not None or (t.checkpoint_every and self.step % t.checkpoint_every == 0):
                    self.save_checkpoint(writer)
                if self.stop_signal is not None:
                    raise TrainingInterrupted(self.stop_signal, self.step, writer.last_saved, writer.run_dir)
            if writer is not None and writer.last_saved_step != self.step:
                self.save_checkpoint(writer)  # the last step's checkpoint
        finally:
            bar.close()
        self.hooks.on_finish(self)

    # ------------------------------------------------------------------------------- checkpoints

    def save_checkpoint(self, writer: RunWriter) -> None:
        """Collective under torchrun: every rank sends its state, rank 0 writes, all wait for it."""
        tensors, meta = self.state_dict()
        writer.save(tensors, meta)
        barrier(self.ctx)

    def _rank_state(self) -> dict:
        """Tensors that differ between ranks: RNG states and the importance sampler's history."""
        state = {"generator": self.generator.get_state(), "torch_rng": torch.get_rng_state()}
        if isinstance(getattr(self.objective, "timesteps", None), ImportanceTimesteps):
            state.update({f"timesteps.{k}": v for k, v in self.objective.timesteps.state_dict().items()})
        return state

    @functools.cached_property
    def _data_description(self) -> dict:
        """What the checkpoint records about the data (hashing a fixed training set once per run)."""
        d = json.loads(json.dumps(self.data.describe()))
        if not self.data.stream:  # the training set itself, so a changed data file is noticed
            d["sha256"] = hashlib.sha256(self.data.train.detach().cpu().contiguous().numpy().tobytes()).hexdigest()
        return d

    def state_dict(self) -> tuple[dict, dict]:
        """(tensors, meta) of a checkpoint; collective under torchrun (every rank's RNG state is gathered)."""
        tensors = {f"model.{k}": v for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        opt = self.optimizer.state_dict()
        for i, state in opt["state"].items():
            tensors.update({f"optimizer.{i}.{name}": v for name, v in state.items()})
        for name, value in self._rank_state().items():
            for r, v in enumerate(gather(value, self.ctx)):
                tensors[f"rank{r}.{name}"] = v
        meta = {"step": self.step, "world_size": self.ctx.world_size, "seed": self.cfg.train.seed,
                "config": self.cfg.to_dict(), "data": self._data_description,
                "param_groups": json.loads(json.dumps(opt["param_groups"])), "loss_history": list(self.loss_history),
                "train_seconds": self.train_seconds, "torch_version": torch.__version__,
                "num_threads": torch.get_num_threads()}  # bit-identical resume needs the same count
        return tensors, meta

    def _expected_tensors(self, names) -> dict:
        """name -> (shape, dtype) a checkpoint of this run must hold; optimizer entries of the names given."""
        expected = {f"model.{k}": (v.shape, v.dtype) for k, v in self.model.state_dict().items()}
        if self.ema is not None:
            expected.update({f"ema.{k}": (v.shape, v.dtype) for k, v in self.ema.state_dict().items()})
        params = list(self.model.parameters())
        for name in names:
            parts = name.split(".")
            if len(parts) == 3 and parts[0] == "optimizer" and parts[1].isdigit() and int(parts[1]) < len(params) \
                    and parts[2] in OPTIMIZER_STATE:
                p = params[int(parts[1])]
                expected[name] = ((), torch.get_default_dtype()) if parts[2] == "step" else (p.shape, p.dtype)
        for name, value in self._rank_state().items():
            expected.update({f"rank{r}.{name}": (value.shape, value.dtype) for r in range(self.ctx.world_size)})
        return expected

    def load_state(self, ckpt: Checkpoint) -> None:
        """Continue from ``ckpt`` (read by ``checkpoint.read_checkpoint``): refuse one that does not match
        this run, then restore weights, EMA, optimiser, RNG states, sampler history, losses and step."""
        where = ckpt.path / META_FILE
        check_resume_config(ckpt.cfg, self.cfg, where)
        if ckpt.meta["world_size"] != self.ctx.world_size:
            raise DDPMLabError(f"{where}: written by {ckpt.meta['world_size']} process(es); resume with the same "
                               f"number (this run has {self.ctx.world_size})")
        if ckpt.meta["data"] != self._data_description:
            raise DDPMLabError(f"{where}: the training data differ from the ones the checkpoint was trained on")
        check_tensors(ckpt, self._expected_tensors(ckpt.tensors))
        T, r = ckpt.tensors, self.ctx.rank

        def prefixed(prefix):
            return {k[len(prefix):]: v for k, v in T.items() if k.startswith(prefix)}

        self.model.load_state_dict(prefixed("model."))
        if self.ema is not None:
            self.ema.load_state_dict(prefixed("ema."))
        groups = ckpt.meta["param_groups"]  # one group: every parameter, indices 0..n-1
        n_params = len(self.optimizer.param_groups[0]["params"])
        if len(groups) != 1 or not isinstance(groups[0], dict) or groups[0].get("params") != list(range(n_params)):
            raise DDPMLabError(f"{where}: optimiser parameter groups do not match this run's model")
        current = self.optimizer.param_groups[0]  # JSON turned tuples (betas) into lists
        group = {k: tuple(v) if isinstance(current.get(k), tuple) and isinstance(v, list) else v
                 for k, v in groups[0].items()}
        state: dict = {}
        for name, v in prefixed("optimizer.").items():
            i, key = name.split(".")
            state.setdefault(int(i), {})[key] = v
        try:
            self.optimizer.load_state_dict({"state": state, "param_groups": [group]})
            self.generator.set_state(T[f"rank{r}.generator"])
            torch.set_rng_state(T[f"rank{r}.torch_rng"])
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise DDPMLabError(f"{where}: cannot restore the optimiser or RNG state ({str(exc).splitlines()[0]})") \
                from None
        if isinstance(getattr(self.objective, "timesteps", None), ImportanceTimesteps):
            self.objective.timesteps.load_state_dict(prefixed(f"rank{r}.timesteps."))
        self.step = ckpt.step
        self.loss_history = [float(v) for v in ckpt.meta["loss_history"]]
        self.train_seconds = float(ckpt.meta["train_seconds"])


def build_trainer(cfg: Config, ctx: DistContext | None = None, checkpoint: Checkpoint | None = None) -> Trainer:
    """The data, generator and Trainer of ``cfg`` for this process, continued from ``checkpoint``."""
    ctx = ctx if ctx is not None else DistContext(device=resolve_device(cfg.train.device))
    generator = torch.Generator().manual_seed(cfg.train.seed)
    data = make_training_data(cfg.data, generator)  # the same training set on every rank
    if ctx.distributed:  # each rank its own batches, t and noise
        generator = torch.Generator().manual_seed(rank_seed(cfg.train.seed, ctx.rank))
    return Trainer(cfg, data, generator, ctx, checkpoint)


@contextlib.contextmanager
def stop_on_signals(trainer: Trainer):
    """Inside: SIGINT and SIGTERM only set ``trainer.signal_received``; the loop finishes its step, writes
    a checkpoint and raises ``TrainingInterrupted``. The previous handlers come back on exit."""
    if threading.current_thread() is not threading.main_thread():  # signal handlers live in the main thread
        yield
        return

    def handler(signum, frame):
        trainer.signal_received = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)

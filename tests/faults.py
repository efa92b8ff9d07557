"""Fault injection for the tests: ``Faults``, a training callback (``ddpmlab.training.callbacks``) that a
test passes to the trainer like any other callback.

    Faults(nan_at=k)        step k's loss (steps count from 1) becomes NaN;
    Faults(signal_at=k)     the process sends itself SIGTERM during step k (``sigint=True``: SIGINT);
    Faults(dump_dir=DIR)    each rank r writes DIR/rank<r>_step1.safetensors (its generator state before
                            step 1, its batch, the gradient after backward) and DIR/rank<r>_final.safetensors
                            (its weights at the end).

How a test reaches the trainer:
- ``train_run(cfg, out, callbacks=[Faults(...)])`` or ``Trainer(..., callbacks=[Faults(...)])``;
- ``with injected(...): main(["train", ...])``: ``ddpmlab train`` in this process, whose trainer is built by
  ``ddpmlab.workflows.pipeline.train_run``; ``injected`` passes the callback to it for the block;
- ``fault_runner.py``: the command in a subprocess or under torchrun, with the faults its environment
  names (``from_env``: DDPMLAB_TEST_NAN_AT_STEP=k, DDPMLAB_TEST_SIGNAL_AT_STEP=k or k:INT,
  DDPMLAB_TEST_DUMP_DIR=DIR), read by the runner only.
"""
from __future__ import annotations

import contextlib
import functools
import os
import signal
from pathlib import Path

from safetensors.torch import save as st_save

from ddpmlab.core.fileio import atomic_write_bytes
from ddpmlab.training.callbacks import Callback
from ddpmlab.workflows import pipeline


class Faults(Callback):
    def __init__(self, nan_at: int = 0, signal_at: int = 0, sigint: bool = False, dump_dir=None):
        self.nan_at, self.signal_at, self.dump_dir = nan_at, signal_at, dump_dir
        self.signal = signal.SIGINT if sigint else signal.SIGTERM

    def on_step_start(self, trainer) -> None:
        if self.signal_at == trainer.step + 1:
            os.kill(os.getpid(), self.signal)
        if self.dump_dir and trainer.step == 0:
            self._generator_state = trainer.generator.get_state()

    def on_loss(self, trainer, loss):
        return loss * float("nan") if self.nan_at == trainer.step + 1 else loss

    def on_gradients(self, trainer, x0) -> None:
        if self.dump_dir and trainer.step == 0:
            grads = {f"grad.{n}": p.grad for n, p in trainer.model.named_parameters() if p.grad is not None}
            self._dump(trainer, "step1", {"generator": self._generator_state, "x0": x0, **grads})

    def on_finish(self, trainer) -> None:
        if self.dump_dir:
            self._dump(trainer, "final", {f"model.{k}": v for k, v in trainer.model.state_dict().items()})

    def _dump(self, trainer, name: str, tensors: dict) -> None:
        path = Path(self.dump_dir) / f"rank{trainer.ctx.rank}_{name}.safetensors"
        atomic_write_bytes(path, st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def from_env(environ=os.environ) -> dict:
    """``Faults``' arguments from DDPMLAB_TEST_NAN_AT_STEP, DDPMLAB_TEST_SIGNAL_AT_STEP, DDPMLAB_TEST_DUMP_DIR."""
    at, _, name = environ.get("DDPMLAB_TEST_SIGNAL_AT_STEP", "0").partition(":")
    return {"nan_at": int(environ.get("DDPMLAB_TEST_NAN_AT_STEP", "0")), "signal_at": int(at),
            "sigint": name.upper() == "INT", "dump_dir": environ.get("DDPMLAB_TEST_DUMP_DIR") or None}


@contextlib.contextmanager
def injected(**faults):
    """Within the block, every ``pipeline.train_run`` (so every ``ddpmlab train`` in this process) runs with
    a new ``Faults(**faults)`` among its callbacks."""
    original = pipeline.train_run

    @functools.wraps(original)
    def train_run(*args, callbacks=(), **kwargs):
        return original(*args, callbacks=[*callbacks, Faults(**faults)], **kwargs)

    pipeline.train_run = train_run
    try:
        yield
    finally:
        pipeline.train_run = original

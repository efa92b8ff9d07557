"""Fault injection for the tests, as a training callback (``ddpmlab.training.callbacks``) that reads
environment variables, unset in normal use:

DDPMLAB_TEST_NAN_AT_STEP=k        step k's loss (steps count from 1) becomes NaN;
DDPMLAB_TEST_SIGNAL_AT_STEP=k     the process sends itself SIGTERM during step k (``k:INT``: SIGINT);
DDPMLAB_TEST_DUMP_DIR=DIR         each rank r writes DIR/rank<r>_step1.safetensors (its generator state
                                  before step 1, its batch, the gradient after backward) and
                                  DIR/rank<r>_final.safetensors (its weights at the end).

conftest.py installs one for every in-process Trainer; ``fault_runner.py`` runs the CLI with one
installed (subprocesses and torchrun).
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

from safetensors.torch import save as st_save

from ddpmlab.core.fileio import atomic_write_bytes
from ddpmlab.training.callbacks import Callback


def _step(name: str) -> tuple[int, str]:
    at, _, rest = os.environ.get(name, "0").partition(":")
    return int(at), rest


class EnvFaults(Callback):
    def on_step_start(self, trainer) -> None:
        at, name = _step("DDPMLAB_TEST_SIGNAL_AT_STEP")
        if at == trainer.step + 1:
            os.kill(os.getpid(), signal.SIGINT if name.upper() == "INT" else signal.SIGTERM)
        if os.environ.get("DDPMLAB_TEST_DUMP_DIR") and trainer.step == 0:
            self._generator_state = trainer.generator.get_state()

    def on_loss(self, trainer, loss):
        return loss * float("nan") if _step("DDPMLAB_TEST_NAN_AT_STEP")[0] == trainer.step + 1 else loss

    def on_gradients(self, trainer, x0) -> None:
        if os.environ.get("DDPMLAB_TEST_DUMP_DIR") and trainer.step == 0:
            grads = {f"grad.{n}": p.grad for n, p in trainer.model.named_parameters() if p.grad is not None}
            self._dump(trainer, "step1", {"generator": self._generator_state, "x0": x0, **grads})

    def on_finish(self, trainer) -> None:
        if os.environ.get("DDPMLAB_TEST_DUMP_DIR"):
            self._dump(trainer, "final", {f"model.{k}": v for k, v in trainer.model.state_dict().items()})

    def _dump(self, trainer, name: str, tensors: dict) -> None:
        path = Path(os.environ["DDPMLAB_TEST_DUMP_DIR"]) / f"rank{trainer.ctx.rank}_{name}.safetensors"
        atomic_write_bytes(path, st_save({k: v.detach().cpu().contiguous() for k, v in tensors.items()}))


def install() -> EnvFaults:
    from ddpmlab.training.callbacks import CALLBACKS

    hooks = EnvFaults()
    CALLBACKS.append(hooks)
    return hooks

"""Stopping cleanly: on SIGINT / SIGTERM (a checkpoint first) and on a non-finite loss."""
from __future__ import annotations

import contextlib
import signal
import threading
from pathlib import Path

from ddpmlab.core.utils import NonFiniteError


class NonFiniteLoss(NonFiniteError):
    """The loss of step ``step`` (1-based) was NaN or infinite; the weights were left as after step - 1."""

    def __init__(self, step: int, value: float, checkpoint: Path | None = None, run_dir: Path | None = None):
        kept = (f"last good checkpoint kept: {checkpoint}" if checkpoint is not None
                else "no checkpoint had been written yet" + (
                    f", so {run_dir} holds nothing usable (nothing to sample, evaluate or resume)"
                    if run_dir is not None else ""))
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


@contextlib.contextmanager
def stop_on_signals(trainer):
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

"""Callbacks: code that runs at fixed points of the training loop, without living in it.

Subclass ``Callback`` and override what you need; pass instances as ``Trainer(..., callbacks=[...])`` (or
``ddpmlab.workflows.pipeline.train_run(..., callbacks=[...])``). A trainer runs the callbacks it was given,
and only those.
"""
from __future__ import annotations

import torch


class Callback:
    """No-op hooks; the trainer calls each in order on every callback."""

    def on_step_start(self, trainer) -> None:
        """Before step ``trainer.step + 1`` draws its batch."""

    def on_loss(self, trainer, loss: torch.Tensor) -> torch.Tensor:
        """The step's mean loss, before the non-finite check and backward; return it (or a replacement)."""
        return loss

    def on_gradients(self, trainer, x0: torch.Tensor) -> None:
        """After backward (gradients averaged over ranks), before clipping and the optimiser step."""

    def on_step_end(self, trainer, loss: float) -> None:
        """After the optimiser and EMA step; ``trainer.step`` counts it."""

    def on_finish(self, trainer) -> None:
        """After the last step of ``Trainer.run``."""

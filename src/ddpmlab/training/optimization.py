"""What a training step optimises: the per-example objective as a module around the model
(``ObjectiveLoss``, what DDP wraps) and the run's AdamW (``make_optimizer``)."""
from __future__ import annotations

import torch
from torch import nn

from ddpmlab.config.sections import TrainConfig
from ddpmlab.training.flat_adamw import FlatAdamW, flattenable
from ddpmlab.training.distributed import DistContext


class ObjectiveLoss(nn.Module):
    """The per-example objective as a module around the model, so that DDP sees the whole loss in
    ``forward`` (objectives call model methods other than ``forward``; DDP's gradient hooks need the
    wrapper's ``forward`` to run)."""

    def __init__(self, model: nn.Module, objective):
        super().__init__()
        self.model, self.objective = model, objective

    def forward(self, x0: torch.Tensor, generator: torch.Generator, cond=None) -> torch.Tensor:
        return self.objective(self.model, x0, generator, cond)  # (B,)


def make_optimizer(params: list, t: TrainConfig, ctx: DistContext) -> torch.optim.Optimizer:
    """AdamW with the run's learning rate and weight decay: on one flat buffer (``FlatAdamW``, the same
    numbers) for one process on the CPU or a GPU; torch's fused (or, elsewhere, plain) AdamW under
    torchrun, whose gradient buckets DDP keeps itself, or for parameters that cannot share a buffer."""
    fused = ctx.device.type in ("cpu", "cuda")
    if fused and not ctx.distributed and flattenable(params):
        return FlatAdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay, fused=fused)

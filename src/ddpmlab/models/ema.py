"""Exponential moving average of weights (Polyak averaging), as used by DDPM for sampling."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow``, a copy of ``model`` whose parameters follow decay * shadow + (1 - decay) * model."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        self._pairs = None  # (model, its parameters, the shadow's, buffer pairs) of the last update
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        if self._pairs is None or self._pairs[0] is not model:  # walking the modules costs as much as the lerp
            self._pairs = (model, list(model.parameters()), list(self.shadow.parameters()),
                           list(zip(self.shadow.buffers(), model.buffers())))
        _, src, dst, buffers = self._pairs
        torch._foreach_lerp_(dst, src, 1.0 - self.decay)
        for b_dst, b_src in buffers:
            b_dst.copy_(b_src)

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)

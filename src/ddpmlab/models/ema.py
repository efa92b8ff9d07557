"""Exponential moving average of weights (Polyak averaging), as used by DDPM for sampling."""
from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Keeps ``shadow``, a copy of ``model`` whose parameters follow decay * shadow + (1 - decay) * model.

    ``update(model, flat)`` with the model's parameters as one buffer (a ``FlatAdamW``'s while attached)
    averages the whole model in one operation instead of one per parameter tensor (about 0.02 ms of a
    default training step): the shadow's parameters then become views of one buffer of their own, until
    ``release`` gives each its own storage again (``Trainer.run`` does at its end, as for the optimiser's:
    a finished model's tensors share no memory; older safetensors refuse tensors that do)."""

    def __init__(self, model: nn.Module, decay: float = 0.999):
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = decay
        self.shadow = copy.deepcopy(model).eval()
        self._pairs = None  # (model, its parameters, the shadow's, buffer pairs) of the last update
        self._flat = None  # the shadow's parameters as one buffer, while they view it
        self._copied = {}  # buffer pair index -> (versions) at its last copy
        for p in self.shadow.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, flat: torch.Tensor | None = None) -> None:
        """One step of the average. ``flat``: ``model.parameters()`` concatenated in order, as one tensor
        whose views they are (``FlatAdamW.flat``); None to average tensor by tensor (the same numbers)."""
        if self._pairs is None or self._pairs[0] is not model:  # walking the modules costs as much as the lerp
            self._pairs = (model, list(model.parameters()), list(self.shadow.parameters()),
                           list(zip(self.shadow.buffers(), model.buffers())))
            self._copied = {}
        _, src, dst, buffers = self._pairs
        if flat is not None and self._attach(dst, flat):
            self._flat.lerp_(flat, 1.0 - self.decay)
        else:
            torch._foreach_lerp_(dst, src, 1.0 - self.decay)
        for i, (b_dst, b_src) in enumerate(buffers):  # copied when either side changed since the last copy
            if self._copied.get(i) != (b_dst._version, b_src._version):
                b_dst.copy_(b_src)
                self._copied[i] = (b_dst._version, b_src._version)

    def _attach(self, dst: list[torch.Tensor], flat: torch.Tensor) -> bool:
        """Make the shadow's parameters views of one buffer of theirs, laid out as ``flat``; False when
        ``flat`` is not laid out as they are."""
        if self._flat is not None and self._flat.shape == flat.shape and self._flat.dtype == flat.dtype \
                and dst[0].data_ptr() == self._flat.data_ptr():  # (not moved by ``shadow.to`` since)
            return True
        if flat.dim() != 1 or flat.numel() != sum(p.numel() for p in dst) or any(p.dtype != flat.dtype for p in dst):
            return False
        self._flat = torch.cat([p.detach().reshape(-1) for p in dst]).to(flat.device)
        for p, view in zip(dst, self._flat.split([p.numel() for p in dst])):
            p.data = view.view_as(p)
        return True

    @torch.no_grad()
    def release(self) -> None:
        """Give each shadow parameter its own storage again (the same values); the next flat update
        re-attaches them."""
        if self._flat is not None:
            for p in self.shadow.parameters():
                p.data = p.data.clone()
            self._flat = None

    def state_dict(self) -> dict:
        return self.shadow.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.shadow.load_state_dict(state)

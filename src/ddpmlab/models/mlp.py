"""An MLP denoiser for flat data (B, D): sinusoidal time embedding, residual blocks, configurable size.

The network splits its call in two, ``forward(x, tau) = forward_embedded(x, embed_time(tau))``, so that
a caller who knows that rows share their time (a sampler's step) or take few distinct times (a training
batch on T steps) embeds each time once (``ddpmlab.models.fast_path``); ``forward`` is the plain call.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ddpmlab.core.utils import DDPMLabError


def timestep_embedding(tau: torch.Tensor, dim: int, max_period: float = 10_000.0, scale: float = 1000.0):
    """Sinusoidal embedding of network time tau in (0, 1] (Vaswani et al. 2017; Ho et al. 2020, sec. 4):
    [cos(scale tau w_i), sin(scale tau w_i)], w_i = max_period^(-i / (dim/2)). Shape (B, dim), float64
    (the arguments reach ``scale``: float32 would lose 1e-4 of each phase)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64, device=tau.device) / half)
    args = scale * tau.double()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
    return emb


def embed_time_and_class(net: nn.Module, tau: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
    """``net.time`` (the time MLP) on the sinusoidal embedding of tau (R,), plus ``net.label``'s class
    embedding for a conditional network (the null class where ``cond`` is None): (R, embedding width)."""
    emb = net.time(_features(net, tau))
    if net.label is not None:
        return emb + net.label(cond, tau.shape[0], tau.device)
    if cond is not None:
        raise DDPMLabError("this network is unconditional (model.num_classes = 0); it takes no class labels")
    return emb


KEEP_FEATURES_ROWS = 4096  # a grid of steps is kept; a large batch's per-row times are not


def _features(net: nn.Module, tau: torch.Tensor) -> torch.Tensor:
    """``timestep_embedding(tau)`` in the time MLP's dtype, kept for the last tau tensor: a model's grid
    of every step's network time (``fast_path.call_net_at_steps``) is embedded once, not every batch. The
    kept tensor is the same object, unchanged in place (its version), on the same dtype."""
    dtype = net.time[0].weight.dtype
    if tau.requires_grad or tau.is_inference() or tau.numel() > KEEP_FEATURES_ROWS:
        return timestep_embedding(tau, net.time_dim).to(dtype)
    kept = net.__dict__.get("_kept_features")
    if kept is not None and kept[0] is tau and kept[1] == tau._version and kept[2].dtype == dtype:
        return kept[2]
    emb = timestep_embedding(tau, net.time_dim).to(dtype)
    net.__dict__["_kept_features"] = (tau, tau._version, emb)
    return emb


class ResidualBlock(nn.Module):
    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.lin1 = nn.Linear(width, width)
        self.lin2 = nn.Linear(width, width)
        self.act = nn.SiLU()

    def forward(self, h, temb):
        return h + self.lin2(self.act(self.lin1(self.act(self.norm(h + temb)))))


class ClassEmbedding(nn.Module):
    """A learned embedding of class labels c in 0..K, K the null class (no condition), added to the time
    embedding (as Ho & Salimans 2022's class-conditional networks). ``None`` means the null class."""

    def __init__(self, num_classes: int, width: int):
        super().__init__()
        self.num_classes = int(num_classes)
        self.table = nn.Embedding(self.num_classes + 1, width)

    def forward(self, cond: torch.Tensor | None, batch: int, device) -> torch.Tensor:
        if cond is None:
            cond = torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        cond = cond.reshape(-1).long()
        if cond.numel() and (int(cond.min()) < 0 or int(cond.max()) > self.num_classes):
            raise DDPMLabError(f"class labels must be in 0..{self.num_classes - 1} (or {self.num_classes}, the "
                               f"null class), got labels {int(cond.min())}..{int(cond.max())}")
        return self.table(cond)  # (B, width)


class MLPDenoiser(nn.Module):
    """x (B, *dims), tau (B,) and optional class labels (B,) -> (B, out_dim) reshaped to
    (B, out_channels_factor * D). ``num_classes`` > 0 makes it class-conditional (``ClassEmbedding``)."""

    rows_independent = True  # each output row depends on its own input row only (``fast_path`` may split)

    def __init__(self, data_dim: int, out_dim: int | None = None, width: int = 128, depth: int = 3,
                 time_dim: int = 32, num_classes: int = 0):
        super().__init__()
        self.data_dim, self.out_dim = data_dim, out_dim or data_dim
        self.time_dim = time_dim
        self.inp = nn.Linear(data_dim, width)
        self.time = nn.Sequential(nn.Linear(time_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, self.out_dim))
        self.num_classes = int(num_classes)
        self.label = ClassEmbedding(num_classes, width) if num_classes > 0 else None
        self.init_kwargs = {"data_dim": data_dim, "out_dim": self.out_dim, "width": width, "depth": depth,
                            "time_dim": time_dim, "num_classes": self.num_classes}  # what rebuilds it

    def config_options(self) -> dict:
        """The ``[model]`` options of the registered architecture that builds this network ("mlp"; checked
        by ``ddpmlab.models.registry.describe_model``, which builds it)."""
        k = self.init_kwargs
        return {"arch": "mlp", "width": k["width"], "depth": k["depth"], "time_dim": k["time_dim"],
                "num_classes": k["num_classes"]}

    @property
    def row_elements(self) -> int:
        """Floats of one row's widest activation (how many rows fit a cache)."""
        return self.inp.out_features

    def embed_time(self, tau: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """tau (R,) and labels (R,) or None -> (R, width) (``embed_time_and_class``)."""
        return embed_time_and_class(self, tau, cond)

    def forward_embedded(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """The network on x (B, *dims) with embedded times temb (B, width), or (1, width) shared by all rows."""
        shape = x.shape
        h = self.inp(x.reshape(shape[0], -1))
        for block in self.blocks:
            h = block(h, temb)
        out = self.out(h)  # (B, out_dim)
        return out.reshape((shape[0], self.out_dim // self.data_dim * shape[1]) + tuple(shape[2:]))

    def forward(self, x: torch.Tensor, tau: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_embedded(x, self.embed_time(tau, cond).to(x.dtype))

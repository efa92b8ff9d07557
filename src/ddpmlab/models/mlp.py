"""An MLP denoiser for flat data (B, D): sinusoidal time embedding, residual blocks, configurable size."""
from __future__ import annotations

import math

import torch
from torch import nn


def timestep_embedding(tau: torch.Tensor, dim: int, max_period: float = 10_000.0, scale: float = 1000.0):
    """Sinusoidal embedding of network time tau in (0, 1] (Vaswani et al. 2017; Ho et al. 2020, sec. 4):
    [cos(scale tau w_i), sin(scale tau w_i)], w_i = max_period^(-i / (dim/2)). Shape (B, dim)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float64, device=tau.device) / half)
    args = scale * tau.double()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=1)
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


class MLPDenoiser(nn.Module):
    """x (B, *dims) and tau (B,) -> (B, out_dim) reshaped to (B, out_channels_factor * D)."""

    def __init__(self, data_dim: int, out_dim: int | None = None, width: int = 128, depth: int = 3,
                 time_dim: int = 32):
        super().__init__()
        self.data_dim, self.out_dim = data_dim, out_dim or data_dim
        self.time_dim = time_dim
        self.inp = nn.Linear(data_dim, width)
        self.time = nn.Sequential(nn.Linear(time_dim, width), nn.SiLU(), nn.Linear(width, width))
        self.blocks = nn.ModuleList(ResidualBlock(width) for _ in range(depth))
        self.out = nn.Sequential(nn.LayerNorm(width), nn.SiLU(), nn.Linear(width, self.out_dim))

    def forward(self, x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        temb = self.time(timestep_embedding(tau, self.time_dim).to(x.dtype))
        h = self.inp(x.reshape(shape[0], -1))
        for block in self.blocks:
            h = block(h, temb)
        out = self.out(h)  # (B, out_dim)
        return out.reshape((shape[0], self.out_dim // self.data_dim * shape[1]) + tuple(shape[2:]))

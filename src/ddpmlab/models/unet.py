"""A small U-Net denoiser for images (B, C, H, W), after Ho et al. 2020 (appendix B) and improved-diffusion's
``UNetModel``, without attention (at 8x8 the convolutions already see the whole image two levels down).

Levels at full, 1/2 and 1/4 resolution with ``base * channel_mult[i]`` channels; each level has
``num_blocks`` residual blocks whose outputs (and the downsampled maps) are kept as skips, and the up
path has ``num_blocks + 1`` blocks per level, each fed the concatenation with one skip. Every block adds
a projection of the time embedding. Downsampling is a stride-2 convolution and upsampling nearest
neighbour to the skip's size, so odd sizes work too. The last convolution starts at zero, so an
untrained network predicts 0.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ddpmlab.models.mlp import ClassEmbedding, embed_time_and_class


def _norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


class ResBlock(nn.Module):
    """x + conv(act(norm(conv(act(norm(x))) + W temb))), with a 1x1 convolution on the skip when the
    channel count changes."""

    def __init__(self, cin: int, cout: int, emb_dim: int, groups: int = 8, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = _norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb_dim, cout)
        self.norm2, self.conv2 = _norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        self.dropout = nn.Dropout(dropout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class UNet(nn.Module):
    """x (B, in_channels, H, W), network time tau (B,) in (0, 1] and optional class labels (B,) ->
    (B, out_channels, H, W). ``num_classes`` > 0: a class embedding added to the time embedding.

    ``forward(x, tau, cond) = forward_embedded(x, embed_time(tau, cond))``: see ``ddpmlab.models.mlp``."""

    def __init__(self, in_channels: int, out_channels: int, base: int = 32, time_dim: int = 32,
                 channel_mult: tuple = (1, 2, 2), num_blocks: int = 1, groups: int = 8, dropout: float = 0.0,
                 num_classes: int = 0):
        super().__init__()
        self.init_kwargs = {"in_channels": in_channels, "out_channels": out_channels, "base": base,
                            "time_dim": time_dim, "channel_mult": list(channel_mult), "num_blocks": num_blocks,
                            "groups": groups, "dropout": dropout, "num_classes": int(num_classes)}  # rebuilds it
        self.time_dim = time_dim
        emb_dim = 4 * base
        self.num_classes = int(num_classes)
        self.label = ClassEmbedding(num_classes, emb_dim) if num_classes > 0 else None
        self.time = nn.Sequential(nn.Linear(time_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.inp = nn.Conv2d(in_channels, base, 3, padding=1)

        self.down = nn.ModuleList()  # per level: its blocks, then a downsampling conv (none at the deepest)
        skips, ch = [base], base
        for i, mult in enumerate(channel_mult):
            blocks = nn.ModuleList()
            for _ in range(num_blocks):
                blocks.append(ResBlock(ch, base * mult, emb_dim, groups, dropout))
                ch = base * mult
                skips.append(ch)
            parts = [blocks]
            if i < len(channel_mult) - 1:
                parts.append(nn.Conv2d(ch, ch, 3, stride=2, padding=1))  # halves H and W (rounding up)
                skips.append(ch)
            self.down.append(nn.ModuleList(parts))
        self.mid = nn.ModuleList([ResBlock(ch, ch, emb_dim, groups, dropout) for _ in range(2)])

        self.up = nn.ModuleList()  # per level, deepest first: its blocks, then an upsampling conv
        for i, mult in reversed(list(enumerate(channel_mult))):
            blocks = nn.ModuleList()
            for _ in range(num_blocks + 1):
                blocks.append(ResBlock(ch + skips.pop(), base * mult, emb_dim, groups, dropout))
                ch = base * mult
            parts = [blocks] + ([nn.Conv2d(ch, ch, 3, padding=1)] if i > 0 else [])
            self.up.append(nn.ModuleList(parts))
        self.out = nn.Sequential(_norm(ch, groups), nn.SiLU(), nn.Conv2d(ch, out_channels, 3, padding=1))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def config_options(self) -> dict:
        """The ``[model]`` options of the registered architecture that builds this network ("unet"; checked
        by ``ddpmlab.models.registry.describe_model``, which builds it)."""
        k = self.init_kwargs
        return {"arch": "unet", "width": k["base"], "time_dim": k["time_dim"], "num_classes": k["num_classes"]}

    def embed_time(self, tau: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """tau (R,) and labels (R,) or None -> (R, 4 base) (``embed_time_and_class``)."""
        return embed_time_and_class(self, tau, cond)

    def forward(self, x: torch.Tensor, tau: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_embedded(x, self.embed_time(tau, cond).to(x.dtype))

    def forward_embedded(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """The network on x (B, C, H, W) with embedded times emb (B, 4 base), or (1, 4 base) shared by all rows."""
        h = self.inp(x)
        hs = [h]
        for level in self.down:
            for block in level[0]:
                h = block(h, emb)
                hs.append(h)
            if len(level) > 1:
                h = level[1](h)  # (B, ch, ceil(H / 2), ceil(W / 2))
                hs.append(h)
        for block in self.mid:
            h = block(h, emb)
        for level in self.up:
            for block in level[0]:
                h = block(torch.cat([h, hs.pop()], dim=1), emb)
            if len(level) > 1:
                h = level[1](F.interpolate(h, size=hs[-1].shape[-2:], mode="nearest"))
        return self.out(h)

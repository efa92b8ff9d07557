"""An MLP denoiser for flat data (B, D): sinusoidal time embedding, residual blocks, configurable size.

The network splits its call in two, ``forward(x, tau) = forward_embedded(x, embed_time(tau))``, so that
a caller who knows that rows share their time (a sampler's step) or take few distinct times (a training
batch on T steps) embeds each time once (``ddpmlab.models.fast_path``); ``forward`` is the plain call.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
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


def norm_silu(norm: nn.LayerNorm, u: torch.Tensor, kept: list | None = None) -> torch.Tensor:
    """silu(norm(u)) for u (B, W), keeping [u, the rows' mean and 1 / std, norm(u)] in ``kept`` (what
    the backward needs) when given."""
    n, mean, rstd = torch.native_layer_norm(u, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    if kept is not None:
        kept += [u, mean, rstd, n]
    return F.silu(n)


def norm_silu_backward(norm: nn.LayerNorm, g: torch.Tensor, kept, need: tuple[bool, bool, bool]):
    """The gradients (u, norm.weight, norm.bias) of ``norm_silu`` from g, the gradient of its output;
    ``need`` says which to compute (None for the others)."""
    u, mean, rstd, n = kept
    return torch.ops.aten.native_layer_norm_backward(torch.ops.aten.silu_backward(g, n), u, norm.normalized_shape,
                                                     mean, rstd, norm.weight, norm.bias, need)


def linear_backward(g: torch.Tensor, a: torch.Tensor, weight: torch.Tensor, need: tuple[bool, bool, bool]):
    """The gradients (input, weight, bias) of y = a weight^T + bias from g, the gradient of y (B, out)."""
    return (g.mm(weight) if need[0] else None, g.t().mm(a) if need[1] else None, g.sum(0) if need[2] else None)


class ResidualBlock(nn.Module):
    """h + lin2(silu(lin1(silu(norm(h + temb))))), keeping what ``backward`` needs in ``kept`` when given."""

    KEPT = 7  # tensors a block keeps: norm_silu's 4, then silu's input and both linear layers' inputs

    def __init__(self, width: int):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.lin1 = nn.Linear(width, width)
        self.lin2 = nn.Linear(width, width)

    def forward(self, h, temb, kept: list | None = None):
        a1 = norm_silu(self.norm, h + temb, kept)
        z1 = self.lin1(a1)
        a2 = F.silu(z1)
        if kept is not None:
            kept += [a1, z1, a2]
        return self.lin2(a2).add_(h)  # (B, W)

    def backward(self, g: torch.Tensor, kept, need: list[bool]):
        """(gradient of h + temb, gradients of norm, lin1 and lin2's weight and bias) from g, the gradient
        of the block's output; ``need`` says which parameter gradients to compute (6 flags)."""
        a1, z1, a2 = kept[4:]
        g_a2, g_w2, g_b2 = linear_backward(g, a2, self.lin2.weight, (True, need[4], need[5]))
        g_a1, g_w1, g_b1 = linear_backward(torch.ops.aten.silu_backward(g_a2, z1), a1, self.lin1.weight,
                                           (True, need[2], need[3]))
        g_u, g_nw, g_nb = norm_silu_backward(self.norm, g_a1, kept[:4], (True, need[0], need[1]))
        return g_u, [g_nw, g_nb, g_w1, g_b1, g_w2, g_b2]


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

    @property
    def row_elements(self) -> int:
        """Floats of one row's widest activation (how many rows fit a cache)."""
        return self.inp.out_features

    def embed_time(self, tau: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        """tau (R,) and labels (R,) or None -> (R, width) (``embed_time_and_class``)."""
        return embed_time_and_class(self, tau, cond)

    def forward_embedded(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        """The network on x (B, *dims) with embedded times temb (B, width), or (1, width) shared by all rows:
        ``trunk``, through ``TrunkFunction`` (one autograd node) when gradients are recorded."""
        shape = x.shape
        x = x.reshape(shape[0], -1)
        if torch.is_grad_enabled():
            out = TrunkFunction.apply(self, x, temb, *self.trunk_parameters())
        else:
            out = self.trunk(x, temb)  # (B, out_dim)
        return out.reshape((shape[0], self.out_dim // self.data_dim * shape[1]) + tuple(shape[2:]))

    def trunk(self, x: torch.Tensor, temb: torch.Tensor, kept: list | None = None) -> torch.Tensor:
        """x (B, data_dim) -> (B, out_dim): the input layer, the residual blocks, then the head
        out = (LayerNorm, SiLU, Linear); ``kept`` collects what ``trunk_backward`` needs."""
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, temb, kept)
        a = norm_silu(self.out[0], h, kept)
        if kept is not None:
            kept.append(a)
        return self.out[2](a)

    def trunk_parameters(self) -> list[torch.Tensor]:
        """The trunk's parameters in ``trunk_backward``'s order: inp, each block's (norm, lin1, lin2), the
        head's norm and linear layer, weight then bias of each."""
        layers = [self.inp] + [m for b in self.blocks for m in (b.norm, b.lin1, b.lin2)] + [self.out[0], self.out[2]]
        return [p for m in layers for p in (m.weight, m.bias)]

    def trunk_backward(self, g: torch.Tensor, x: torch.Tensor, temb: torch.Tensor, kept, need: list[bool]):
        """The gradients of x, temb and ``trunk_parameters`` (None where ``need`` is False) from g (B, out_dim),
        the gradient of ``trunk(x, temb, kept)``'s output."""
        head = kept[-5:]
        g_a, g_ow, g_ob = linear_backward(g, head[4], self.out[2].weight, (True, need[-2], need[-1]))
        g_h, g_nw, g_nb = norm_silu_backward(self.out[0], g_a, head[:4], (True, need[-4], need[-3]))
        grads, g_temb = [g_nw, g_nb, g_ow, g_ob], None
        k = ResidualBlock.KEPT
        for i in reversed(range(len(self.blocks))):
            g_u, block_grads = self.blocks[i].backward(g_h, kept[k * i:k * (i + 1)], need[4 + 6 * i:10 + 6 * i])
            grads = block_grads + grads
            g_h = g_h + g_u  # the residual path and the block's
            if need[1]:
                g_temb = g_u if g_temb is None else g_temb + g_u
        g_x, g_iw, g_ib = linear_backward(g_h, x, self.inp.weight, (need[0], need[2], need[3]))
        if g_temb is not None and g_temb.shape != temb.shape:  # one time shared by every row
            g_temb = g_temb.sum_to_size(temb.shape)
        return [g_x, g_temb, g_iw, g_ib] + grads

    def forward(self, x: torch.Tensor, tau: torch.Tensor, cond: torch.Tensor | None = None) -> torch.Tensor:
        return self.forward_embedded(x, self.embed_time(tau, cond).to(x.dtype))


class TrunkFunction(torch.autograd.Function):
    """``MLPDenoiser.trunk`` as one autograd node: the forward keeps the activations the backward needs
    and ``trunk_backward`` computes every gradient with a handful of matrix products, instead of the
    autograd engine walking some 40 nodes (the step of a small network is mostly their overhead). The
    gradients are autograd's to float rounding (``tests/test_fast_step.py``); first order only."""

    @staticmethod
    def forward(ctx, net, x, temb, *params):
        kept = []
        out = net.trunk(x, temb, kept)
        ctx.net = net
        ctx.save_for_backward(x, temb, *kept)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        x, temb, *kept = ctx.saved_tensors
        return (None, *ctx.net.trunk_backward(g, x, temb, kept, list(ctx.needs_input_grad[1:])))

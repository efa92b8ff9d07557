"""The MLP denoiser's forward pass keeping its activations, and its backward pass written out by hand.

A training step that needs nothing but the parameters' gradient of a squared error (the simple loss of
an unconditional ``MLPDenoiser``, ``ddpmlab.objectives.simple_tape``) does not need autograd's graph: for a
(1024, 32) batch the graph's bookkeeping (a node, saved tensors and a fresh gradient per operation, one
accumulation per parameter) costs about as much as the arithmetic. ``MLPTape`` runs the same
operations as ``MLPDenoiser.forward_embedded`` on time features gathered from a grid, keeps what the
chain rule needs, and ``backward(dF)`` writes each parameter's gradient into its ``.grad`` tensor (the
products' ``out=``, no temporary, no separate zeroing): autograd's numbers (bit for bit on the default
recipe; ``tests/test_fused_step.py`` compares them with autograd and the whole step with the plain one).

The chain rule through each layer, for an upstream gradient g of a layer's output:
- linear y = x W^T + b: dW = g^T x, db = sum_rows g, dx = g W;
- SiLU y = z sigmoid(z): dz = g sigmoid(z) (1 + z (1 - sigmoid(z))) (``aten.silu_backward``);
- LayerNorm: ``aten.native_layer_norm_backward`` from the input, its mean and 1 / std;
- residual h' = h + f(h + e): dh = g + du, de = du, du the gradient reaching f's input;
- the gather e = E[index] of grid rows: dE = zeros, index_add_(index, de) (rows sharing a step add up).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ddpmlab.models.mlp import MLPDenoiser, _features

_silu_backward = torch.ops.aten.silu_backward
_layer_norm_backward = torch.ops.aten.native_layer_norm_backward


def tape_supports(net) -> bool:
    """Whether ``MLPTape`` computes this network: an unconditional ``MLPDenoiser`` (not a subclass, whose
    forward may differ), every parameter trainable."""
    return (type(net) is MLPDenoiser and net.label is None
            and all(p.requires_grad for p in net.parameters()))


class MLPTape:
    """``tape = MLPTape(net)``; ``F = tape.forward(x, grid, index)`` is ``net(x, grid[index])`` for x (B, D)
    and integer rows ``index`` (B,) of the network-time grid (S,); ``tape.backward(dF)`` sets every
    parameter's ``.grad`` to dL/dtheta for the upstream gradient dF = dL/dF (B, out_dim), written into the
    ``.grad`` tensor it has (made when None): what ``zero_grad(); loss.backward()`` leaves there.

    The layers' parameters are looked up once (a module's attribute lookup costs more than a small
    tensor's addition); ``trainable()`` says whether all of them still need gradients."""

    def __init__(self, net: MLPDenoiser):
        if not tape_supports(net):
            raise ValueError("MLPTape computes an unconditional MLPDenoiser with trainable parameters")
        self.net = net
        self.time = (_linear(net.time[0]), _linear(net.time[2]))
        self.inp = _linear(net.inp)
        self.blocks = [(_norm(b.norm), _linear(b.lin1), _linear(b.lin2)) for b in net.blocks]
        self.out = (_norm(net.out[0]), _linear(net.out[2]))
        self.params = list(net.parameters())
        self.saved = None

    def trainable(self) -> bool:
        """Whether every parameter still needs its gradient (none frozen since)."""
        return all(p.requires_grad for p in self.params)

    @torch.no_grad()
    def forward(self, x: torch.Tensor, grid: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        (w0, b0), (w2, b2) = self.time
        feats = _features(self.net, grid)  # (S, time_dim), kept for the grid tensor
        tz = torch.addmm(b0, feats, w0.t())  # F.linear's own call for a matrix input
        ta = F.silu(tz)
        temb = torch.addmm(b2, ta, w2.t()).index_select(0, index)  # (B, width)
        w, b = self.inp
        h = torch.addmm(b, x, w.t())
        kept = []
        for (shape, nw, nb, eps), (w1, b1), (w2, b2) in self.blocks:
            u = h + temb
            n, mu, rstd = torch.native_layer_norm(u, shape, nw, nb, eps)
            a1 = F.silu(n)
            z1 = torch.addmm(b1, a1, w1.t())
            a2 = F.silu(z1)
            h = torch.addmm(b2, a2, w2.t()).add_(h)
            kept.append((u, mu, rstd, n, a1, z1, a2))
        (shape, nw, nb, eps), (w, b) = self.out
        n, mu, rstd = torch.native_layer_norm(h, shape, nw, nb, eps)
        a = F.silu(n)
        self.saved = (feats, index, x, tz, ta, kept, (h, mu, rstd, n, a))
        return torch.addmm(b, a, w.t())

    @torch.no_grad()
    def backward(self, dF: torch.Tensor) -> None:
        if self.saved is None:
            raise RuntimeError("MLPTape.backward needs a forward first (and runs once per forward)")
        feats, index, x, tz, ta, kept, (h, mu, rstd, n, a) = self.saved
        self.saved = None
        (shape, nw, nb, eps), (w, b) = self.out
        _linear_grads(w, b, dF, a)
        dh = _layer_norm_grads(_silu_grad(dF.mm(w), n), h, shape, mu, rstd, nw, nb)
        demb = None
        for ((shape, nw, nb, eps), (w1, b1), (w2, b2)), (u, mu, rstd, n, a1, z1, a2) in zip(
                reversed(self.blocks), reversed(kept)):
            _linear_grads(w2, b2, dh, a2)
            dz1 = _silu_grad(dh.mm(w2), z1)
            _linear_grads(w1, b1, dz1, a1)
            du = _layer_norm_grads(_silu_grad(dz1.mm(w1), n), u, shape, mu, rstd, nw, nb)
            demb = du if demb is None else demb.add_(du)
            dh = dh.add_(du)
        _linear_grads(*self.inp, dh, x)
        (w0, b0), (w2, b2) = self.time
        if demb is None:  # no residual block: the time embedding reaches nothing
            for p in (w0, b0, w2, b2):
                _grad_of(p).zero_()
            return
        dtemb = torch.zeros(ta.shape[0], demb.shape[1], dtype=demb.dtype, device=demb.device)
        dtemb.index_add_(0, index, demb)  # (S, width): the rows at one step add up
        _linear_grads(w2, b2, dtemb, ta)
        _linear_grads(w0, b0, _silu_grad(dtemb.mm(w2), tz), feats)


_ALL = (True, True, True)


def _linear(layer):
    return layer.weight, layer.bias


def _norm(layer):
    return tuple(layer.normalized_shape), layer.weight, layer.bias, layer.eps


def _grad_of(p: torch.Tensor) -> torch.Tensor:
    """``p.grad``, made (uninitialised, to be written) when None."""
    if p.grad is None:
        p.grad = torch.empty_like(p)
    return p.grad


def _linear_grads(w: torch.Tensor, b: torch.Tensor, g: torch.Tensor, inp: torch.Tensor) -> None:
    """dW = g^T inp, db = sum over rows of g."""
    torch.mm(g.t(), inp, out=_grad_of(w))
    torch.sum(g, 0, out=_grad_of(b))


def _silu_grad(g: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """dL/dz of SiLU at z for the upstream gradient g, written over g (a product's fresh result)."""
    return _silu_backward.grad_input(g, z, grad_input=g)


def _layer_norm_grads(g, u, shape, mu, rstd, weight, bias) -> torch.Tensor:
    """dL/du of LayerNorm's input; its weight's and bias's gradients copied into their ``.grad`` (the
    operator's ``out=`` form computes all three and copies them, the (B, width) one included)."""
    du, dw, db = _layer_norm_backward(g, u, shape, mu, rstd, weight, bias, _ALL)
    _grad_of(weight).copy_(dw)
    _grad_of(bias).copy_(db)
    return du

"""The seed's networks on 1-D data, fused: both networks and the Gaussian log-likelihood of a whole
trajectory in one pass over a reused (T, 2, H, N) buffer, with a hand-written backward.

Computes per example sum_{t=1}^T [log sigma_t + (x_{t-1} - mu_t)^2 / (2 sigma_t^2)] (the step terms of
Ho et al. eq. 3 without their constants). ReLU's homogeneity (h = 1[pre > 0] pre) lets the output-layer
gradient come from sums the input-layer gradient needs anyway, so the backward touches the T x N x H
hidden activations only three times. ``tests/test_seed_bound.py`` checks it against the plain path (the
values and, in float32, the gradients autograd gives); ``ddpmlab.objectives.seed_bound`` uses it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable


class _Workspace:
    """Buffers reused across iterations: fresh multi-megabyte tensors every step cost page faults."""

    def __init__(self):
        self.key = None
        self.token = 0

    def ensure(self, T: int, N: int, H: int, dtype) -> None:
        key = (T, N, H, dtype)
        if key != self.key:
            self.key = key
            self.hidden = torch.empty(T, 2, H, N, dtype=dtype)  # (T, {mean, std}, H, N)
            self.out = torch.empty(T, 2, N, dtype=dtype)
            self.grad = torch.empty(T, 2, N, dtype=dtype)
            self.traj = torch.empty(T + 1, N, dtype=dtype)


class _FusedSeedNLL(torch.autograd.Function):
    """Per-example sum_t [log sigma + (x_{t-1} - mu)^2 / (2 sigma^2)] for 1-D data, shape (N,)."""

    @staticmethod
    def forward(ctx, traj, tau, w_in, b_in, w_out, b_out, ws):
        # traj (T + 1, N): x_0..x_T; tau (T,): network time of steps 1..T.
        x_t, x_prev = traj[1:], traj[:-1]  # (T, N) each
        V, bo = w_out[:, 0, :], b_out[:, 0]  # (2, H), (2,)
        c = torch.addcmul(b_in, tau[:, None, None], w_in[:, :, 1])  # (T, 2, H) per-step bias
        h = ws.hidden
        torch.addcmul(c[..., None], w_in[None, :, :, 0, None], x_t[:, None, None, :], out=h)  # (T, 2, H, N)
        h.clamp_min_(0)
        out = ws.out  # (T, 2, N): mean and pre-softplus std
        torch.mul(h[:, :, 0, :], V[None, :, 0, None], out=out)
        for j in range(1, h.shape[2]):
            out.addcmul_(h[:, :, j, :], V[None, :, j, None])
        out.add_(bo[None, :, None])
        mu, z = out[:, 0], out[:, 1]
        sigma = F.softplus(z)
        inv_sigma = sigma.reciprocal()
        rs = torch.sub(x_prev, mu).mul_(inv_sigma)  # (x_{t-1} - mu) / sigma
        nll = torch.log(sigma).addcmul_(rs, rs, value=0.5).sum(0)  # (N,)
        ws.token += 1
        ctx.token, ctx.ws = ws.token, ws
        ctx.save_for_backward(x_t, tau, z, inv_sigma, rs, w_in, V, c)
        return nll

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_nll):
        ws = ctx.ws
        if ws.token != ctx.token:
            raise RuntimeError("fused seed bound: backward must follow its own forward (workspace reused)")
        x_t, tau, z, inv_sigma, rs, w_in, V, c = ctx.saved_tensors
        g = ws.grad  # (T, 2, N): dL/dmu and dL/dz, both computed negated, the sign folded into grad_nll
        # dL/dmu = -(x - mu) / sigma^2;  dL/dsigma = (1 - rs^2) / sigma;  dz = dsigma * sigmoid(z)
        torch.mul(rs, inv_sigma, out=g[:, 0])
        torch.sigmoid(z, out=g[:, 1])
        g[:, 1].mul_(inv_sigma).mul_(rs.mul_(rs).sub_(1.0))
        g.mul_(grad_nll.neg()[None, None, :])
        m = ws.hidden.sign_().mul_(g[:, :, None, :])  # 1[pre > 0] * upstream, (T, 2, H, N)
        per_step = m.sum(3)  # (T, 2, H): sum_n 1[pre > 0] g
        sx = m.mul_(x_t[:, None, None, :]).sum(3).sum(0)  # (2, H): sum 1[pre > 0] g x
        grad_V = w_in[:, :, 0] * sx + (c * per_step).sum(0)  # h = 1[pre > 0] (w x + c)
        per_step.mul_(V)  # gradient w.r.t. the per-step bias c
        grad_w_in = torch.stack([V * sx, torch.tensordot(tau, per_step, 1)], dim=-1)  # (2, H, 2)
        grad_b_in = per_step.sum(0)
        grad_b_out = g.sum((0, 2))[:, None]
        return None, None, grad_w_in, grad_b_in, grad_V[:, None, :], grad_b_out, None

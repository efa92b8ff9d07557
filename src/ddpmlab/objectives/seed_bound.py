"""The seed's objective: the variational bound over one whole sampled trajectory (Ho et al. eq. 3).

For one trajectory x_0 -> x_1 -> ... -> x_T drawn from q (eq. 2), per example (in nats)

    L = -log p(x_T) - sum_{t=1}^T log p(x_{t-1} | x_t) + sum_{t=1}^T log q(x_t | x_{t-1}),

whose expectation is >= -log p(x_0) (the q terms do not depend on the parameters; they make a
perfect model's bound equal the data's negative log-likelihood). The seed trained on L / (T + 1).

Two implementations of the same sum, vectorised over t (no Python loop over steps):
- ``_generic_step_nll``: autograd through ``model.p_mean_variance`` on all T x N rows; any model, any
  data shape.
- ``_FusedSeedNLL``: for the seed's networks on 1-D data, both networks and the Gaussian log-likelihood in one pass over a
  reused (T, 2, H, N) buffer with a hand-written backward. ReLU's homogeneity (h = 1[pre > 0] pre)
  lets the output-layer gradient come from sums the input-layer gradient needs anyway, so the
  backward touches the T x N x H hidden activations only three times.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from ddpmlab.core.diffusion import forward_trajectory_fast, trajectory_scales
from ddpmlab.models.seed import SeedReverse

LOG_2PI = math.log(2 * math.pi)


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


def _generic_step_nll(model, traj: torch.Tensor) -> torch.Tensor:
    """The same per-example sum through ``model.p_mean_variance``, for any model and data shape.
    traj: (T + 1, N, *dims)."""
    T, N = traj.shape[0] - 1, traj.shape[1]
    rows = traj[1:].reshape((T * N,) + tuple(traj.shape[2:]))  # (T N, *dims): x_1..x_T
    t = torch.arange(1, T + 1, device=traj.device).repeat_interleave(N)
    mean, variance = model.p_mean_variance(rows, t)
    nll = 0.5 * torch.log(variance) + 0.5 * (traj[:-1].reshape(rows.shape) - mean).square() / variance
    return nll.reshape(T, N, -1).sum(dim=(0, 2))


class SeedTrajectoryBound:
    """Callable: per-example whole-trajectory bound L (nats, shape (N,)) for data x0 and noise.

    ``noise`` holds epsilon_1..epsilon_T, shape (T, N, *dims); the trajectory is q's chain for that
    noise. Works for any reverse model; ``fused=None`` takes the fused path for the seed's networks on
    1-D data and autograd otherwise.
    """

    def __init__(self, model, fused: bool | None = None):
        self.model = model
        self.fused = fused
        self._ws = _Workspace()
        sched = model.schedule
        self._tau = sched.model_time(torch.arange(1, sched.T + 1))  # (T,)
        self._scales = {}  # dtype -> trajectory_scales, computed once
        self._log_q_const = float((-0.5 * torch.log(2 * math.pi * sched.betas[1:])).sum())

    def __call__(self, x0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        sched = self.model.schedule
        N = x0.shape[0]
        D = x0[0].numel()
        is_seed = isinstance(self.model, SeedReverse)
        fused = (D == 1 and is_seed and x0.device.type == "cpu") if self.fused is None else self.fused
        if fused:
            if D != 1 or not is_seed:
                raise ValueError("the fused seed bound handles the seed's networks on 1-D data only")
            net = self.model.net
            x0, noise = x0.reshape(N, 1), noise.reshape(sched.T, N, 1)
            self._ws.ensure(sched.T, N, net.hidden, x0.dtype)
            if x0.dtype not in self._scales:
                self._scales[x0.dtype] = trajectory_scales(sched, x0.dtype)
            traj = forward_trajectory_fast(sched, x0[:, 0], noise[..., 0], out=self._ws.traj,
                                           scales=self._scales[x0.dtype])
            step_nll = _FusedSeedNLL.apply(traj, self._tau.to(x0.dtype), net.w_in, net.b_in, net.w_out, net.b_out, self._ws)
            x_T = traj[-1]
        else:
            traj = forward_trajectory_fast(sched, x0, noise)
            step_nll = _generic_step_nll(self.model, traj)
            x_T = traj[-1]
        # -log p(x_T) with p = N(0, I); the constants 0.5 log 2 pi of the T step terms; log q terms.
        prior = 0.5 * x_T.reshape(N, -1).square().sum(1) + 0.5 * D * LOG_2PI
        log_q = D * self._log_q_const - 0.5 * noise.reshape(sched.T, N, -1).square().sum(dim=(0, 2))
        return prior + step_nll + 0.5 * D * sched.T * LOG_2PI + log_q


@torch.no_grad()
def estimate_trajectory_bound(model, sample_x0, n_batches: int = 20, batch: int = 1000,
                              generator: torch.Generator | None = None) -> tuple[float, float]:
    """The whole-trajectory bound per data point in nats (not divided by T + 1), on fresh data
    ``sample_x0(n, generator)`` and fresh trajectories: mean and standard error over all examples."""
    bound = SeedTrajectoryBound(model)
    vals = []
    for _ in range(n_batches):
        x0 = sample_x0(batch, generator)
        noise = torch.randn((model.schedule.T,) + tuple(x0.shape), generator=generator)
        vals.append(bound(x0, noise).double())
    v = torch.cat(vals)
    return float(v.mean()), float(v.std() / len(v) ** 0.5)

"""The exact velocity field of a Gaussian mixture on a Gaussian path: the best possible flow.

For data q(x_0) = sum_k w_k N(mu_k, S_k) and x_t = alpha(t) x_0 + sigma(t) eps (``ddpmlab.core.paths``),
q(x_t) is a mixture again: component k has mean alpha mu_k and covariance C_k = alpha^2 S_k + sigma^2 I.
Within component k, (x_0, eps, x_t) are jointly Gaussian, so with P_k = C_k^{-1} and d_k = x - alpha mu_k

    E[x_0 | x_t = x, k] = mu_k + alpha S_k P_k d_k,     E[eps | x_t = x, k] = sigma P_k d_k,

and the posterior means are these averaged with the responsibilities r_k(x) = q(k | x_t = x). The
velocity is v(x, t) = alpha' E[x_0 | x] + sigma' E[eps | x] (on the linear path E[eps - x_0 | x_t]),
differentiable in x, in float64, defined for t in [0, 1] (at t = 0 when every S_k is positive definite).
``FlowMixtureOracle`` is a model of the "flow" family, so every flow sampler and the ODE likelihood run on it.
"""
from __future__ import annotations

import math

import torch

from ddpmlab.core.process import VelocityProcess
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.paths import LinearPath
from ddpmlab.core.utils import DDPMLabError

LOG_2PI = math.log(2 * math.pi)


class FlowMixtureOracle(VelocityProcess):
    """The exact flow of ``dist`` on ``path`` (default the linear path), with a flow model's interface."""

    def __init__(self, dist: GaussianMixture, path=None, data_shape=None):
        self.dist, self.path = dist, path if path is not None else LinearPath()
        self.data_shape = tuple(dist.event_shape if data_shape is None else data_shape)
        if math.prod(self.data_shape) != dist.dim:
            raise DDPMLabError(f"data shape {self.data_shape} does not hold the mixture's {dist.dim} dimensions")

    def _terms(self, x: torch.Tensor, t: float):
        """Responsibilities (K, B), alpha, sigma, P_k d_k (K, B, d) at time t for x (B, *dims)."""
        t = float(t)
        a, s = float(self.path.alpha(t)), float(self.path.sigma(t))
        x = x.reshape(x.shape[0], self.dist.dim).to(torch.float64)
        eye = torch.eye(self.dist.dim, dtype=torch.float64)
        chol = torch.linalg.cholesky(a * a * self.dist.covariances + s * s * eye)  # (K, d, d)
        prec = torch.cholesky_inverse(chol)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)
        diff = x[None] - a * self.dist.means[:, None, :]  # (K, B, d)
        pdiff = torch.einsum("kij,kbj->kbi", prec, diff)
        comp = (-0.5 * ((diff * pdiff).sum(-1) + logdet[:, None] + self.dist.dim * LOG_2PI)
                + self.dist.weights.log()[:, None])
        log_q = torch.logsumexp(comp, 0)  # (B,)
        return log_q, (comp - log_q).exp(), a, s, pdiff

    def q_log_prob(self, x: torch.Tensor, t: float) -> torch.Tensor:
        """log q(x_t) at time t, (B,) float64."""
        return self._terms(x, t)[0]

    def posterior_means(self, x: torch.Tensor, t: float):
        """E[x_0 | x_t = x] and E[eps | x_t = x], each shaped like x, float64."""
        _, r, a, s, pdiff = self._terms(x, t)
        x0_k = self.dist.means[:, None, :] + a * torch.einsum("kij,kbj->kbi", self.dist.covariances, pdiff)
        x0 = (r[..., None] * x0_k).sum(0)
        eps = s * (r[..., None] * pdiff).sum(0)
        shape = (x.shape[0],) + self.data_shape
        return x0.reshape(shape), eps.reshape(shape)

    def velocity(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """The exact v(x, t) = alpha'(t) E[x_0 | x] + sigma'(t) E[eps | x], in x's dtype."""
        if cond is not None:
            raise DDPMLabError("FlowMixtureOracle is the unconditional oracle; it takes no condition")
        t = float(t)
        x0, eps = self.posterior_means(x, t)
        return (float(self.path.d_alpha(t)) * x0 + float(self.path.d_sigma(t)) * eps).to(x.dtype)

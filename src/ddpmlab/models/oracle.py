"""The exact reverse process of a Gaussian mixture: the best possible model, usable like a trained one.

For data q(x_0) = sum_k w_k N(mu_k, S_k) every marginal of the forward process (Ho et al. 2020, eq. 4)
is again a mixture,

    q(x_t) = sum_k w_k N(m_t,k, C_t,k),   m_t,k = sqrt(abar_t) mu_k,   C_t,k = abar_t S_k + (1 - abar_t) I,

and within component k the pair (x_{t-1}, x_t) is jointly Gaussian with x_t = sqrt(alpha_t) x_{t-1} +
sqrt(beta_t) eps (eq. 2). Conditioning gives, for t = 1..T,

    q(x_{t-1} | x_t, k) = N(m_{t-1,k} + G_t,k (x_t - m_t,k), beta_t C_{t-1,k} C_t,k^{-1}),
    G_t,k = sqrt(alpha_t) C_{t-1,k} C_t,k^{-1},

and q(x_{t-1} | x_t) is the mixture of these with weights r_k(x_t) = q(k | x_t), the responsibilities
of x_t under q(x_t). At t = 1 this is the data posterior q(x_0 | x_1). ``MixtureOracle`` returns that
mixture's exact mean and variance as a reverse step, so every sampler and metric runs on it.
Everything is computed in float64; time indices follow ``ddpmlab.core.schedule``.
"""
from __future__ import annotations

import math

import torch

from ddpmlab.core.contract import PMeanVariance
from ddpmlab.core.process import ReverseProcess
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.parameterisation import from_mean_variance
from ddpmlab.core.schedule import NoiseSchedule
from ddpmlab.core.utils import DDPMLabError

LOG_2PI = math.log(2 * math.pi)


def _matvec(m: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """m v for matrices m (K, 1 or B, d, d) and vectors v (K, B, d)."""
    if m.shape[1] == 1 and m.shape[-1] > 4:
        return torch.einsum("kij,kbj->kbi", m[:, 0], v)
    return (m * v[..., None, :]).sum(-1)  # elementwise: batches of tiny matmuls are slow


def _mixture_terms(x, weights, means, precisions, logdets):
    """Log-density, responsibilities and exact score of the Gaussian mixture sum_k w_k N(m_k, P_k^{-1}).

    Component-first layout (reductions over K then run along the leading axis): x (B, d); means
    (K, 1 or B, d); precisions (K, 1 or B, d, d); logdets (K, 1 or B) of the covariances. Returns
    log q(x) (B,), responsibilities r_k(x) (K, B), and the score sum_k r_k (-P_k (x - m_k)) (B, d).
    """
    diff = x - means  # (K, B, d)
    pdiff = _matvec(precisions, diff)  # (K, B, d)
    comp = -0.5 * ((diff * pdiff).sum(-1) + logdets + x.shape[1] * LOG_2PI) + weights.log()[:, None]
    top = comp.amax(0)  # (B,)
    log_q = top + (comp - top).exp().sum(0).log()
    r = (comp - log_q).exp()  # (K, B)
    score = -(r[..., None] * pdiff).sum(0)
    return log_q, r, score


class MixtureOracle(ReverseProcess):
    """The exact reverse process of ``dist`` under ``schedule``, with the interface of a trained model.

    ``p_mean_variance(x_t, t)`` gives the mean and the diagonal of the covariance of q(x_{t-1} | x_t)
    (for d > 1 the best diagonal Gaussian in the KL sense; the full matrix is ``q_prev_mean_covariance``).
    ``score``, ``eps`` and ``q_log_prob`` give grad log q(x_t), the implied epsilon and log q(x_t).
    Data have shape (B, *data_shape) with prod(data_shape) = d, the mixture's dimension.

    Precomputed buffers, component first and then indexed by paper step t: ``means_t`` (K, T + 1, d)
    m_t,k, ``precisions_t`` (K, T + 1, d, d) C_t,k^{-1}, ``logdets_t`` (K, T + 1) log det C_t,k, and
    for t >= 1 ``gains_t`` G_t,k and ``posterior_covariances_t`` (K, T + 1, d, d) (t = 0 unused, zero).
    """

    def __init__(self, dist: GaussianMixture, schedule: NoiseSchedule, data_shape=None):
        self.dist, self.schedule = dist, schedule
        self.data_shape = tuple(dist.event_shape if data_shape is None else data_shape)
        d = dist.dim
        if math.prod(self.data_shape) != d:
            raise DDPMLabError(f"data shape {self.data_shape} does not hold the mixture's {d} dimensions")
        abar = schedule.alphas_cumprod[None, :, None, None]  # (1, T + 1, 1, 1)
        eye = torch.eye(d, dtype=torch.float64)
        self.means_t = schedule.sqrt_alphas_cumprod[None, :, None] * self.dist.means[:, None, :]  # (K, T + 1, d)
        cov = abar * dist.covariances[:, None] + (1 - abar) * eye  # (K, T + 1, d, d)
        chol = torch.linalg.cholesky(cov)
        self.precisions_t = torch.cholesky_inverse(chol)
        self.logdets_t = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K, T + 1)
        # C_{t-1} and C_t commute (C_t = alpha_t C_{t-1} + beta_t I), so the conditional covariance
        # C_{t-1} - alpha_t C_{t-1} C_t^{-1} C_{t-1} equals beta_t C_{t-1} C_t^{-1}: no cancellation.
        c_prev_p = cov[:, :-1] @ self.precisions_t[:, 1:]  # (K, T, d, d)
        gains = schedule.alphas[None, 1:, None, None].sqrt() * c_prev_p
        post = schedule.betas[None, 1:, None, None] * c_prev_p
        post = 0.5 * (post + post.transpose(-1, -2))
        zero = torch.zeros_like(gains[:, :1])
        self.gains_t = torch.cat([zero, gains], 1)
        self.posterior_covariances_t = torch.cat([zero, post], 1)

    def respaced(self, num_steps: int) -> "MixtureOracle":
        """The exact reverse process on ``num_steps`` kept steps (new betas from the kept alpha-bars)."""
        return MixtureOracle(self.dist, self.schedule.spaced(num_steps), self.data_shape)

    # -- helpers ---------------------------------------------------------------------------------
    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.dist.dim).to(torch.float64)  # (B, d)

    def _steps(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t).long().reshape(-1)
        return t.expand(x.shape[0]) if t.numel() == 1 else t

    @staticmethod
    def _at(arr: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """arr[:, t], shape (K, B, ...); (K, 1, ...) when the whole batch shares one step (sampling)."""
        if bool((t == t[0]).all()):
            return arr[:, t[0]][:, None]
        return arr[:, t]

    def _marginal(self, alpha_bar):
        """Means (K, 1 or B, d), precisions and log-determinants of q(x_t) at a scalar or (B,) alpha-bar."""
        a = torch.as_tensor(alpha_bar, dtype=torch.float64).reshape(1, -1)  # (1, 1 or B)
        eye = torch.eye(self.dist.dim, dtype=torch.float64)
        cov = a[..., None, None] * self.dist.covariances[:, None] + (1 - a[..., None, None]) * eye
        chol = torch.linalg.cholesky(cov)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        return a.sqrt()[..., None] * self.dist.means[:, None, :], torch.cholesky_inverse(chol), logdet

    # -- the marginal q(x_t) -----------------------------------------------------------------------
    def marginal(self, alpha_bar: float) -> GaussianMixture:
        """q(x_t) at ``alpha_bar`` as a GaussianMixture (eq. 4 applied to each component)."""
        return self.dist.diffused(alpha_bar)

    def q_log_prob(self, x: torch.Tensor, alpha_bar) -> torch.Tensor:
        """log q(x_t) at alpha-bar (a float or a (B,) tensor), shape (B,), float64."""
        return _mixture_terms(self._flat(x), self.dist.weights, *self._marginal(alpha_bar))[0]

    def score(self, x: torch.Tensor, t_c: float, alpha_bar: float, cond=None) -> torch.Tensor:
        """The contract's score: exact, at the continuous step's alpha-bar (``q_score``)."""
        self._unconditional(cond)
        return self.q_score(x.to(torch.float64), alpha_bar).to(x.dtype)

    def _unconditional(self, cond) -> None:
        if cond is not None:
            raise DDPMLabError("MixtureOracle is the unconditional oracle; it takes no condition")

    def q_score(self, x: torch.Tensor, alpha_bar) -> torch.Tensor:
        """The exact score grad_x log q(x_t) at alpha-bar (a float or a (B,) tensor), shaped like x, float64.

        Differentiable in x (the probability-flow ODE takes its divergence by autograd).
        """
        score = _mixture_terms(self._flat(x), self.dist.weights, *self._marginal(alpha_bar))[2]
        return score.reshape((x.shape[0],) + self.data_shape)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The exact epsilon prediction E[eps | x_t] = -sqrt(1 - abar_t) grad log q(x_t) at paper step t."""
        x = self._flat(x_t)
        t = self._steps(x, t)
        score = _mixture_terms(x, self.dist.weights, self._at(self.means_t, t), self._at(self.precisions_t, t),
                               self._at(self.logdets_t, t))[2]
        eps = -self.schedule.sqrt_one_minus_alphas_cumprod[t][:, None] * score
        return eps.reshape(x_t.shape)

    # -- the reverse step q(x_{t-1} | x_t) ------------------------------------------------------
    def _posterior_components(self, x_t: torch.Tensor, t: torch.Tensor):
        """Responsibilities r_k(x_t) (K, B), means (K, B, d) and covariances (K, 1 or B, d, d) of
        q(x_{t-1} | x_t, k)."""
        x = self._flat(x_t)
        t = self._steps(x, t)
        if bool((t < 1).any()) or bool((t > self.schedule.T).any()):
            raise DDPMLabError(f"reverse steps run over t = 1..{self.schedule.T}")
        m_t = self._at(self.means_t, t)
        r = _mixture_terms(x, self.dist.weights, m_t, self._at(self.precisions_t, t),
                           self._at(self.logdets_t, t))[1]
        comp_means = self._at(self.means_t, t - 1) + _matvec(self._at(self.gains_t, t), x - m_t)
        return r, comp_means, self._at(self.posterior_covariances_t, t)

    def q_prev_mean_covariance(self, x_t: torch.Tensor, t: torch.Tensor):
        """Exact mean (B, d) and full covariance (B, d, d) of q(x_{t-1} | x_t), float64:
        sum_k r_k m_k and sum_k r_k [S_k + (m_k - m)(m_k - m)^T] (law of total covariance)."""
        r, comp_means, comp_covs = self._posterior_components(x_t, t)
        mean = (r[..., None] * comp_means).sum(0)
        dev = comp_means - mean  # (K, B, d)
        cov = (r[..., None, None] * (comp_covs + dev[..., :, None] * dev[..., None, :])).sum(0)
        return mean, cov

    def p_mean_variance(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> PMeanVariance:
        """Mean and (diagonal) variance of the exact q(x_{t-1} | x_t), shaped like x_t, float64, with the
        exact E[x_0 | x_t] and E[eps | x_t] (the posterior mean is linear in E[x_0 | x_t], eq. 7)."""
        self._unconditional(cond)
        r, comp_means, comp_covs = self._posterior_components(x_t, t)
        r = r[..., None]  # (K, B, 1)
        mean = (r * comp_means).sum(0)  # (B, d)
        comp_vars = torch.diagonal(comp_covs, dim1=-2, dim2=-1)  # (K, 1 or B, d)
        variance = (r * (comp_vars + (comp_means - mean).square())).sum(0)
        shape = (x_t.shape[0],) + self.data_shape
        return from_mean_variance(self.schedule, x_t, self._steps(x_t, t), mean.reshape(shape),
                                  variance.reshape(shape))

"""The exact optimum of the denoising loss on a finite training set: the empirical-optimal model.

A network trained on N points x_1..x_N sees x_t = alpha x_i + sigma eps (Ho et al. 2020, eq. 4: alpha =
sqrt(abar_t), sigma = sqrt(1 - abar_t); a flow's path, ``ddpmlab.core.paths``). The minimiser of every
denoising loss on that set is the answer for the forward-kernel-smoothed training set

    q_t(x) = (1/N) sum_i N(x; alpha x_i, sigma^2 I),

a mixture of N Gaussians, one per training point, whose posterior over the points is a softmax,

    r_i(x) = q(i | x_t = x) = softmax_i(-|x - alpha x_i|^2 / (2 sigma^2)),

so E[x_0 | x_t] = sum_i r_i x_i, Var[x_0 | x_t] = sum_i r_i (x_i - E[x_0 | x_t])^2 (per coordinate) and
E[eps | x_t] = (x_t - alpha E[x_0 | x_t]) / sigma. A model that reaches this optimum reproduces its
training points: its samples are copies (memorisation); the population optimum (``MixtureOracle``)
is what generalisation aims at.

``EmpiricalOracle`` (DDPM: the reverse step, score and eps at every step of a schedule) and
``FlowEmpiricalOracle`` (flow: the velocity on a path) satisfy their family's model contract, so every
sampler and metric runs on them. Sums over the training points run in chunks with a streaming
log-sum-exp (a running maximum, and the weighted mean and spread merged chunk by chunk, Chan et al.
1979; ``ddpmlab.models.empirical_sums``), so 50,000 points cost bounded memory. Everything is float64.
"""
from __future__ import annotations

import math

import torch

from ddpmlab.core.contract import PMeanVariance
from ddpmlab.core.process import ReverseProcess, VelocityProcess
from ddpmlab.core.mean_types import predict_eps_from_x0
from ddpmlab.core.paths import LinearPath
from ddpmlab.core.schedule import NoiseSchedule
from ddpmlab.core.utils import DDPMLabError, extract
from ddpmlab.models.empirical_sums import LOG_2PI, TINY_VARIANCE, per_row, posterior_moments, training_set

class _Empirical:
    """What both families' empirical oracles share: the training set, its shape and the posterior."""

    def _setup(self, data, data_shape, chunk_size) -> None:
        self.train, self.data_shape = training_set(data, data_shape)  # (N, d) float64
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        if self.chunk_size is not None and self.chunk_size < 1:
            raise DDPMLabError(f"chunk_size must be >= 1 training points, got {chunk_size}")

    @property
    def num_points(self) -> int:
        return self.train.shape[0]

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], self.train.shape[1]).to(torch.float64).cpu()  # (B, d)

    def _moments(self, x: torch.Tensor, alpha, sigma, variance: bool = False):
        return posterior_moments(self._flat(x), self.train, alpha, sigma, variance, self.chunk_size)

    def _log_density(self, x: torch.Tensor, alpha, sigma) -> torch.Tensor:
        """log q_t(x) = logsumexp_i(-|x - alpha x_i|^2 / (2 sigma^2)) - log N - d/2 log(2 pi sigma^2)."""
        s = per_row(sigma, x.shape[0])[:, 0]
        if bool((s <= 0).any()):
            raise DDPMLabError("the training set itself (sigma = 0) has no density; ask at a noise level > 0")
        log_norm = self._moments(x, alpha, sigma)[0]
        d = self.train.shape[1]
        return log_norm - math.log(self.num_points) - 0.5 * d * (LOG_2PI + 2 * s.log())

    def _unconditional(self, cond) -> None:
        if cond is not None:
            raise DDPMLabError(f"{type(self).__name__} is the unconditional optimum; it takes no condition")


class EmpiricalOracle(_Empirical, ReverseProcess):
    """The empirical-optimal DDPM of the training set ``data`` (N, *dims) under ``schedule``.

    ``p_mean_variance(x_t, t)``: the exact q(x_{t-1} | x_t) of the smoothed training set, a mixture over
    the points of N(coef1_t x_i + coef2_t x_t, beta-tilde_t I) (eq. 7) with weights r_i(x_t), returned
    as its mean coef1_t E[x_0 | x_t] + coef2_t x_t and diagonal variance beta-tilde_t + coef1_t^2
    Var[x_0 | x_t], with the exact E[x_0 | x_t] and E[eps | x_t]. ``score``, ``eps`` and ``q_log_prob``
    as ``MixtureOracle``'s. ``chunk_size``: training points per chunk (default: what the memory budget
    allows). For a flow, ``FlowEmpiricalOracle``; ``family_of(model).empirical_oracle(model, data)`` picks.
    """

    def __init__(self, data, schedule: NoiseSchedule, data_shape=None, chunk_size: int | None = None):
        if not isinstance(schedule, NoiseSchedule):
            raise DDPMLabError(f"EmpiricalOracle needs a NoiseSchedule (dl.make_schedule), got "
                               f"{type(schedule).__name__}; a flow's is FlowEmpiricalOracle")
        self._setup(data, data_shape, chunk_size)
        self.schedule = schedule

    def respaced(self, num_steps) -> "EmpiricalOracle":
        """The same optimum on fewer kept steps (``NoiseSchedule.spaced``)."""
        sched = self.schedule.spaced(num_steps)
        if sched is self.schedule:
            return self
        return EmpiricalOracle(self.train, sched, self.data_shape, self.chunk_size)

    def _steps(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t).long().reshape(-1).cpu()
        return t.expand(x.shape[0]) if t.numel() == 1 else t

    def q_log_prob(self, x: torch.Tensor, alpha_bar) -> torch.Tensor:
        """log q_t(x) of the smoothed training set at alpha-bar (a float or a (B,) tensor), (B,) float64."""
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
        return self._log_density(x, ab.sqrt(), (1 - ab).sqrt())

    def q_score(self, x: torch.Tensor, alpha_bar) -> torch.Tensor:
        """grad_x log q_t(x) = -(x - sqrt(abar) E[x_0 | x]) / (1 - abar), shaped like x, float64."""
        ab = torch.as_tensor(alpha_bar, dtype=torch.float64)
        a, s2 = per_row(ab.sqrt(), x.shape[0]), per_row(1 - ab, x.shape[0])
        x0 = self._moments(x, a, s2.sqrt())[1]
        return (-(self._flat(x) - a * x0) / s2).reshape((x.shape[0],) + self.data_shape)

    def score(self, x: torch.Tensor, t_c: float, alpha_bar: float, cond=None) -> torch.Tensor:
        """The contract's score: exact, at the continuous step's alpha-bar (``q_score``)."""
        self._unconditional(cond)
        return self.q_score(x, alpha_bar).to(x.dtype)

    def eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """The exact E[eps | x_t] at paper steps t, shaped like x_t, float64."""
        return self.p_mean_variance(x_t, t).pred_eps

    def p_mean_variance(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> PMeanVariance:
        """Mean and diagonal variance of the exact q(x_{t-1} | x_t) of the smoothed training set, with the
        exact E[x_0 | x_t] and E[eps | x_t]; shaped like x_t, float64 on the CPU."""
        self._unconditional(cond)
        t = self._steps(x_t, t)
        if bool((t < 1).any()) or bool((t > self.schedule.T).any()):
            raise DDPMLabError(f"reverse steps run over t = 1..{self.schedule.T}")
        s = self.schedule
        x = self._flat(x_t)
        _, x0, var0 = self._moments(x, s.sqrt_alphas_cumprod[t], s.sqrt_one_minus_alphas_cumprod[t], variance=True)
        c1, c2 = extract(s.posterior_mean_coef1, t, x), extract(s.posterior_mean_coef2, t, x)
        mean = c1 * x0 + c2 * x
        variance = (extract(s.posterior_variance, t, x) + c1.square() * var0).clamp_min(TINY_VARIANCE)
        shape = (x.shape[0],) + self.data_shape
        x_t64, x0 = x.reshape(shape), x0.reshape(shape)
        eps = predict_eps_from_x0(s, x_t64, t, x0)
        variance = variance.reshape(shape)
        return PMeanVariance(mean.reshape(shape), variance, variance.log(), x0, eps)


class FlowEmpiricalOracle(_Empirical, VelocityProcess):
    """The empirical-optimal flow of the training set ``data`` (N, *dims) on ``path`` (default the linear
    path): v(x, t) = alpha'(t) E[x_0 | x_t = x] + sigma'(t) E[eps | x_t = x], with a flow model's interface.

    At t = 0 the smoothed set is the points themselves: E[x_0 | x] is taken as the nearest point and
    E[eps | x] as 0 (the limit of ``FlowMixtureOracle`` as its components shrink), so v(x, 0) = alpha'(0)
    x_nearest. An Euler step onto t = 0 lands on E[x_0 | x_t] exactly.
    """

    def __init__(self, data, path=None, data_shape=None, chunk_size: int | None = None):
        self._setup(data, data_shape, chunk_size)
        self.path = path if path is not None else LinearPath()

    def _coefficients(self, x: torch.Tensor, t):
        """alpha, sigma, alpha', sigma' at time t (a float or a (B,) tensor), each a column (B, 1)."""
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1).cpu()
        p = self.path
        if t.numel() == 1:  # one time for all rows (what the solvers ask; a VPPath takes floats only)
            return [per_row(float(f(float(t))), x.shape[0]) for f in (p.alpha, p.sigma, p.d_alpha, p.d_sigma)]
        t = per_row(t, x.shape[0])
        return [torch.as_tensor(f(t), dtype=torch.float64) for f in (p.alpha, p.sigma, p.d_alpha, p.d_sigma)]

    def q_log_prob(self, x: torch.Tensor, t) -> torch.Tensor:
        """log q_t(x) of the smoothed training set at time t (a float or a (B,) tensor in (0, 1]), (B,)."""
        a, s = self._coefficients(x, t)[:2]
        return self._log_density(x, a, s)

    def posterior_means(self, x: torch.Tensor, t):
        """E[x_0 | x_t = x] and E[eps | x_t = x] at time t (a float or a (B,) tensor), each shaped like x,
        float64."""
        a, s = self._coefficients(x, t)[:2]
        x0 = self._moments(x, a, s)[1]
        eps = torch.where(s > 0, (self._flat(x) - a * x0) / s.clamp_min(TINY_VARIANCE), torch.zeros_like(x0))
        shape = (x.shape[0],) + self.data_shape
        return x0.reshape(shape), eps.reshape(shape)

    def velocity(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """The exact v(x, t) = alpha'(t) E[x_0 | x] + sigma'(t) E[eps | x], in x's dtype."""
        self._unconditional(cond)
        x0, eps = self.posterior_means(x, t)
        da, ds = self._coefficients(x, t)[2:]
        view = (-1,) + (1,) * (x.dim() - 1)
        return (da.reshape(view) * x0 + ds.reshape(view) * eps).to(x.dtype)

"""Sample metrics for 1-D data, each with the noise floor it should be read against."""
from __future__ import annotations

import math

import numpy as np
import torch

from ddpmlab.core.distributions import GaussianMixture


def _flat1d(x) -> np.ndarray:
    x = np.asarray(torch.as_tensor(x).detach().double().cpu())
    if x.ndim > 1 and x[0].size != 1:
        raise ValueError(f"1-D metric needs one feature per sample, got shape {x.shape}")
    return x.reshape(-1)


def w1(samples, reference) -> float:
    """1-D Wasserstein distance between two samples (scipy)."""
    from scipy.stats import wasserstein_distance  # scipy is imported where used: `import ddpmlab` stays fast

    return float(wasserstein_distance(_flat1d(samples), _flat1d(reference)))


def w1_against(dist: GaussianMixture, samples, generator: torch.Generator, n_ref: int = 100_000) -> dict:
    """W1 of ``samples`` to a fresh sample of ``dist``, and the floor: the same distance for a true
    sample of ``samples``' size (what a perfect model would score)."""
    n = _flat1d(samples).size
    ref = dist.sample(n_ref, generator)
    true = dist.sample(n, generator)
    return {"w1": w1(samples, ref), "w1_noise_floor": w1(true, ref)}


def component_fractions(dist: GaussianMixture, samples) -> list[float]:
    """Fraction of samples assigned to each component (the one of highest responsibility)."""
    x = torch.as_tensor(samples).reshape(len(samples), -1)
    k = dist.responsibilities(x).argmax(1)
    return (torch.bincount(k, minlength=dist.num_components).double() / len(k)).tolist()


KS_MEAN_SQRT_N = math.sqrt(math.pi / 2) * math.log(2)  # E[sqrt(n) D_n] -> this, for n -> infinity


def _check_1d(dist: GaussianMixture) -> None:
    if dist.dim != 1:
        raise ValueError(f"1-D metric needs a 1-D distribution, got dimension {dist.dim}")


def mixture_cdf_1d(dist: GaussianMixture, x) -> np.ndarray:
    """CDF of a 1-D Gaussian mixture: sum_k w_k Phi((x - mu_k) / s_k)."""
    _check_1d(dist)
    w = dist.weights.numpy()
    mu, sd = dist.means[:, 0].numpy(), dist.covariances[:, 0, 0].sqrt().numpy()
    x = np.asarray(x, dtype=np.float64)
    from scipy.special import ndtr

    return (w * ndtr((x[..., None] - mu) / sd)).sum(-1)


def _mixture_cdf_integral_1d(dist: GaussianMixture, x: np.ndarray, upper: bool = False) -> np.ndarray:
    """int_{-inf}^x F(y) dy of a 1-D mixture, sum_k w_k s_k psi((x - mu_k) / s_k) with psi(z) = z Phi(z) +
    phi(z) (psi' = Phi); with ``upper`` the tail int_x^inf (1 - F(y)) dy, the same sum at -z."""
    w = dist.weights.numpy()
    mu, sd = dist.means[:, 0].numpy(), dist.covariances[:, 0, 0].sqrt().numpy()
    z = (x[..., None] - mu) / sd
    z = -z if upper else z
    from scipy.special import ndtr

    return (w * sd * (z * ndtr(z) + np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi))).sum(-1)


def w1_to_mixture_1d(dist: GaussianMixture, samples) -> float:
    """W1 of ``samples`` to the exact 1-D mixture: int |F_n(x) - F(x)| dx, no reference sample.

    Between sorted samples x_(i) <= x <= x_(i+1) the empirical CDF is c = i / n; F rises through c at most
    once (at the quantile x* = F^-1(c), found by bisection only where F(x_(i)) < c < F(x_(i+1))), so with
    G(x) = int_{-inf}^x F (closed form) the piece is c (x* - a) - (G(x*) - G(a)) + (G(b) - G(x*)) - c (b - x*),
    x* clipped to [a, b]. The tails are G(x_(1)) and int_{x_(n)}^inf (1 - F). Exact up to rounding.
    """
    _check_1d(dist)
    x = np.sort(_flat1d(samples))
    n = x.size
    a, b = x[:-1], x[1:]
    c = np.arange(1, n) / n
    Fa, Fb = mixture_cdf_1d(dist, a), mixture_cdf_1d(dist, b)
    star = np.where(c <= Fa, a, b)  # F >= c on the whole piece, or F <= c on it
    cross = np.flatnonzero((Fa < c) & (c < Fb))
    lo, hi = a[cross], b[cross]
    for _ in range(100):  # bisection to rounding: the piece's length halves each time
        mid = 0.5 * (lo + hi)
        below = mixture_cdf_1d(dist, mid) < c[cross]
        lo, hi = np.where(below, mid, lo), np.where(below, hi, mid)
        if not np.any(hi - lo > 1e-15 * np.maximum(1.0, np.abs(hi))):
            break
    star[cross] = 0.5 * (lo + hi)
    G = lambda v: _mixture_cdf_integral_1d(dist, v)  # noqa: E731
    Ga, Gb, Gs = G(a), G(b), G(star)
    pieces = c * (star - a) - (Gs - Ga) + (Gb - Gs) - c * (b - star)
    tails = G(x[:1])[0] + _mixture_cdf_integral_1d(dist, x[-1:], upper=True)[0]
    return float(pieces.sum() + tails)


def ks_against(dist: GaussianMixture, samples) -> dict:
    """Kolmogorov-Smirnov statistic of ``samples`` against the true CDF, its p-value, and the floor: the
    expected statistic of a true sample of the same size, sqrt(pi / 2) log 2 / sqrt(n) (the mean of
    Kolmogorov's limiting distribution)."""
    x = _flat1d(samples)
    from scipy.stats import kstest

    res = kstest(x, lambda v: mixture_cdf_1d(dist, v))
    return {"ks": float(res.statistic), "ks_pvalue": float(res.pvalue),
            "ks_noise_floor": KS_MEAN_SQRT_N / math.sqrt(x.size)}


ENTROPY_BREAKS_SD = (-8.0, -4.0, -2.0, 0.0, 2.0, 4.0, 8.0)  # quad's break points, in sds from each mean


def mixture_entropy_1d(dist: GaussianMixture) -> float:
    """Exact entropy -int q(x) log q(x) dx of a 1-D mixture in nats, by adaptive quadrature (scipy quad).

    No model's expected negative log-likelihood on this data can be lower.
    """
    _check_1d(dist)
    mu, sd = dist.means[:, 0], dist.covariances[:, 0, 0].sqrt()
    lo, hi = float((mu - 12 * sd).min()), float((mu + 12 * sd).max())

    def integrand(x):
        logq = float(dist.log_prob(torch.tensor([[x]], dtype=torch.float64))[0])
        return -math.exp(logq) * logq

    # break points around every component (all inside [lo, hi]), so that quad never steps over a narrow
    # one: with the means alone, a component of sd 1e-3 beside one of sd 1 lost 1.2 nats
    breaks = sorted(set((mu[:, None] + sd[:, None] * torch.tensor(ENTROPY_BREAKS_SD)).flatten().tolist()))
    from scipy.integrate import quad

    return float(quad(integrand, lo, hi, points=breaks, limit=500, epsabs=1e-11, epsrel=1e-10)[0])


def component_fractions_against(dist: GaussianMixture, samples) -> dict:
    """Component fractions of ``samples`` (highest responsibility), the true weights, and the floor: the
    binomial standard error sqrt(w (1 - w) / n) a true sample of that size would show."""
    n = len(samples)
    w = dist.weights
    return {"component_fractions": component_fractions(dist, samples), "true_component_fractions": w.tolist(),
            "component_fractions_se": (w * (1 - w) / n).sqrt().tolist()}

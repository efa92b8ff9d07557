"""Data distributions with exact densities: Gaussian mixtures in any dimension.

A Gaussian mixture diffused by the forward process stays one: q(x_t) has means sqrt(abar_t) mu_k and
covariances abar_t S_k + (1 - abar_t) I (see ``GaussianMixture.diffused``), which is what makes exact
evaluation possible (``ddpmlab.evaluation``).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from ddpmlab.core.utils import DDPMLabError


class GaussianMixture:
    """sum_k w_k N(mu_k, S_k) over R^d; samples have shape (n, d). Parameters are kept in float64.

    Args:
        weights: (K,) non-negative, normalised here.
        means: (K, d).
        covariances: (K, d, d) symmetric positive definite; or (K, d) diagonal variances; or (K,)
            isotropic variances.
    """

    def __init__(self, weights, means, covariances):
        w = torch.as_tensor(weights, dtype=torch.float64).flatten()
        mu = torch.as_tensor(means, dtype=torch.float64)
        if mu.dim() == 1:
            mu = mu[:, None]
        K, d = mu.shape
        cov = torch.as_tensor(covariances, dtype=torch.float64)
        if cov.dim() == 1:
            cov = cov[:, None, None] * torch.eye(d, dtype=torch.float64)
        elif cov.dim() == 2:
            cov = torch.diag_embed(cov)
        if w.numel() != K or cov.shape != (K, d, d):
            raise DDPMLabError(f"mixture shapes disagree: weights {tuple(w.shape)}, means {tuple(mu.shape)}, "
                               f"covariances {tuple(cov.shape)}")
        if not bool((w >= 0).all()) or float(w.sum()) <= 0:
            raise DDPMLabError("mixture weights must be non-negative with a positive sum")
        try:
            self.scale_tril = torch.linalg.cholesky(cov)
        except RuntimeError as exc:  # torch.linalg.LinAlgError subclasses RuntimeError
            raise DDPMLabError("mixture covariances must be positive definite") from exc
        self.weights = w / w.sum()
        self.means = mu
        self.covariances = cov

    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def event_shape(self) -> tuple:
        return (self.dim,)

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        """n samples, shape (n, d)."""
        return self.sample_labelled(n, generator, dtype)[0]

    def sample_labelled(self, n: int, generator: torch.Generator | None = None, dtype=torch.float32):
        """n samples (n, d) and the component k that drew each (n,) long: the same draws as ``sample``."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        if self.dim == 1:  # L z is one product: the same numbers without a batch of 1 x 1 matrix products
            x = self.means.index_select(0, comp) + self.scale_tril.view(-1, 1).index_select(0, comp) * z
        else:
            x = self.means.index_select(0, comp) + (self.scale_tril.index_select(0, comp) @ z[:, :, None])[:, :, 0]
        return x.to(dtype), comp

    def component(self, k: int) -> "GaussianMixture":
        """Component k alone, N(mu_k, S_k): the class-conditional q(x_0 | c = k) of labelled mixture data."""
        if not 0 <= int(k) < self.num_components:
            raise DDPMLabError(f"component {k} out of range 0..{self.num_components - 1}")
        k = int(k)
        return GaussianMixture([1.0], self.means[k:k + 1], self.covariances[k:k + 1])

    def component_log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log N(x; mu_k, S_k) for every component: (n, K), float64."""
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, self.dim)
        diff = x[:, None, :] - self.means[None]  # (n, K, d)
        L = self.scale_tril.expand(x.shape[0], -1, -1, -1)
        sol = torch.linalg.solve_triangular(L, diff[..., None], upper=False)[..., 0]
        maha = (sol ** 2).sum(-1)
        logdet = 2 * torch.log(torch.diagonal(self.scale_tril, dim1=-2, dim2=-1)).sum(-1)
        return -0.5 * (maha + logdet + self.dim * math.log(2 * math.pi))

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log density, shape (n,), float64."""
        return torch.logsumexp(self.component_log_prob(x) + self.weights.log(), dim=1)

    def responsibilities(self, x: torch.Tensor) -> torch.Tensor:
        """Posterior component probabilities p(k | x): (n, K)."""
        return torch.softmax(self.component_log_prob(x) + self.weights.log(), dim=1)

    def diffused(self, alpha_bar: float) -> "GaussianMixture":
        """The marginal q(x_t) for alpha-bar_t: means sqrt(abar) mu_k, covariances abar S_k + (1 - abar) I."""
        a = float(alpha_bar)
        return self.on_path(math.sqrt(a), math.sqrt(1.0 - a))

    def on_path(self, alpha: float, sigma: float) -> "GaussianMixture":
        """The law of alpha x_0 + sigma eps (eps ~ N(0, I)): means alpha mu_k, covariances alpha^2 S_k + sigma^2 I
        (the marginal q(x_t) of any Gaussian path at coefficients alpha(t), sigma(t))."""
        eye = torch.eye(self.dim, dtype=torch.float64)
        return GaussianMixture(self.weights, float(alpha) * self.means,
                               float(alpha) ** 2 * self.covariances + float(sigma) ** 2 * eye)

    def to_dict(self) -> dict:
        return {"weights": self.weights.tolist(), "means": self.means.tolist(),
                "covariances": self.covariances.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> "GaussianMixture":
        return cls(d["weights"], d["means"], d["covariances"])


def seed_mixture(weights: Sequence[float] = (1.0, 2.0), means: Sequence[float] = (-4.0, 4.0),
                 std: float = 1.0) -> GaussianMixture:
    """The seed's 1-D data: weights 1:2, means -4 / +4, standard deviation 1."""
    return GaussianMixture(list(weights), [[m] for m in means], [std ** 2] * len(means))

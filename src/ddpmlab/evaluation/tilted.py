"""The exact tilted target of guidance on labelled Gaussian-mixture data:

    p_g(x | c) = q(x | c)^g q(x)^(1 - g) / Z_g,    q(x | c) = N(mu_c, S_c),  q(x) = sum_k w_k N(mu_k, S_k),

the density classifier-free guidance is often said to sample (Ho & Salimans 2022; with exact scores it
does not: Chidambaram et al. 2024, Bradley & Nakkiran 2025). In ddpmlab's convention (eps_w = (1 + w)
eps(x, c) - w eps(x)) the weight w aims at g = 1 + w; g = 1 is the class's own component, g = 0 the whole
mixture. For g >= 1, q(x) >= w_c q(x | c) bounds p_g by q(x | c) / w_c^(g - 1): it is integrable with
Gaussian tails. ``log_density`` is log p_g up to log Z_g in closed form; ``on_grid`` normalises it on a
grid (1-D and 2-D); ``sample`` draws by inverse CDF on the grid (1-D) or by importance resampling (2-D).
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.utils import DDPMLabError

SPAN = 10.0  # the grid reaches SPAN standard deviations past every component
GRID_POINTS = {1: 20_001, 2: 401}  # points per axis
PROPOSAL_DRAWS = 20  # importance resampling: proposal draws per sample
CHUNK = 100_000  # rows per log-density evaluation


class TiltedTarget:
    """p_g(x | c) for class (component) ``c`` of the mixture ``dist`` and exponent ``g`` >= 0."""

    def __init__(self, dist: GaussianMixture, c: int, g: float):
        if not 0 <= int(c) < dist.num_components:
            raise DDPMLabError(f"class {c} out of range: the data have classes 0..{dist.num_components - 1}")
        if not (math.isfinite(float(g)) and float(g) >= 0):
            raise DDPMLabError(f"the tilt exponent g must be a finite number >= 0, got {g}")
        self.dist, self.c, self.g = dist, int(c), float(g)
        self.component = dist.component(self.c)

    def log_density(self, x: torch.Tensor) -> torch.Tensor:
        """g log q(x | c) + (1 - g) log q(x) (n,), float64: log p_g(x | c) + log Z_g."""
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, self.dist.dim)
        parts = [self.g * self.component.log_prob(xs) + (1.0 - self.g) * self.dist.log_prob(xs)
                 for xs in x.split(CHUNK)]
        return torch.cat(parts) if parts else torch.empty(0, dtype=torch.float64)

    def axes(self) -> list[torch.Tensor]:
        """The grid's axes: per dimension, ``GRID_POINTS`` points over every component's mean +- SPAN sd."""
        sd = torch.diagonal(self.dist.covariances, dim1=-2, dim2=-1).sqrt()
        lo, hi = (self.dist.means - SPAN * sd).min(0).values, (self.dist.means + SPAN * sd).max(0).values
        return [torch.linspace(float(a), float(b), GRID_POINTS[self.dist.dim], dtype=torch.float64)
                for a, b in zip(lo, hi)]

    def on_grid(self):
        """(axes, density on the grid normalised to integrate to 1 (1-D: (m,), 2-D: (m, m), indexed [x, y]),
        log Z_g), by the trapezoid rule. 1-D and 2-D only."""
        if self.dist.dim > 2:
            raise DDPMLabError(f"the tilted target is normalised on a grid in 1-D and 2-D, not {self.dist.dim}-D")
        axes = self.axes()
        mesh = torch.stack(torch.meshgrid(*axes, indexing="ij"), -1).reshape(-1, self.dist.dim)
        logp = self.log_density(mesh).reshape([a.numel() for a in axes])
        top = logp.max()
        mass = torch.exp(logp - top)
        for i, a in reversed(list(enumerate(axes))):
            mass = torch.trapezoid(mass, a, dim=i)
        log_z = float(top + mass.log())
        return axes, torch.exp(logp - log_z), log_z

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """n draws (n, d) float64: inverse CDF on the grid in 1-D, importance resampling in 2-D."""
        if self.dist.dim == 1:
            return self._inverse_cdf(n, generator)
        if self.dist.dim == 2:
            return self._resample(n, generator)
        raise DDPMLabError(f"the tilted target is sampled in 1-D and 2-D, not {self.dist.dim}-D")

    def _inverse_cdf(self, n: int, generator) -> torch.Tensor:
        (x,), p, _ = self.on_grid()
        x, p = x.numpy(), p.numpy()
        cdf = np.concatenate([[0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * np.diff(x))])
        cdf /= cdf[-1]
        u = torch.rand(n, generator=generator, dtype=torch.float64).numpy()
        keep = np.concatenate([[True], np.diff(cdf) > 0])  # a strictly rising CDF to invert
        return torch.from_numpy(np.interp(u, cdf[keep], x[keep])).reshape(n, 1)

    def proposal(self) -> GaussianMixture:
        """Importance resampling's proposal: half the class's component, half the mixture, each widened 1.5
        times (covers p_g's tails for g >= 1, where p_g <= q(x | c) / w_c^(g - 1), and for g < 1)."""
        d = self.dist
        weights = torch.cat([torch.tensor([0.5], dtype=torch.float64), 0.5 * d.weights])
        means = torch.cat([d.means[self.c:self.c + 1], d.means])
        covs = 2.25 * torch.cat([d.covariances[self.c:self.c + 1], d.covariances])
        return GaussianMixture(weights, means, covs)

    def _resample(self, n: int, generator) -> torch.Tensor:
        q = self.proposal()
        y = q.sample(PROPOSAL_DRAWS * n, generator, dtype=torch.float64)
        logw = self.log_density(y) - torch.cat([q.log_prob(ys) for ys in y.split(CHUNK)])
        pick = torch.multinomial(torch.softmax(logw, 0), n, replacement=True, generator=generator)
        return y[pick]

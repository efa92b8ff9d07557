"""Two-dimensional toy distributions, each scaled to roughly zero mean and unit variance per coordinate
(so the recommended recipe needs no standardisation and exact densities stay in model units).

| name              | what                                              | exact log_prob |
|-------------------|---------------------------------------------------|----------------|
| ``moons``         | two interleaved half circles + Gaussian noise     | no             |
| ``swiss_roll``    | a 2-D spiral (t cos t, t sin t) + Gaussian noise   | no             |
| ``eight_gaussians`` | 8 Gaussians on a ring: a ``GaussianMixture``    | yes            |
| ``checkerboard``  | uniform on 8 of the 16 unit squares of [-2, 2]^2  | yes (piecewise constant) |

Every object has ``sample(n, generator) -> (n, 2)`` float32 and ``event_shape = (2,)``.
"""
from __future__ import annotations

import math

import torch

from ddpmlab.core.distributions import GaussianMixture


class Moons:
    """Two interleaved half circles (scikit-learn's ``make_moons``): the outer (cos u, sin u) and the inner
    (1 - cos u, 1/2 - sin u), u ~ U[0, pi], each with probability 1/2, plus N(0, noise^2 I); then the
    affine map x -> ((x1 - 1/2) / 0.87, (x2 - 1/4) / 0.5) to roughly unit variance per coordinate."""

    event_shape = (2,)
    SHIFT, SCALE = (0.5, 0.25), (0.87, 0.5)

    def __init__(self, noise: float = 0.05):
        self.noise = noise

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        u = torch.rand(n, generator=generator, dtype=torch.float64) * math.pi
        inner = torch.rand(n, generator=generator, dtype=torch.float64) < 0.5
        x = torch.stack([torch.cos(u), torch.sin(u)], 1)  # (n, 2)
        x = torch.where(inner[:, None], torch.stack([1 - x[:, 0], 0.5 - x[:, 1]], 1), x)
        x = x + self.noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        shift, scale = torch.tensor(self.SHIFT, dtype=torch.float64), torch.tensor(self.SCALE, dtype=torch.float64)
        return ((x - shift) / scale).to(dtype)


class SwissRoll:
    """A 2-D Swiss roll: t = 1.5 pi (1 + 2u), u ~ U[0, 1], x = (t cos t, t sin t) + N(0, noise^2 I),
    divided by 7 (roughly unit variance per coordinate)."""

    event_shape = (2,)
    SCALE = 7.0

    def __init__(self, noise: float = 0.5):
        self.noise = noise

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        t = 1.5 * math.pi * (1 + 2 * torch.rand(n, generator=generator, dtype=torch.float64))
        x = torch.stack([t * torch.cos(t), t * torch.sin(t)], 1)  # (n, 2)
        x = x + self.noise * torch.randn(n, 2, generator=generator, dtype=torch.float64)
        return (x / self.SCALE).to(dtype)


def eight_gaussians(radius: float = math.sqrt(2), std: float = math.sqrt(2) / 8) -> GaussianMixture:
    """Eight equal Gaussians N(mu_k, std^2 I) with mu_k = radius (cos(k pi / 4), sin(k pi / 4)): FFJORD's
    ring (radius 2 sqrt 2, std sqrt 2 / 4) halved, so each coordinate has variance 1 + 1/32."""
    angles = torch.arange(8, dtype=torch.float64) * math.pi / 4
    means = radius * torch.stack([torch.cos(angles), torch.sin(angles)], 1)
    return GaussianMixture([1.0] * 8, means, [std ** 2] * 8)


class Checkerboard:
    """Uniform on the 8 "black" unit squares of a 4 x 4 board on [-2, 2]^2 (those whose column and row
    indices have an even sum): density 1/8 there, 0 elsewhere; the entropy is log 8 nats.
    (FFJORD's checkerboard halved; each coordinate has variance 4/3.)"""

    event_shape = (2,)
    SIDE = 4  # squares per row; each square has side 1, the board spans [-2, 2]

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        col = torch.randint(self.SIDE, (n,), generator=generator)
        row = 2 * torch.randint(self.SIDE // 2, (n,), generator=generator) + col % 2  # even sum of indices
        u = torch.rand(n, 2, generator=generator, dtype=torch.float64)
        x = torch.stack([col, row], 1).double() + u - self.SIDE / 2
        return x.to(dtype)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """log 1/8 on the black squares, -inf elsewhere: shape (n,), float64."""
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, 2)
        idx = torch.floor(x + self.SIDE / 2)  # (n, 2) square indices
        inside = ((idx >= 0) & (idx < self.SIDE)).all(1) & ((idx[:, 0] + idx[:, 1]) % 2 == 0)
        return torch.where(inside, torch.full_like(x[:, 0], -math.log(self.SIDE ** 2 / 2)),
                           torch.full_like(x[:, 0], -math.inf))

    def entropy_nats(self) -> float:
        return math.log(self.SIDE ** 2 / 2)

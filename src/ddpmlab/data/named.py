"""Named data distributions. Each entry builds an object with ``sample(n, generator)``, ``event_shape``
and, where the density is known exactly, ``log_prob`` (every ``GaussianMixture``, and the checkerboard).

1-D: ``seed_mixture``, ``gaussian``; 2-D (``ddpmlab.data.toy2d``): ``moons``, ``swiss_roll``,
``eight_gaussians``, ``checkerboard``; images (``ddpmlab.data.digits``): ``digits`` (1 x 8 x 8).
"""
from __future__ import annotations

from ddpmlab.data.digits import Digits
from ddpmlab.data.toy2d import Checkerboard, Moons, SwissRoll, eight_gaussians
from ddpmlab.core.distributions import GaussianMixture, seed_mixture


def gaussian_1d():
    """N(1, 0.5^2): a single Gaussian, for which every reverse conditional is exactly Gaussian."""
    return GaussianMixture([1.0], [[1.0]], [0.25])


NAMED = {
    "seed_mixture": seed_mixture,
    "gaussian": gaussian_1d,
    "moons": Moons,
    "swiss_roll": SwissRoll,
    "eight_gaussians": eight_gaussians,
    "checkerboard": Checkerboard,
    "digits": Digits,
}

# with class labels (``sample_labelled``): a Gaussian mixture's component, a digit's value
LABELLED = ("seed_mixture", "gaussian", "eight_gaussians", "digits")

"""Named data distributions. Each entry builds an object with ``sample(n, generator)``, ``event_shape``
and, where the density is known exactly, ``log_prob`` (every ``GaussianMixture``, and the checkerboard).

1-D: ``seed_mixture``, ``gaussian``; 2-D (``ddpmlab.data.toy2d``): ``moons``, ``swiss_roll``,
``eight_gaussians``, ``checkerboard``; images (``ddpmlab.data.digits``): ``digits`` (1 x 8 x 8). And
``mixture``: your own Gaussian mixture, declared in the config (``declared_mixture``).
"""
from __future__ import annotations

import torch

from ddpmlab.core.utils import DDPMLabError
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

DECLARED = "mixture"  # data.name of a Gaussian mixture declared in the config ([data.mixture])
MIXTURE_KEYS = ("weights", "means", "covariances")
SYMMETRY_TOL = 1e-9  # |S - S^T| allowed, relative to the largest entry of S


def declared_mixture(spec: dict) -> GaussianMixture:
    """The Gaussian mixture a config declares (``[data.mixture]``): ``weights`` (K,) positive, summing
    to 1; ``means`` (K, d); ``covariances`` (K, d, d) symmetric positive definite (or (K, d) diagonal
    variances, or (K,) isotropic ones). Each problem is one ``DDPMLabError`` naming the key."""
    where = "data.mixture"
    missing, unknown = [k for k in MIXTURE_KEYS if k not in spec], sorted(set(spec) - set(MIXTURE_KEYS))
    if missing or unknown:
        raise DDPMLabError(f"{where} needs exactly the keys {', '.join(MIXTURE_KEYS)} "
                           f"({'missing ' + ', '.join(missing) if missing else 'unknown ' + ', '.join(unknown)})")
    arrays = {}
    for key in MIXTURE_KEYS:
        try:
            arrays[key] = torch.as_tensor(spec[key], dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError):
            raise DDPMLabError(f"{where}.{key} must be a rectangular array of numbers, got {spec[key]!r}") from None
        if not bool(torch.isfinite(arrays[key]).all()) or arrays[key].numel() == 0:
            raise DDPMLabError(f"{where}.{key} must hold finite numbers, got {spec[key]!r}")
    w, cov = arrays["weights"], arrays["covariances"]
    if arrays["means"].dim() > 2:
        raise DDPMLabError(f"{where}.means must be (K, d), one mean per component; got shape "
                           f"{tuple(arrays['means'].shape)}")
    if w.dim() != 1 or not bool((w > 0).all()) or abs(float(w.sum()) - 1.0) > 1e-6:
        raise DDPMLabError(f"{where}.weights must be a list of positive numbers summing to 1, got {spec['weights']!r}")
    if cov.dim() == 3 and cov.shape[-1] == cov.shape[-2]:
        asym = float((cov - cov.transpose(-1, -2)).abs().max())
        if asym > SYMMETRY_TOL * max(float(cov.abs().max()), 1.0):
            raise DDPMLabError(f"{where}.covariances must be symmetric (S = S^T), got an asymmetry of {asym:.3g}")
    try:
        return GaussianMixture(w, arrays["means"], cov)
    except DDPMLabError as exc:  # the shapes, or a covariance not positive definite
        raise DDPMLabError(f"{where}: {exc}") from None

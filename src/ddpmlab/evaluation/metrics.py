"""Sample metrics for 1-D data, each with the noise floor it should be read against."""
from __future__ import annotations

import numpy as np
import torch
from scipy.stats import wasserstein_distance

from ddpmlab.distributions import GaussianMixture


def _flat1d(x) -> np.ndarray:
    x = np.asarray(torch.as_tensor(x).detach().double().cpu())
    if x.ndim > 1 and x[0].size != 1:
        raise ValueError(f"1-D metric needs one feature per sample, got shape {x.shape}")
    return x.reshape(-1)


def w1(samples, reference) -> float:
    """1-D Wasserstein distance between two samples (scipy)."""
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

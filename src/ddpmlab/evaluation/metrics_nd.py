"""Sample metrics for data of any dimension (N, *dims), each beside its noise floor: the value a true
sample of the same size scores against the same reference (a perfect model scores the floor on
average).

- ``sliced_w1``: the mean over random unit directions of the 1-D Wasserstein-1 distance between the
  projections (sliced Wasserstein, Rabin et al. 2011). Model and floor share the directions.
- ``mmd``: maximum mean discrepancy with a sum of Gaussian kernels at several multiples of the
  reference's median pairwise distance (Gretton et al. 2012); the biased (V-statistic) estimate, so a
  finite true sample scores above 0, and its square root. Model and floor share the bandwidths.
- ``nll_under_density``: -E_samples[log q(x)] under an exactly known density q, beside the entropy
  -E_q[log q(x)] estimated on a true sample of the same size. A model that covers the data too widely
  scores above the entropy, one that collapses onto the modes below it; samples where q = 0 are counted
  apart (``outside_support_fraction``).
"""
from __future__ import annotations

import math

import torch

from ddpmlab.core.utils import DDPMLabError

BANDWIDTH_MULTIPLES = (0.25, 0.5, 1.0, 2.0, 4.0)


def _flat(x) -> torch.Tensor:
    x = torch.as_tensor(x).detach().to(torch.float64).cpu()
    if x.dim() < 1 or x.shape[0] < 2:
        raise DDPMLabError(f"a sample metric needs at least 2 points, got shape {tuple(x.shape)}")
    return x.reshape(x.shape[0], -1)  # (n, D)


def random_directions(dim: int, n_projections: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n_projections`` directions uniform on the unit sphere in R^dim: (P, dim), float64."""
    v = torch.randn(n_projections, dim, generator=generator, dtype=torch.float64)
    return v / v.norm(dim=1, keepdim=True)


def _w1_sorted(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """W1 between the empirical distributions of every row of a (P, n) and b (P, m), rows sorted: (P,).

    W1 = int_0^1 |F_a^-1(u) - F_b^-1(u)| du; both quantile functions are constant between the levels
    i / n and j / m, so the integral is a sum over the merged levels (counted in units of 1 / (n m)).
    """
    n, m = a.shape[1], b.shape[1]
    if n == m:
        return (a - b).abs().mean(1)
    levels = torch.cat([torch.arange(1, n + 1) * m, torch.arange(1, m + 1) * n]).unique()  # sorted, int64
    du = torch.diff(levels, prepend=levels.new_zeros(1)).double() / (n * m)
    ia, ib = (levels + m - 1) // m - 1, (levels + n - 1) // n - 1  # quantile index of each interval
    return ((a[:, ia] - b[:, ib]).abs() * du).sum(1)


def w1_1d(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """W1 between the empirical distributions of every column of a (n, P) and b (m, P): (P,)."""
    return _w1_sorted(a.T.double().sort(1).values, b.T.double().sort(1).values)


def _projected(x: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    return (directions @ x.T).sort(1).values  # (P, n), each row sorted


def sliced_w1(x, y, directions: torch.Tensor | None = None, n_projections: int = 128,
              generator: torch.Generator | None = None) -> float:
    """Sliced Wasserstein-1 distance between samples x (n, *dims) and y (m, *dims)."""
    x, y = _flat(x), _flat(y)
    if x.shape[1] != y.shape[1]:
        raise DDPMLabError(f"samples have {x.shape[1]} and {y.shape[1]} features")
    if directions is None:
        directions = random_directions(x.shape[1], n_projections, generator)
    return float(_w1_sorted(_projected(x, directions), _projected(y, directions)).mean())


def median_distance(x, max_n: int = 2000) -> float:
    """Median pairwise Euclidean distance among the first ``max_n`` points of x."""
    x = _flat(x)[:max_n]
    d = torch.cdist(x, x)
    return float(d[torch.triu_indices(len(x), len(x), 1).unbind()].median())


def _kernel_mean(x: torch.Tensor, y: torch.Tensor, bandwidths, chunk: int = 512) -> float:
    """mean_{i, j} sum_s exp(-|x_i - y_j|^2 / (2 s^2)), in chunks of rows."""
    total = 0.0
    for i in range(0, len(x), chunk):
        d2 = torch.cdist(x[i:i + chunk], y).square()  # (chunk, m)
        total += sum(float(torch.exp(d2 * (-0.5 / s ** 2)).sum()) for s in bandwidths)
    return total / (len(x) * len(y))


def mmd(x, y, bandwidths=None, max_n: int = 5000, k_yy: float | None = None) -> float:
    """sqrt of the biased MMD^2 between x and y (first ``max_n`` points of each); Gaussian kernels at
    ``bandwidths`` (default: ``BANDWIDTH_MULTIPLES`` x y's median pairwise distance); ``k_yy``, y's
    kernel mean, may be passed when it is reused."""
    x, y = _flat(x)[:max_n], _flat(y)[:max_n]
    if bandwidths is None:
        med = median_distance(y)
        bandwidths = [m * med for m in BANDWIDTH_MULTIPLES]
    k_yy = _kernel_mean(y, y, bandwidths) if k_yy is None else k_yy
    mmd2 = _kernel_mean(x, x, bandwidths) + k_yy - 2 * _kernel_mean(x, y, bandwidths)
    return math.sqrt(max(mmd2, 0.0))


def _mean_sd(values: list[float]) -> tuple[float, float]:
    v = torch.tensor(values, dtype=torch.float64)
    return float(v.mean()), float(v.std()) if len(v) > 1 else 0.0


def sample_metrics_nd(samples, reference, floor_samples, generator: torch.Generator | None = None,
                      n_projections: int = 128, max_n_mmd: int = 5000, with_mmd: bool = True) -> dict:
    """Sliced W1 and MMD of ``samples`` to ``reference``, and the floors: the same for true samples of
    the samples' size (``floor_samples``: one, or a list whose mean is the floor and whose spread is
    reported as ``*_noise_floor_sd``), with the same directions and bandwidths. ``with_mmd=False``: the
    sliced W1 alone (the same numbers, without the kernel sums' cost)."""
    samples, reference = _flat(samples), _flat(reference)
    floors = [_flat(f) for f in (floor_samples if isinstance(floor_samples, (list, tuple)) else [floor_samples])]
    dirs = random_directions(samples.shape[1], n_projections, generator)
    ref = _projected(reference, dirs)  # sorted once, shared by model and floor
    sw = lambda x: float(_w1_sorted(_projected(x, dirs), ref).mean())  # noqa: E731
    sw_floor, sw_sd = _mean_sd([sw(f) for f in floors])
    out = {"sliced_w1": sw(samples), "sliced_w1_noise_floor": sw_floor, "sliced_w1_noise_floor_sd": sw_sd,
           "n": int(samples.shape[0]), "n_floor": int(floors[0].shape[0]), "floor_repeats": len(floors),
           "n_reference": int(reference.shape[0]), "n_projections": n_projections}
    if not with_mmd:
        return out
    med = median_distance(reference)
    bw = [m * med for m in BANDWIDTH_MULTIPLES]
    k_yy = _kernel_mean(reference[:max_n_mmd], reference[:max_n_mmd], bw)
    mm = lambda x: mmd(x, reference, bw, max_n_mmd, k_yy)  # noqa: E731
    mmd_floor, mmd_sd = _mean_sd([mm(f) for f in floors])
    return {**out, "mmd": mm(samples), "mmd_noise_floor": mmd_floor, "mmd_noise_floor_sd": mmd_sd,
            "mmd_max_n": max_n_mmd}


def nll_under_density(dist, samples, true_sample) -> dict:
    """-mean log q(x) over the samples where q > 0 (nats), its standard error, the fraction where q = 0,
    and the floor: the same on a true sample (the entropy of q, Monte Carlo)."""
    def stats(x):
        lp = dist.log_prob(_flat(x)).double()
        ok = torch.isfinite(lp)
        v = -lp[ok]
        se = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")
        return (float(v.mean()) if len(v) else float("nan")), se, float(1 - ok.double().mean())

    nll, se, out = stats(samples)
    ent, ent_se, _ = stats(true_sample)
    return {"nll_nats": nll, "nll_nats_se": se, "outside_support_fraction": out,
            "nll_nats_floor": ent, "nll_nats_floor_se": ent_se}


def against_distribution(dist, samples, generator: torch.Generator, n_ref: int = 100_000,
                         n_projections: int = 128, max_n_mmd: int = 5000, floor_repeats: int = 1) -> dict:
    """Metrics of ``samples`` against a fresh reference sample of ``dist`` (``n_ref`` points); the floor
    is the mean over ``floor_repeats`` fresh true samples of the samples' size (a single one is noisy:
    sliced W1 of 10,000 true points varies by about 30 %); and the exact NLL where ``dist`` has
    ``log_prob``."""
    n = _flat(samples).shape[0]
    reference = dist.sample(n_ref, generator)
    trues = [dist.sample(n, generator) for _ in range(floor_repeats)]
    out = sample_metrics_nd(samples, reference, trues, generator, n_projections, max_n_mmd)
    if hasattr(dist, "log_prob"):
        out.update(nll_under_density(dist, samples, torch.cat(trues)))
    return out


def against_heldout(samples, train, heldout, generator: torch.Generator | None = None,
                    n_projections: int = 128, max_n_mmd: int = 5000) -> dict:
    """Metrics of ``samples`` against held-out data, the floor being training data of the same size
    against the same held-out data (both cut to the smaller of the two sizes)."""
    samples, train = _flat(samples), _flat(train)
    n = min(len(samples), len(train))
    pick = lambda v: v if len(v) == n else v[torch.randperm(len(v), generator=generator)[:n]]  # noqa: E731
    return sample_metrics_nd(pick(samples), heldout, pick(train), generator, n_projections, max_n_mmd)

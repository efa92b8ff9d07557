"""Sums over a finite training set in bounded memory, for the empirical optimum
(``ddpmlab.models.empirical_oracle``) and the copy metrics (``ddpmlab.evaluation.memorisation``).

The posterior of the forward-kernel-smoothed training set over its points is a softmax of
-|x - alpha x_i|^2 / (2 sigma^2); ``posterior_moments`` streams it over chunks of points with a running
maximum (log-sum-exp) and merges the weighted mean and spread chunk by chunk (Chan et al. 1979), so that
one chunk's (rows, points) matrices hold at most ``CHUNK_ENTRIES`` numbers. ``nearest_neighbours`` is the
same chunked search for the nearest training point. Everything is float64.
"""
from __future__ import annotations

import math

import torch

from ddpmlab.core.utils import DDPMLabError
from ddpmlab.core.validate import check_examples, check_shape

CHUNK_ENTRIES = 1 << 20  # float64 numbers in one chunk's (rows, points) matrices: 8 MiB each
ROW_BLOCK = 256  # rows of x handled together (the chunk of training points fills the rest of the budget)
TINY_VARIANCE = torch.finfo(torch.float64).tiny  # the reverse variance's floor: a one-hot posterior has 0
LOG_2PI = math.log(2 * math.pi)


def training_set(data, data_shape) -> tuple[torch.Tensor, tuple]:
    """The training set as float64 rows (N, d) on the CPU and one example's shape (``data_shape`` when
    given: any shape of the same d numbers, as ``MixtureOracle`` takes)."""
    data = check_examples(data, "the training set", dtype=torch.float64).cpu()
    shape = tuple(data.shape[1:]) if data_shape is None else check_shape(data_shape)
    if math.prod(shape) != math.prod(data.shape[1:]):
        raise DDPMLabError(f"data shape {shape} does not hold the training set's examples of shape "
                           f"{tuple(data.shape[1:])}")
    return data.reshape(data.shape[0], -1).contiguous(), shape


def _sizes(rows: int, points: int, chunk_size: int | None) -> tuple[int, int]:
    """(rows per block, training points per chunk): the chunk is ``chunk_size`` points when given, else
    what fills ``CHUNK_ENTRIES`` beside ``ROW_BLOCK`` rows; the rows then fill the budget beside it."""
    chunk = int(chunk_size) if chunk_size else max(1, CHUNK_ENTRIES // max(1, min(rows, ROW_BLOCK)))
    chunk = max(1, min(chunk, points))
    return max(1, CHUNK_ENTRIES // chunk), chunk


def per_row(value, n: int) -> torch.Tensor:
    """A float or a tensor of one value per row as a float64 column (n, 1)."""
    v = torch.as_tensor(value, dtype=torch.float64).reshape(-1, 1).cpu()
    return v.expand(n, 1) if v.shape[0] == 1 else v


def _squared_distances(x: torch.Tensor, a: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """|x_r - a_r y_i|^2 (R, n) for rows x (R, d), scales a (R, 1) and points y (n, d), by differences
    (no |x|^2 - 2 x.y + |y|^2 cancellation): a^2 |x / a - y|^2, or |x|^2 where a = 0."""
    safe = torch.where(a > 0, a, torch.ones_like(a))
    sq = torch.cdist(x / safe, y, compute_mode="donot_use_mm_for_euclid_dist").square() * safe.square()
    return torch.where(a > 0, sq, x.square().sum(1, keepdim=True))


def posterior_moments(x: torch.Tensor, train: torch.Tensor, alpha, sigma, variance: bool = False,
                      chunk_size: int | None = None):
    """log sum_i exp(-|x - alpha x_i|^2 / (2 sigma^2)) (B,), E[x_0 | x_t = x] (B, d) and, with ``variance``,
    Var[x_0 | x_t = x] per coordinate (B, d) (else None), for rows x (B, d) and training rows (N, d).

    ``alpha`` and ``sigma`` are floats or one value per row (B,). One pass over the training points in
    chunks: a running maximum of the logits and the weighted mean and spread of the points seen so far,
    merged with each chunk's (Chan et al. 1979) and rescaled whenever the maximum grows, so the memory
    is one chunk's, whatever N. At sigma = 0 (a flow's t = 0) the posterior is the nearest point itself.
    """
    n, d = x.shape
    a, s = per_row(alpha, n), per_row(sigma, n)
    log_norm = torch.zeros(n, dtype=torch.float64)  # stays 0 at sigma = 0, where there is no density
    mean = torch.zeros(n, d, dtype=torch.float64)
    var = torch.zeros(n, d, dtype=torch.float64) if variance else None
    live = (s[:, 0] > 0).nonzero()[:, 0]
    rows, chunk = _sizes(live.numel(), train.shape[0], chunk_size)
    centre = train.mean(0)
    for r0 in range(0, live.numel(), rows):
        r = live[r0:r0 + rows]
        out = _stream(x[r], a[r], s[r], train, centre, chunk, variance)
        log_norm[r], mean[r] = out[0], out[1]
        if variance:
            var[r] = out[2]
    at_data = (s[:, 0] == 0).nonzero()[:, 0]
    if at_data.numel():  # the limit sigma -> 0: all the weight on the nearest point
        mean[at_data] = train[nearest_neighbours(x[at_data], train, chunk_size=chunk_size)[1]]
    return log_norm, mean, var


def _stream(x, a, s, train, centre, chunk: int, variance: bool):
    """``posterior_moments`` for one block of rows x (R, d) with a, s > 0 (R, 1). A chunk's spread is
    sum_i w_i (x_i - c)^2 - W (m - c)^2 about the training set's centre c (small numbers in both terms)."""
    R, d = x.shape
    top = torch.full((R,), -math.inf, dtype=torch.float64)
    weight = torch.zeros(R, dtype=torch.float64)  # sum of exp(logit - top) so far
    mean = torch.zeros(R, d, dtype=torch.float64)
    m2 = torch.zeros(R, d, dtype=torch.float64)  # sum of weight (x_i - mean)^2 so far
    inv = 0.5 / s.square()  # (R, 1)
    for c0 in range(0, train.shape[0], chunk):
        y = train[c0:c0 + chunk]  # (n, d)
        logits = -inv * _squared_distances(x, a, y)  # (R, n); no in-place steps: differentiable in x
        new_top = torch.maximum(top, logits.amax(1))
        scale = (top - new_top).exp()  # 0 on the first chunk
        w = (logits - new_top[:, None]).exp()  # (R, n)
        w_chunk = w.sum(1)
        mean_chunk = (w @ y) / w_chunk.clamp_min(TINY_VARIANCE)[:, None]
        w_old = weight * scale
        weight = w_old + w_chunk
        delta = mean_chunk - mean
        mean = mean + delta * (w_chunk / weight)[:, None]
        if variance:
            m2_chunk = (w @ (y - centre).square() - w_chunk[:, None] * (mean_chunk - centre).square()).clamp_min(0)
            m2 = m2 * scale[:, None] + m2_chunk + delta.square() * (w_old * w_chunk / weight)[:, None]
        top = new_top
    return top + weight.log(), mean, (m2 / weight[:, None] if variance else None)


def nearest_neighbours(x: torch.Tensor, train: torch.Tensor, exclude_self: bool = False,
                       chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean distance (B,) to, and index (B,) of, each row's nearest training point, for rows x (B, d)
    and training rows (N, d), float64, in chunks of training points (bounded memory). ``exclude_self``:
    x is the training set itself and row i may not pick point i (leave-one-out; duplicates count)."""
    x, train = x.reshape(x.shape[0], -1).double().cpu(), train.reshape(train.shape[0], -1).double().cpu()
    n = x.shape[0]
    if exclude_self and (n != train.shape[0] or n < 2):
        raise DDPMLabError("leave-one-out nearest neighbours need the training set itself, with >= 2 points")
    best = torch.full((n,), math.inf, dtype=torch.float64)
    index = torch.zeros(n, dtype=torch.long)
    rows, chunk = _sizes(n, train.shape[0], chunk_size)
    for r0 in range(0, n, rows):
        xr = x[r0:r0 + rows]
        for c0 in range(0, train.shape[0], chunk):
            dist = torch.cdist(xr, train[c0:c0 + chunk], compute_mode="donot_use_mm_for_euclid_dist")  # (R, n)
            if exclude_self:
                own = torch.arange(r0, r0 + xr.shape[0])[:, None] == torch.arange(c0, c0 + dist.shape[1])[None]
                dist.masked_fill_(own, math.inf)
            val, idx = dist.min(1)
            better = val < best[r0:r0 + rows]
            best[r0:r0 + rows] = torch.where(better, val, best[r0:r0 + rows])
            index[r0:r0 + rows] = torch.where(better, idx + c0, index[r0:r0 + rows])
    return best, index

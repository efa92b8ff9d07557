"""The network called with each distinct time embedded once: what ``DiffusionModel`` does for networks
that split their call into ``embed_time(tau) -> temb`` and ``forward_embedded(x, temb)`` (``MLPDenoiser``,
``UNet``; ``net(x, tau)`` is the same as ``net.forward_embedded(x, net.embed_time(tau))``).

- every row at one time (each step of a sampler, ``torch.full((n,), t)``): the time MLP on one row,
  broadcast to the batch; without gradients and on the CPU, a network that declares ``rows_independent``
  runs on chunks of rows whose activations stay in a core's L2 cache (a (10,000, 64) float32 activation
  does not: 2,048-row chunks sample 10,000 points about 1.6x faster on our 2-core machine);
- a training batch of B rows on integer steps of a grid of S <= B / 2 network times (``call_net_at_steps``):
  the time MLP on the whole grid, gathered to the rows (its gradient summed over the rows that share a
  step); the grid's sinusoidal features are computed once for the grid tensor and kept;
- few distinct times (B rows on T << B distinct times): the time MLP on the distinct times, gathered
  back to the rows in the same way;
- otherwise the plain call ``net(x, tau)``.

The results are the plain call's up to float rounding (``tests/test_fast_path.py``); ``with plain():``
turns the fast path off (to compare, or to time the plain call).
"""
from __future__ import annotations

import contextlib

import torch

CACHE_FLOATS = 1 << 17  # floats per activation in one chunk: 512 KiB of float32, within a 1 MiB L2 cache
MIN_CHUNK_ROWS = 256  # below this, a call's fixed cost outweighs the cache
MIN_GATHER_ROWS = 256  # batches below this are called plainly (few rows can share a time)
_enabled = True


@contextlib.contextmanager
def plain():
    """Within the block, ``DiffusionModel`` calls its network plainly, ``net(x, tau)`` on every row."""
    global _enabled
    before, _enabled = _enabled, False
    try:
        yield
    finally:
        _enabled = before


def enabled() -> bool:
    return _enabled


def splits_time(net) -> bool:
    """Whether ``net`` offers ``embed_time`` and ``forward_embedded``."""
    return callable(getattr(net, "embed_time", None)) and callable(getattr(net, "forward_embedded", None))


def shared_value(v: torch.Tensor) -> torch.Tensor | None:
    """``v[:1]`` when every entry of the 1-D tensor v equals it (first against last, then all), else None."""
    if v.dim() != 1 or v.numel() == 0:
        return None
    if v.numel() > 1 and (bool(v[0] != v[-1]) or not torch.equal(v, v[:1].expand_as(v))):
        return None
    return v[:1]


def chunk_rows(net, x: torch.Tensor) -> int:
    """Rows per call: all of them with gradients, off the CPU, or for a network that does not declare
    independent rows."""
    if torch.is_grad_enabled() or x.device.type != "cpu" or not getattr(net, "rows_independent", False):
        return x.shape[0]
    return max(MIN_CHUNK_ROWS, CACHE_FLOATS // max(1, int(getattr(net, "row_elements", 1))))


def call_net(net, x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """``net(x, tau)`` for x (B, *dims) and tau (B,), each distinct time embedded once where ``net`` splits."""
    if not _enabled or not splits_time(net) or tau.dim() != 1 or tau.shape[0] != x.shape[0]:
        return net(x, tau)
    shared = shared_value(tau)
    if shared is not None:
        return call_net_shared(net, x, shared)
    if tau.shape[0] >= MIN_GATHER_ROWS:
        times, index = torch.unique(tau, return_inverse=True)
        if 2 * times.shape[0] <= tau.shape[0]:
            return net.forward_embedded(x, net.embed_time(times).to(x.dtype).index_select(0, index))  # (B, E)
    return net(x, tau)


def call_net_shared(net, x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    """``net(x, tau)`` for a ``net`` that splits, every row at the one time tau (1,): its embedding
    broadcast to the rows, in chunks of rows that stay in cache (``chunk_rows``)."""
    temb = net.embed_time(tau).to(x.dtype)  # (1, E)
    rows = chunk_rows(net, x)
    if rows >= x.shape[0]:
        return net.forward_embedded(x, temb)
    return torch.cat([net.forward_embedded(part, temb) for part in x.split(rows)])


def gathers_grid(rows: int, grid_size: int) -> bool:
    """Whether ``call_net_at_steps`` runs the time MLP on a grid of ``grid_size`` network times once and
    gathers it to a batch of ``rows`` rows at integer steps: at least ``MIN_GATHER_ROWS``, two per time."""
    return rows >= max(MIN_GATHER_ROWS, 2 * grid_size)


def call_net_at_steps(net, x: torch.Tensor, step: torch.Tensor, grid: torch.Tensor,
                      shared: torch.Tensor | None) -> torch.Tensor:
    """``net(x, grid[step])`` for x (B, *dims), integer steps (B,) and the network times of every step
    ``grid`` (S,); ``shared`` is ``shared_value(step)``, which the caller has at hand. Every row at one
    step: ``call_net_shared``; a batch of at least 2 S rows: the time MLP on the grid once, gathered to
    the rows; else ``call_net``."""
    if not (_enabled and splits_time(net) and step.dim() == 1 and step.shape[0] == x.shape[0]):
        return net(x, grid.index_select(0, step))
    if shared is not None:
        return call_net_shared(net, x, grid.index_select(0, shared))
    if gathers_grid(x.shape[0], grid.shape[0]):
        return net.forward_embedded(x, net.embed_time(grid).to(x.dtype).index_select(0, step))  # (B, E)
    return call_net(net, x, grid.index_select(0, step))

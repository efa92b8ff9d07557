"""How many torch intra-op threads a process uses: chosen from the size of the work and the cores it may use.

Why: ddpmlab's networks are small. A step of the default recipe (MLP 64 x 2, batch 1024) multiplies a
few matrices of 1024 x 64 numbers; splitting each over two threads saves microseconds and costs a
synchronisation per operation. When two such processes share two cores, each thread pool spins waiting
for a thread the other process holds, and both trainings ran 100 times slower than one alone (issue 13).
So the policy is:

- an explicit count (``--threads N`` / ``train.threads = N``, N > 0) is used as given;
- otherwise one thread per ``MACS_PER_THREAD`` multiply-adds of one network call (rows x multiply-adds
  per row), at least 1, at most the cores this process may use: ``os.sched_getaffinity`` (what
  ``taskset``, cgroups cpusets and cluster schedulers set), a cgroup CPU quota, divided among the
  processes of a ``torchrun`` on this machine, and capped by ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS``
  when the environment sets them (torchrun sets ``OMP_NUM_THREADS=1`` for several processes).

``choose_threads`` and ``cores_from`` are pure functions of their inputs; ``usable_cores`` and
``env_thread_limit`` read the process's state; ``intra_op_threads`` and ``using_threads`` apply a count.
"""
from __future__ import annotations

import contextlib
import math
import os

import torch
from torch import nn

# Multiply-adds of one network call per thread. Measured on a 2-core machine under the load of other
# processes (forward and backward of the MLP denoiser, 1 vs 2 threads): 33M and 124M multiply-adds ran
# 6x and 10x slower with 2 threads; 320M ran 1.4x faster, 500M 1.75x and 1.2G 1.9x faster.
MACS_PER_THREAD = 2 ** 27  # about 134M
ENV_LIMITS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


def choose_threads(macs_per_call: float, cores: int, requested: int = 0, env_limit: int | None = None) -> int:
    """The intra-op thread count for work of ``macs_per_call`` multiply-adds per network call on ``cores``
    usable cores: ``requested`` if positive; otherwise ``floor(macs_per_call / MACS_PER_THREAD)``
    clamped to [1, cores], and to ``env_limit`` when given."""
    if requested > 0:
        return int(requested)
    n = min(max(1, int(macs_per_call // MACS_PER_THREAD)), max(1, int(cores)))
    if env_limit is not None and env_limit > 0:
        n = min(n, int(env_limit))
    return n


def cores_from(affinity: int, quota: float | None = None, local_processes: int = 1) -> int:
    """Cores one process may use: the CPUs of its affinity mask, fewer under a CPU quota (in cores,
    rounded up), shared among ``local_processes`` processes on the machine; at least 1."""
    cores = affinity if quota is None else min(affinity, math.ceil(quota))
    return max(1, cores // max(1, local_processes))


def _cgroup_quota() -> float | None:
    """The cgroup v2 CPU quota in cores (``cpu.max`` = "QUOTA PERIOD"), or None when there is none."""
    try:
        with open("/sys/fs/cgroup/cpu.max") as f:
            quota, period = f.read().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        return None


def _positive_int(raw) -> int | None:
    try:
        n = int(raw)
    except (TypeError, ValueError):
        return None
    return n if n > 0 else None


def usable_cores() -> int:
    """Cores this process may use (see ``cores_from``); LOCAL_WORLD_SIZE is set by torchrun."""
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        affinity = os.cpu_count() or 1
    return cores_from(affinity, _cgroup_quota(), _positive_int(os.environ.get("LOCAL_WORLD_SIZE")) or 1)


def env_thread_limit(environ=None) -> int | None:
    """The smallest positive ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` in the environment, or None."""
    environ = os.environ if environ is None else environ
    limits = [n for n in (_positive_int(environ.get(k)) for k in ENV_LIMITS) if n is not None]
    return min(limits) if limits else None


def count_macs(module: nn.Module, call) -> int:
    """Multiply-adds of the linear and convolution layers of ``module`` while ``call()`` runs (one
    forward pass; other operations are cheap beside them at these sizes)."""
    total = 0

    def hook(layer, inputs, output):
        nonlocal total
        if isinstance(layer, nn.Linear):
            total += layer.in_features * output.numel()
        else:  # each output number of a convolution sums in_channels / groups x kernel numbers
            total += layer.weight[0].numel() * output.numel()

    layers = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    handles = [m.register_forward_hook(hook) for m in module.modules() if isinstance(m, layers)]
    try:
        with torch.no_grad():
            call()
    finally:
        for h in handles:
            h.remove()
    return total


_interop_set = False


@contextlib.contextmanager
def intra_op_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (None: unchanged), restoring the setting after.

    Evaluation works on small tensors (a few thousand numbers per operation): extra threads only add
    synchronisation, which on a busy 2-core machine was measured to cost 10 to 40 times the work itself.
    """
    if n is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def using_threads(n: int):
    """``intra_op_threads(n)``, yielding ``n``. The first call in a process also sets the inter-op pool to
    ``n`` threads when torch still allows it (ddpmlab runs no inter-op parallel work; torch refuses once
    such work has started, and then nothing changes)."""
    global _interop_set
    if not _interop_set:
        _interop_set = True
        try:
            torch.set_num_interop_threads(n)
        except RuntimeError:
            pass
    with intra_op_threads(n):
        yield n

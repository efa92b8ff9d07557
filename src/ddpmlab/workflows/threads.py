"""The thread policy (``ddpmlab.core.threads``) applied to a model: train, sample, evaluate and the tutorial
each run their work inside ``model_threads(requested, model, rows)``."""
from __future__ import annotations

import torch

from ddpmlab.core.threads import choose_threads, count_macs, env_thread_limit, usable_cores, using_threads
from ddpmlab.core.validate import diagnosed


def macs_per_row(model) -> float:
    """Multiply-adds of one network call per example: counted on one call with two examples
    (``probe``, the model's own). A network without
    ``nn.Linear`` / convolution layers (the seed's) counts one multiply-add per parameter."""
    x = torch.zeros((2,) + tuple(model.data_shape), device=model.device, dtype=model.dtype)
    with diagnosed(model, x):  # a network that cannot take the data: one line, not a traceback
        macs = count_macs(model, lambda: model.probe(x)) / 2  # its family's one call (``ProcessModel.probe``)
    return macs or float(sum(p.numel() for p in model.parameters()))


def thread_count(requested: int, model, rows: int) -> int:
    """Intra-op threads for ``rows`` examples per network call of ``model``: ``requested`` if positive,
    else the policy's choice (one thread when the model is on a GPU: the CPU only launches kernels)."""
    if requested > 0:
        return requested
    if model.device.type != "cpu":
        return 1
    return choose_threads(rows * macs_per_row(model), usable_cores(), env_limit=env_thread_limit())


def model_threads(requested: int, model, rows: int):
    """Context manager: the block runs with ``thread_count(requested, model, rows)`` intra-op threads."""
    return using_threads(thread_count(requested, model, rows))

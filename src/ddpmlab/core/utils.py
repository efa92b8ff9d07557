"""Small helpers shared by every module: the one broadcast helper, flat means, errors."""
from __future__ import annotations

import math

import torch


class DDPMLabError(Exception):
    """A user-facing problem (bad input, bad file, bad config): the CLI prints it on one line, exit 2."""


def extract(arr: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Gather ``arr[t]`` and reshape it to ``(B, 1, ..., 1)`` in ``x``'s dtype, to broadcast against ``x``.

    The one place that knows how per-step constants meet data of shape ``(B, *dims)``: no other code
    assumes the data is 1-D, 2-D or an image. ``t`` is an integer tensor of shape (B,) or a scalar.
    """
    if not (isinstance(t, torch.Tensor) and t.device == arr.device):  # (a training step calls this often:
        t = torch.as_tensor(t, device=arr.device)                    # each skipped call is a microsecond)
    out = arr.index_select(0, t) if t.dim() == 1 else arr[t]
    if out.dtype != x.dtype or out.device != x.device:
        out = out.to(dtype=x.dtype, device=x.device)
    extra = x.dim() - out.dim()
    return out.view(out.shape + (1,) * extra) if extra else out  # trailing ones: a view of any strides


def mean_flat(x: torch.Tensor) -> torch.Tensor:
    """Mean over every dimension but the first: per-example values of shape (B,). An example of one
    value (data of one feature) is its own mean, the same number without a reduction (a view)."""
    if x.dim() > 1 and math.prod(x.shape[1:]) == 1:
        return x.reshape(x.shape[0])
    return x.mean(dim=tuple(range(1, x.dim())))


def sum_flat(x: torch.Tensor) -> torch.Tensor:
    """Sum over every dimension but the first: per-example values of shape (B,)."""
    return x.sum(dim=tuple(range(1, x.dim())))


class NonFiniteError(DDPMLabError):
    """A computation produced NaN or infinity (a sampler's state, a loss): the CLI prints one line and
    exits with ``exit_code`` (3), writing nothing."""

    exit_code = 3


class DDPMLabWarning(UserWarning):
    """Something the user should know that does not stop the command (a data scale the prior does not
    fit, a damaged checkpoint skipped): the CLI prints it as one line on stderr."""

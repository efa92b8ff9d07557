"""Checks at the library's boundary: what a caller of ``Trainer``, ``sample`` or ``evaluate`` passes is
refused here, as one ``DDPMLabError`` sentence naming the argument, instead of failing deep inside torch
(a shape mismatch in a matrix product, an allocator's error) or being silently misread (2.5 samples taken
as 2, a negative step count doing nothing).

Each check is one small function used by every entry point that takes that kind of argument:

- ``check_count``: a whole number (``int``, a NumPy or 0-d tensor integer) within bounds, never a float;
- ``check_shape``: one example's shape, whole numbers >= 1;
- ``check_generator``: ``None`` or a CPU ``torch.Generator`` (a seed goes to ``seed=``, not here);
- ``check_examples``: a tensor or NumPy array (N, *dims) of finite numbers, on a real device, of the
  expected example shape, converted to the model's floating dtype;
- ``check_labels``: one integer class label per example, within the model's classes;
- ``check_trainable``: an ``nn.Module`` with trainable floating-point parameters on a real device;
- ``probe_model``: one call of the model on two examples (in eval mode, without gradients, drawing no
  random numbers): a network that cannot take the data, or the condition, is one line;
- ``diagnosed``: around a computation with a model (a training step, a sampler), a failure inside torch
  is diagnosed by ``probe_model``; the probe runs only then, so a working model sees no extra call.
"""
from __future__ import annotations

import contextlib
import math
import operator

import numpy as np
import torch

from ddpmlab.core.utils import DDPMLabError


def _type_name(value) -> str:
    return type(value).__name__


def check_count(n, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """``n`` as an ``int``: a whole number (not a bool, not a float such as 2.5) in [minimum, maximum]."""
    if isinstance(n, bool):
        raise DDPMLabError(f"{name} must be a whole number, got {n!r}")
    try:
        value = operator.index(n)
    except TypeError:
        raise DDPMLabError(f"{name} must be a whole number, got {n!r} ({_type_name(n)})") from None
    if value < minimum:
        raise DDPMLabError(f"{name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise DDPMLabError(f"{name} must be <= {maximum}, got {value}")
    return value


def check_shape(shape, name: str = "data_shape") -> tuple[int, ...]:
    """One example's shape as a tuple of whole numbers >= 1 (a single number n is the shape (n,))."""
    dims = (shape,) if isinstance(shape, int) and not isinstance(shape, bool) else shape
    try:
        if isinstance(dims, (str, bytes)):
            raise TypeError
        out = tuple(check_count(d, name) for d in dims)
    except (TypeError, DDPMLabError):
        out = ()
    if not out:
        raise DDPMLabError(f"{name} must be one example's shape, whole numbers >= 1 such as (2,) or (1, 8, 8), "
                           f"got {shape!r}")
    return out


def check_generator(generator, name: str = "generator") -> torch.Generator | None:
    """``None`` or a CPU ``torch.Generator`` (every random draw of ddpmlab is made on the CPU)."""
    if generator is None:
        return None
    if not isinstance(generator, torch.Generator):
        raise DDPMLabError(f"{name} must be a torch.Generator (e.g. torch.Generator().manual_seed(42)) or None, "
                           f"got {generator!r} ({_type_name(generator)})")
    if generator.device.type != "cpu":
        raise DDPMLabError(f"{name} must be a CPU torch.Generator (ddpmlab draws its random numbers on the CPU), "
                           f"got one on {generator.device}")
    return generator


def as_tensor(x, name: str) -> torch.Tensor:
    """A tensor or NumPy array of numbers as a tensor (an array shares its memory); anything else, a Python
    list included, is refused: its dtype and shape would be guessed."""
    if isinstance(x, np.ndarray):
        if x.dtype.kind not in "biuf":
            raise DDPMLabError(f"{name} must hold numbers, got a NumPy array of dtype {x.dtype}")
        x = torch.from_numpy(np.ascontiguousarray(x))
    if not isinstance(x, torch.Tensor):
        raise DDPMLabError(f"{name} must be a torch.Tensor or NumPy array (N, *dims), got {_type_name(x)}; convert "
                           f"it with torch.as_tensor(..., dtype=torch.float32)")
    if x.device.type == "meta":
        raise DDPMLabError(f"{name} is a meta-device tensor, which holds no values")
    if x.is_sparse or x.layout != torch.strided:
        raise DDPMLabError(f"{name} must be a dense tensor, got layout {x.layout}")
    if x.is_complex():
        raise DDPMLabError(f"{name} must hold real numbers, got dtype {x.dtype}")
    return x


def check_examples(x, name: str, data_shape=None, dtype: torch.dtype | None = None, min_rows: int = 1) -> torch.Tensor:
    """``x`` (N, *dims) as a tensor of finite numbers in ``dtype`` (default: float32 for integer data, else
    its own): N >= ``min_rows``, one example of shape ``data_shape`` when given."""
    x = as_tensor(x, name)
    if x.dim() < 2 or x.shape[0] < min_rows:
        raise DDPMLabError(f"{name} must have shape (N, *dims) with N >= {min_rows}, got {tuple(x.shape)}")
    if data_shape is not None and tuple(x.shape[1:]) != tuple(data_shape):
        raise DDPMLabError(f"{name} holds examples of shape {tuple(x.shape[1:])}, but the model's data_shape is "
                           f"{tuple(data_shape)}")
    if not bool(torch.isfinite(x).all()):
        raise DDPMLabError(f"{name} holds NaN or infinite values")
    target = dtype if dtype is not None else (x.dtype if x.dtype.is_floating_point else torch.float32)
    if x.dtype != target:
        x = x.to(target)
        if not bool(torch.isfinite(x).all()):
            raise DDPMLabError(f"{name} holds values beyond the range of {target} (the model's dtype)")
    return x


def check_labels(labels, n: int, num_classes: int, name: str = "labels") -> torch.Tensor:
    """One integer class label per example (n,), each in 0..num_classes - 1 (when ``num_classes`` is known,
    > 0)."""
    labels = as_tensor(labels, name)
    if labels.dtype.is_floating_point or labels.dtype == torch.bool:
        raise DDPMLabError(f"{name} must be integer class indices, got dtype {labels.dtype}")
    if tuple(labels.shape) != (n,):
        raise DDPMLabError(f"{name} have shape {tuple(labels.shape)}; need one per example, ({n},)")
    if n and num_classes > 0 and (int(labels.min()) < 0 or int(labels.max()) >= num_classes):
        raise DDPMLabError(f"{name} must lie in 0..{num_classes - 1} (the model's {num_classes} classes), got "
                           f"{int(labels.min())}..{int(labels.max())}")
    return labels.long()


def check_trainable(model, name: str = "model") -> None:
    """``model`` is an ``nn.Module`` with at least one trainable floating-point parameter, none of them on
    the meta device."""
    if not isinstance(model, torch.nn.Module):
        raise DDPMLabError(f"{name} must be a torch.nn.Module (e.g. dl.DiffusionModel(net, ...)), got "
                           f"{_type_name(model)}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise DDPMLabError(f"{name} has no trainable parameters (its network holds no nn.Parameter that requires "
                           f"grad)")
    if any(p.device.type == "meta" for p in params):
        raise DDPMLabError(f"{name} has parameters on the meta device, which hold no values; build it on the CPU or "
                           f"a GPU")
    if any(not p.dtype.is_floating_point for p in params):
        raise DDPMLabError(f"{name} has trainable parameters that are not floating point")


def probe_model(model, x: torch.Tensor, cond=None, name: str = "the model") -> None:
    """Call ``model`` once on the examples ``x`` (a few rows, on its device and in its dtype) with ``cond``:
    a network that cannot take them (another width, a condition it has no argument for, or one it needs)
    is one line. No gradient, no random number and no training-mode statistics are used or changed."""
    modules = list(model.modules()) if isinstance(model, torch.nn.Module) else []
    modes = [m.training for m in modules]
    with_cond = "with" if cond is not None else "without"
    try:
        for m in modules:
            m.training = False
        with torch.no_grad():
            model.probe(x, cond)  # its family's one call (``ProcessModel.probe``)
    except DDPMLabError:
        raise  # already one line (an unconditional network given labels, an output of the wrong shape)
    except (RuntimeError, TypeError, ValueError, IndexError, AttributeError) as exc:
        first = (str(exc).strip().splitlines() or [_type_name(exc)])[0]
        raise DDPMLabError(f"{name} fails on examples of shape {tuple(x.shape[1:])} {with_cond} labels "
                           f"({_type_name(exc)}: {first})") from None
    finally:
        for m, mode in zip(modules, modes):
            m.training = mode


@contextlib.contextmanager
def diagnosed(model, x: torch.Tensor, cond=None):
    """Run the body; if it fails inside torch (a ``RuntimeError``, ``TypeError``, ...), probe ``model`` with
    the first two rows of ``x`` and ``cond``: a model that cannot take them replaces the deep error by
    ``probe_model``'s line; otherwise the error is not the input's and propagates unchanged."""
    try:
        yield
    except (RuntimeError, TypeError, ValueError, IndexError):
        per_row = isinstance(cond, torch.Tensor) and cond.dim() > 0  # else one condition for all rows
        probe_model(model, x[:2], cond[:2] if per_row else cond)
        raise


def example_bytes(n: int, data_shape, dtype: torch.dtype = torch.float32) -> int:
    """Bytes of ``n`` examples of ``data_shape`` in ``dtype``."""
    return n * math.prod(data_shape) * torch.empty((), dtype=dtype).element_size()

"""``sample``: draw from any model of the contract with any registered sampler on any time grid."""
from __future__ import annotations

import inspect

import torch

from ddpmlab.core.resources import check_memory
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.core.validate import as_tensor, check_count, check_generator, diagnosed, example_bytes
from ddpmlab.models.family import family_of
from ddpmlab.sampling.grids import all_grid_options, build_grid, shift_option
from ddpmlab.sampling.registry import SAMPLERS


def sample(model, n: int, sampler: str | None = None, steps: int | None = None, generator: torch.Generator | None = None,
           cond=None, keep_trajectory: bool = False, x_T: torch.Tensor | None = None, grid="uniform",
           callback=None, **options) -> torch.Tensor:
    """``n`` samples (n, *dims) of ``model`` by the registered ``sampler`` (None: its family's default,
    ``Family.default_sampler``) on ``steps`` steps (0: all T; None: the family's default) of
    the registered time ``grid`` (``ddpmlab.sampling.grids.TIME_GRIDS``: uniform, shifted, karras, log_snr),
    or on ``grid`` itself when it is a tensor of times as ``build_grid`` makes them.

    x_T ~ N(0, I) is drawn from ``generator`` on the CPU (the same stream on any device) in the model's
    dtype and device, unless given. ``cond`` is a per-example condition (n, ...) for a conditional model;
    ``options`` go to the grid when it takes them (``shift``, ``rho``), else to the sampler (``eta`` for
    ddim; ``solver``, ``rtol``, ``atol`` for ode). ``callback(i, t, x)`` is called after each step i with
    the state x at grid time t (x must not be changed in place).
    With ``keep_trajectory`` the states (K + 1, n, *dims) from x_0 (index 0) to x_T. ``n`` and ``steps`` are
    whole numbers, ``generator`` a CPU ``torch.Generator``; a draw that cannot fit in memory is refused in
    one line before anything is allocated, and a model that cannot take x or ``cond`` (a condition given to
    an unconditional network, ...) ends in one line instead of the error from inside it.
    """
    family = family_of(model)
    sampler = family.default_sampler if sampler is None else sampler
    if steps is None:  # the family's default for a named grid; a grid given as times has its own length
        steps = family.default_steps if isinstance(grid, str) else 0
    fn = SAMPLERS.get(sampler)
    family.check(fn, "sampler", sampler, SAMPLERS)
    n, steps = check_count(n, "n"), check_count(steps, "steps", minimum=0)
    generator = check_generator(generator)
    on_grid = {k: options.pop(k) for k in all_grid_options() & set(options)}
    times = build_grid(model, grid, steps, **on_grid)
    shape = (n,) + tuple(model.data_shape)
    _check_sampling_memory(model, shape, times.numel() if keep_trajectory else 0)
    if x_T is None:
        x_T = torch.randn(shape, generator=generator)
    elif tuple(as_tensor(x_T, "x_T").shape) != shape:
        raise DDPMLabError(f"x_T has shape {tuple(x_T.shape)}, expected {shape}")
    x = x_T.to(model.device, model.dtype)
    if x is x_T:
        x = x.clone()
    if cond is not None:
        cond = torch.as_tensor(cond).to(model.device)
        if cond.dim() > 0 and cond.shape[0] != n:  # a scalar is one condition for every sample
            raise DDPMLabError(f"cond has shape {tuple(cond.shape)}; pass one condition per sample, ({n}, ...), "
                               f"or one for all")
    states = [x] if keep_trajectory else None
    if keep_trajectory:
        callback = _keeping(states, callback)
    try:
        with diagnosed(model, x, cond), torch.no_grad():  # a model that cannot take x or cond: one line
            x = fn(model, x, times, generator=generator, cond=cond, callback=callback, **options)
    except TypeError:
        unknown = set(options) - set(inspect.signature(fn).parameters)
        if unknown:
            raise DDPMLabError(f"sampler {sampler!r} takes no option {', '.join(sorted(unknown))}") from None
        raise
    return torch.stack(states[::-1]) if keep_trajectory else x


def _keeping(states: list, callback):
    """A callback that appends each step's state to ``states`` and then calls ``callback`` (if any):
    the one place where a trajectory is kept."""
    def keep(i, t, x):
        states.append(x)
        if callback is not None:
            callback(i, t, x)

    return keep


SAMPLE_STATES = 4  # tensors of the samples' size a sampler holds at once (x_t, noise, the network's output, x_0)


def _check_sampling_memory(model, shape: tuple, kept: int) -> None:
    """Refuse, in one line naming n, a draw whose states alone (``SAMPLE_STATES`` of them, and the ``kept``
    states of a trajectory) exceed the available memory: a lower bound of what sampling needs."""
    check_memory((SAMPLE_STATES + kept) * example_bytes(shape[0], shape[1:], model.dtype), f"n = {shape[0]}",
                 f"{shape[0]} samples of shape {shape[1:]}")


def draw_samples(model, n: int, sampler: str = "ancestral", steps: int = 0, eta: float | None = None,
                 generator: torch.Generator | None = None, keep_trajectory: bool = False,
                 ode_solver: str | None = None, cond=None, time_shift: float = 1.0,
                 grid: str = "uniform") -> torch.Tensor:
    """``sample`` with a run config's sample options (``sample.eta``, ``sample.ode_solver``,
    ``sample.time_shift``, ``sample.grid``): each given (not None) goes to the sampler only where the
    sampler takes it (else the sampler's own default holds), the shift to the grid only when not 1
    (``grids.shift_option``)."""
    return sample(model, n, sampler, steps, generator=generator, cond=cond, keep_trajectory=keep_trajectory,
                  **sample_options(sampler, eta, ode_solver, time_shift, grid))


def sample_options(sampler: str, eta: float | None = None, ode_solver: str | None = None,
                   time_shift: float = 1.0, grid: str = "uniform") -> dict:
    """A run config's sample options as ``sample``'s keyword arguments: ``eta`` and ``solver`` where the
    sampler takes them (and they are given), the grid, and the shift only when not 1."""
    accepted = inspect.signature(SAMPLERS.get(sampler)).parameters
    options = {k: v for k, v in (("eta", eta), ("solver", ode_solver)) if k in accepted and v is not None}
    return {"grid": grid, **options, **shift_option(time_shift)}

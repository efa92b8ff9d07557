"""The simple loss's value and gradient in one pass, without autograd, for an unconditional MLP.

``Simple.value_and_grad(model, x0, generator)`` (``ddpmlab.objectives.losses``) calls ``value_and_grad``
here: the same draws as ``Simple.__call__`` (t, noise, x_t from the same generator, in the same order),
the same regression (``DiffusionModel.regression_pair``: x_t or c / r, and eq. 14's target or its
normalised residual), the network's forward on the tape (``ddpmlab.models.mlp_backward.MLPTape``) and
the loss L = mean_rows mean_features (target - F)^2, whose gradient dL/dF = -2 (target - F) / (B D)
goes back through the tape into the parameters' ``.grad`` (set, as ``zero_grad(); loss.backward()`` would
leave them). It returns the loss (a 0-d tensor), or None for a model it does not compute, or a batch the
model's own call would not run on its step grid (``fast_path.gathers_grid``: fewer than 256 rows or two
per step), where autograd's path makes the same call the model makes. The trainer uses it when nothing
else needs the graph (no callbacks, one process): a faster default training step on one CPU thread
(``benchmarks/results/ab_issue28.json``), the same losses and weights as autograd's bit for bit on the
default recipe (``tests/test_fused_step.py``; ``benchmarks/ab_commits.py --results-seeds``). The draws'
per-step coefficients come from one gather (``DiffusionModel.training_coefficients``).
"""
from __future__ import annotations

import torch

from ddpmlab.core.diffusion import q_sample
from ddpmlab.core.utils import mean_flat
from ddpmlab.models import fast_path
from ddpmlab.models.diffusion_model import DiffusionModel
from ddpmlab.models.mlp_backward import MLPTape, tape_supports


def tape_of(model) -> MLPTape | None:
    """The model's tape (kept on it), or None unless it is a ``DiffusionModel`` of integer steps around
    an unconditional ``MLPDenoiser`` whose output is the mean head alone (no learned variance), every
    parameter trainable. A network it declines is remembered (walking its parameters every step would cost
    a tenth of a step)."""
    if type(model) is not DiffusionModel or model.__dict__.get("_no_mlp_tape") is model.net:
        return None
    tape = model.__dict__.get("_mlp_tape")
    if tape is None or tape.net is not model.net:
        net = model.net
        if not tape_supports(net) or net.out_dim != net.data_dim:
            model.__dict__["_no_mlp_tape"] = net
            return None
        tape = model.__dict__["_mlp_tape"] = MLPTape(net)
    return tape if tape.trainable() else None


def value_and_grad(objective, model, x0: torch.Tensor, generator=None):
    """The batch's mean simple loss, the parameters' ``.grad`` set to its gradient; None when the model is
    not one the tape computes (or ``fast_path.plain()`` asks for the plain call)."""
    tape = tape_of(model) if fast_path.enabled() else None
    if tape is None:
        return None
    B = x0.shape[0]
    grid = model.time_grid(x0.device)
    if not fast_path.gathers_grid(B, grid.shape[0]):  # decided before any draw
        return None
    t, _, noise = objective.draw_steps(model, x0, generator)
    q_coef, coef = model.training_coefficients(t, x0)  # one gather for both
    x_t = q_sample(model.schedule, x0, t, noise, q_coef)
    x_in, target = model.regression_pair(x0, x_t, t, noise, coef)
    err = target.flatten(1) - tape.forward(x_in.flatten(1), grid, t)
    loss = mean_flat(err.square()).mean()
    tape.backward(err.mul_(-2.0 / err.numel()))  # dL/dF; err is not needed after the loss
    return loss

"""``evaluate``: how good a model is, against the best possible where that is known.

- A ``GaussianMixture``: the exact evaluation (``evaluation.exact.evaluate_run``) for a model of any
  family: each exact comparison its family has (the bound term by term, the probability-flow ODE
  likelihood, sample metrics), each beside its family's exact oracle's.
- Any other distribution with ``sample`` (and ``log_prob`` where known): sample metrics against a fresh
  reference sample, beside the floor of a true sample of the same size.
- Held-out data (``reference``, with ``train`` for the floor): sample metrics against the held-out rows.
"""
from __future__ import annotations

import torch

from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.core.validate import check_count, check_examples, check_generator
from ddpmlab.evaluation.exact import evaluate_run
from ddpmlab.evaluation.metrics_nd import against_distribution, against_heldout
from ddpmlab.models.family import family_of
from ddpmlab.sampling.api import sample


def evaluate(model, dist=None, reference=None, train=None, n_samples: int = 10_000, sampler: str | None = None,
             steps: int | None = None, generator: torch.Generator | None = None, n_bound: int = 10_000,
             n_ode: int = 256, **options) -> dict:
    """Evaluate ``model`` (of any family) against ``dist`` or held-out ``reference`` data.

    ``sampler``, ``steps`` and ``options`` choose how samples are drawn (None: the model's family's
    defaults, ``Family.default_sampler`` and ``default_steps``). On a mixture, ``n_bound`` data points for
    each bound (a family with one) and ``n_ode`` for the ODE likelihood (0 skips it). ``reference`` and
    ``train`` are tensors (N, *dims) of the model's example shape, finite. Returns a JSON-ready dict.
    """
    generator = check_generator(generator) if generator is not None else torch.Generator().manual_seed(0)
    n_samples = check_count(n_samples, "n_samples", minimum=2)
    if dist is None and reference is None:
        raise DDPMLabError("evaluate needs the true distribution (dist=...) or held-out data (reference=...)")
    shape = tuple(model.data_shape)
    if dist is not None and tuple(getattr(dist, "event_shape", shape)) != shape:
        raise DDPMLabError(f"dist draws examples of shape {tuple(dist.event_shape)}, but the model's data_shape is "
                           f"{shape}")
    family = family_of(model)
    if isinstance(dist, GaussianMixture):
        return evaluate_run(model, dist, generator, n_bound=n_bound, n_ode=n_ode, n_samples=n_samples,
                            sampler=sampler, steps=steps, **options)
    samples = sample(model, n_samples, sampler, steps, generator=generator, **options)
    if dist is not None:
        ev = against_distribution(dist, samples, generator)
    else:
        reference = check_examples(reference, "reference", shape, model.dtype, min_rows=2 if train is not None else 4)
        if train is not None:
            train = check_examples(train, "train", shape, model.dtype, min_rows=2)
        if train is None:  # the floor needs data the model could have seen: half of the reference stands in
            half = reference.shape[0] // 2
            train, reference = reference[:half], reference[half:]
        ev = against_heldout(samples, train, reference, generator)
    return {**ev, "family": family.name}

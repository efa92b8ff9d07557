"""``evaluate``: how good a model is, against the best possible where that is known.

- A ``GaussianMixture``: the exact evaluation (``evaluation.exact.evaluate_run``): the bound term by
  term, the probability-flow ODE likelihood and sample metrics, each beside the exact oracle's.
- Any other distribution with ``sample`` (and ``log_prob`` where known): sample metrics against a fresh
  reference sample, beside the floor of a true sample of the same size.
- Held-out data (``reference``, with ``train`` for the floor): sample metrics against the held-out rows.
"""
from __future__ import annotations

import torch

from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.paths import family_of
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.core.validate import check_count, check_examples, check_generator
from ddpmlab.evaluation.exact import evaluate_run
from ddpmlab.evaluation.exact_flow import evaluate_flow_run
from ddpmlab.evaluation.metrics_nd import against_distribution, against_heldout
from ddpmlab.sampling.api import sample


def evaluate(model, dist=None, reference=None, train=None, n_samples: int = 10_000, sampler: str = "ancestral",
             steps: int = 0, generator: torch.Generator | None = None, n_bound: int = 10_000, n_ode: int = 256,
             **options) -> dict:
    """Evaluate ``model`` (any model of the contract) against ``dist`` or held-out ``reference`` data.

    ``sampler``, ``steps`` and ``options`` choose how samples are drawn (for a mixture: the exact
    evaluation's own ancestral samples unless another sampler is named). On a mixture, ``n_bound`` data
    points for each bound and ``n_ode`` for the ODE likelihood (0 skips it). ``reference`` and ``train`` are
    tensors (N, *dims) of the model's example shape, finite. Returns a JSON-ready dict.
    """
    generator = check_generator(generator) if generator is not None else torch.Generator().manual_seed(0)
    n_samples = check_count(n_samples, "n_samples", minimum=2)
    if dist is None and reference is None:
        raise DDPMLabError("evaluate needs the true distribution (dist=...) or held-out data (reference=...)")
    shape = tuple(model.data_shape)
    if dist is not None and tuple(getattr(dist, "event_shape", shape)) != shape:
        raise DDPMLabError(f"dist draws examples of shape {tuple(dist.event_shape)}, but the model's data_shape is "
                           f"{shape}")
    if family_of(model) == "flow" and sampler == "ancestral":  # a flow's default: its ODE, 25 Heun steps
        sampler, steps = "ode", steps or 25
    draw = lambda: sample(model, n_samples, sampler, steps, generator=generator, **options)  # noqa: E731
    if isinstance(dist, GaussianMixture) and family_of(model) == "flow":
        return evaluate_flow_run(model, dist, generator, n_ode=n_ode, n_samples=n_samples, steps=steps,
                                 solver=options.get("solver", "heun"))
    if isinstance(dist, GaussianMixture):
        samples = None if (sampler, steps, options) == ("ancestral", 0, {}) else draw()
        return evaluate_run(model, dist, generator, n_bound=n_bound, n_ode=n_ode, n_samples=n_samples,
                            samples=samples)
    if dist is not None:
        return against_distribution(dist, draw(), generator)
    reference = check_examples(reference, "reference", shape, model.dtype, min_rows=2 if train is not None else 4)
    if train is not None:
        train = check_examples(train, "train", shape, model.dtype, min_rows=2)
    if train is None:  # the floor needs data the model could have seen: half of the reference stands in
        half = reference.shape[0] // 2
        train, reference = reference[:half], reference[half:]
    return against_heldout(draw(), train, reference, generator)

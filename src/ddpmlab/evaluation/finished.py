"""Evaluate a finished run, whatever its data and its family: the one dispatch behind ``ddpmlab evaluate``,
the report and the tutorial (by data kind; what a family changes, ``evaluate_run`` asks the family).

A run here is anything with ``model``, ``cfg`` (the resolved ``Config``), ``info`` (run.json), ``dist``
(the mixture recorded in run.json, or None) and ``to_data_units`` (``ddpmlab.runs.format.Run``).

| data                                   | kind           | evaluation                                   |
|----------------------------------------|----------------|----------------------------------------------|
| a Gaussian mixture (1-D, eight_gaussians) | ``mixture``  | ``exact.evaluate_run``: oracle, bound, ODE   |
| moons, swiss_roll, checkerboard        | ``distribution`` | ``nd.evaluate_distribution``               |
| digits                                 | ``digits``     | ``nd.evaluate_digits``                       |
| the user's file or tensor (API)        | ``heldout``    | ``nd.evaluate_heldout``                      |
"""
from __future__ import annotations

import inspect

import torch

from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.threads import intra_op_threads
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.data.base import file_split, kept_split, make_training_data
from ddpmlab.data.digits import digits_split
from ddpmlab.data.named import NAMED
from ddpmlab.evaluation.exact import evaluate_run
from ddpmlab.evaluation.memorisation_run import distances_of, memorisation_of
from ddpmlab.evaluation.nd import evaluate_digits, evaluate_distribution, evaluate_heldout
from ddpmlab.evaluation.range_check import RULE, data_stats, out_of_range
from ddpmlab.models.family import family_of
from ddpmlab.sampling.api import draw_samples, sample_options
from ddpmlab.sampling.grids import time_axis
from ddpmlab.sampling.registry import SAMPLERS

KINDS = ("mixture", "distribution", "digits", "heldout")


def run_data(run) -> tuple[str, object]:
    """(kind, distribution or None) of a finished run's data; an unknown dataset is a ``DDPMLabError``."""
    name = run.cfg.data.name
    if run.dist is not None:
        if "scale" in run.info.get("data", {}):
            raise DDPMLabError("the run's data were standardised; exact evaluation needs the model in data units")
        return "mixture", run.dist
    if name in ("file", "tensor"):  # a tensor run keeps its rows in its directory (``kept_split``)
        return "heldout", None
    if name not in NAMED:
        raise DDPMLabError(f"the run's data distribution is unknown (dataset {name!r})")
    dist = NAMED[name]()
    if isinstance(dist, GaussianMixture):
        return "mixture", dist
    return ("digits" if name == "digits" else "distribution"), dist


def draw_run_samples(run, n: int, generator: torch.Generator, keep_trajectory: bool = False) -> torch.Tensor:
    """``n`` samples (model space) with the run's own sampler settings, or the trajectory."""
    s = run.cfg.sample
    return draw_samples(run.model, n, s.sampler, s.steps, s.eta, generator, keep_trajectory=keep_trajectory,
                        ode_solver=s.ode_solver, time_shift=s.time_shift, grid=s.grid)


def run_sampling(run) -> dict:
    """The run's own sampler settings as ``sample``'s arguments (sampler, steps and its options)."""
    s = run.cfg.sample
    return {"sampler": s.sampler, "steps": s.steps,
            **sample_options(s.sampler, s.eta, s.ode_solver, s.time_shift, s.grid)}


def to_model_space(run, x: torch.Tensor) -> torch.Tensor:
    """Data units to the model's space (the inverse of ``run.to_data_units``)."""
    d = run.info["data"]
    if "scale" not in d:
        return x
    shape = (1,) + tuple(d["data_shape"])
    return (x - torch.tensor(d["shift"]).reshape(shape)) / torch.tensor(d["scale"]).reshape(shape)


def data_log_scale(run) -> float:
    """log |det| of ``run.to_data_units``: the sum of the log standardisation scales (0 when unscaled), so
    that log p_data(x) = log p_model(z) - ``data_log_scale(run)`` for x = z * scale + shift."""
    d = run.info["data"]
    return float(torch.tensor(d["scale"], dtype=torch.float64).log().sum()) if "scale" in d else 0.0


def heldout_split(run) -> tuple[torch.Tensor, torch.Tensor]:
    """(training rows, held-out rows) of a file run or a tensor run (the rows kept in its directory), in
    data units, checked against the run's record."""
    recorded = run.info["data"].get("heldout")
    if run.cfg.data.name == "file":
        return file_split(run.cfg.data, recorded)
    return kept_split(getattr(run, "path", None), recorded)


def reference_data(run, n: int, generator: torch.Generator) -> torch.Tensor:
    """Up to ``n`` training points in data units: draws of a named distribution, the digits' training
    split, the training rows of a file."""
    kind, dist = run_data(run)
    if kind == "heldout":
        x = heldout_split(run)[0]
    elif kind == "digits":
        x = digits_split("train")[0]
    else:
        return dist.sample(n, generator)
    return x if len(x) <= n else x[torch.randperm(len(x), generator=generator)[:n]]


def default_samples(run) -> int:
    """Samples the evaluation draws by default: as many as training images for the digits (the Frechet
    distance's floor has that size), as many as training rows (at most 10,000) for a file, else 10,000."""
    kind, _ = run_data(run)
    if kind == "digits":
        return int(digits_split("train")[0].shape[0])
    if kind == "heldout":
        return min(10_000, int(run.info["data"].get("n_train") or 10_000))
    return 10_000


@torch.no_grad()
def evaluate_finished_run(run, generator: torch.Generator, n_bound: int = 10_000, n_ode: int = 256,
                          n_samples: int | None = None, threads: int | None = 1) -> dict:
    """The evaluation of a finished run, in ``evaluate_run``'s layout with its ``kind``; ``n_samples``
    None means ``default_samples``. Everything in the model's space except where stated."""
    kind, dist = run_data(run)
    n = default_samples(run) if n_samples is None else n_samples
    if n < 2 or n_ode == 1 or n_ode < 0:
        raise DDPMLabError("evaluation needs at least 2 points for each estimate (n_ode = 0 skips the ODE)")
    if kind == "mixture":  # model and oracle by the run's own sampler
        with intra_op_threads(threads):
            samples = draw_run_samples(run, n, generator)
        ev = evaluate_run(run.model, dist, generator, n_bound=n_bound, n_ode=n_ode, samples=samples, threads=threads,
                          **run_sampling(run))
    else:
        with intra_op_threads(threads):
            samples = draw_run_samples(run, n, generator)
            if kind == "distribution":
                ev = evaluate_distribution(run.model, dist, samples, generator, n_ode=n_ode)
            elif kind == "digits":
                ev = evaluate_digits(samples, generator)
            else:
                train, held = heldout_split(run)
                ev = evaluate_heldout(run.model, samples, to_model_space(run, train), to_model_space(run, held),
                                      generator, n_ode=n_ode, log_scale=data_log_scale(run),
                                      heldout_desc=run.info["data"].get("heldout"))
    ev["family"] = family_of(run.model).name
    ev["settings"].update(sampler_settings(run))
    ev["samples_out_of_range"] = run_range(run, run.to_data_units(samples))
    ev["data"]["name"] = run.info["data"]["name"]
    train = training_rows(run)
    memo = memorisation_of(run.model, run.to_data_units(samples), train, true_rows(run, n, generator),
                           run.to_data_units, lambda x: to_model_space(run, x), generator)
    if memo is not None:  # a finite training set: near-copies beside true samples' and the optimum's
        ev["memorisation"] = memo
    with intra_op_threads(threads):  # per t, the model's distance to each optimum (or why there is none)
        ev["optimum_distances"] = distances_of(run.model, dist if kind == "mixture" else None,
                                               None if train is None else to_model_space(run, train), generator)
    return ev


N_REFERENCE = 10_000  # training points the range check's data statistics are taken from


def run_range(run, samples: torch.Tensor) -> dict | None:
    """``{"count", "of", "worst_std", "rule"}`` (``range_check.RULE``) for a run's ``samples`` in data units,
    against its training data (``reference_data``, drawn from a generator of its own); None when the run's
    data cannot be read (nothing to compare with)."""
    try:
        ref = reference_data(run, N_REFERENCE, torch.Generator().manual_seed(0))
    except DDPMLabError:
        return None
    count, worst = out_of_range(samples, data_stats(ref))
    return {"count": count, "of": int(len(samples)), "worst_std": worst, "rule": RULE}


def sampler_settings(run) -> dict:
    """How a run's evaluation samples are drawn: its ``sample`` section's sampler, steps (0: all T) and
    eta (None where the sampler takes no eta)."""
    s = run.cfg.sample
    takes_eta = "eta" in inspect.signature(SAMPLERS.get(s.sampler)).parameters
    return {"sampler": s.sampler, "sampling_steps": time_axis(run.model).count(s.steps),
            "eta": s.eta if takes_eta else None}


def training_rows(run) -> torch.Tensor | None:
    """The run's finite training set in data units, or None when it trained on fresh draws."""
    kind, _ = run_data(run)
    if kind == "heldout":
        return heldout_split(run)[0]
    if kind == "digits":
        return digits_split("train")[0]
    if run.cfg.data.n_train <= 0:
        return None
    data = make_training_data(run.cfg.data, torch.Generator().manual_seed(run.cfg.train.seed))
    return run.to_data_units(data.train)


def true_rows(run, n: int, generator: torch.Generator) -> torch.Tensor:
    """Data the model never saw, in data units: held-out rows (a file, a tensor, the digits) or fresh draws."""
    kind, dist = run_data(run)
    if kind == "heldout":
        return heldout_split(run)[1]
    if kind == "digits":
        return digits_split("heldout")[0]
    return reference_data(run, n, generator)

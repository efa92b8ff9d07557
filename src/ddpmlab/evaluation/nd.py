"""Evaluation of a model whose data are not a Gaussian mixture, in ``evaluate_run``'s JSON layout
(``format``, ``version``, ``kind``, ``settings``, ``data``, ``model``: ``samples`` and ``ode``), every
metric beside its floor (what true data of the same size score):

- ``distribution``: a named distribution (moons, swiss_roll, checkerboard): sliced W1 and MMD against a
  fresh reference sample (``metrics_nd.against_distribution``); where the density is exact, -E log q
  over the samples beside the entropy, and the model's probability-flow ODE NLL on true points beside
  the entropy;
- ``digits``: the Frechet distance in the digit classifier's features (``fid``) beside the train /
  held-out floor, the class histogram, and sliced W1 and MMD against the held-out images;
- ``heldout``: the user's file, against the rows held out at training time (``data.base.split_heldout``),
  the floor being as many training rows against the same held-out rows, in the model's (standardised)
  space; and the model's ODE NLL of held-out rows, in data units (no floor: the density is unknown).
"""
from __future__ import annotations

import math
import time

import torch

from ddpmlab.core.gaussian import nats_to_bpd
from ddpmlab.data.digits import NUM_CLASSES, digits_split
from ddpmlab.evaluation.exact import ode_nll
from ddpmlab.evaluation.fid import evaluate_digit_samples
from ddpmlab.evaluation.metrics_nd import against_distribution, against_heldout

FLOOR_REPEATS = 5  # true samples averaged for a floor (one sliced W1 of 10,000 points varies by ~30 %)


def _layout(kind: str, settings: dict, data: dict, samples: dict, ode: dict, seconds: dict) -> dict:
    return {"format": "ddpmlab-evaluation", "version": 1, "kind": kind, "settings": settings, "data": data,
            "model": {"samples": samples, "ode": ode, "seconds": {k: round(v, 3) for k, v in seconds.items()}}}


def _timed(seconds: dict, key: str, fn):
    start = time.perf_counter()
    out = fn()
    seconds[key] = time.perf_counter() - start
    return out


def evaluate_distribution(model, dist, samples: torch.Tensor, generator: torch.Generator, n_ode: int = 256,
                          floor_repeats: int = FLOOR_REPEATS) -> dict:
    """``samples`` (n, *dims) of ``model`` against the named distribution ``dist``."""
    n = samples.shape[0]
    seconds: dict = {}
    n_ref = min(100_000, max(10_000, 10 * n))
    part = _timed(seconds, "samples", lambda: {"n": n, **against_distribution(
        dist, samples, generator, n_ref=n_ref, floor_repeats=floor_repeats)})
    dims = math.prod(dist.event_shape)
    data = {"dims": dims}
    if hasattr(dist, "entropy_nats"):
        data.update(entropy_nats=dist.entropy_nats(), entropy_nats_se=0.0, entropy_method="exact")
    elif "nll_nats_floor" in part:
        data.update(entropy_nats=part["nll_nats_floor"], entropy_nats_se=part["nll_nats_floor_se"],
                    entropy_method="monte-carlo")
    if "entropy_nats" in data:
        data["entropy_bpd"] = nats_to_bpd(data["entropy_nats"], dims)
    if n_ode == 0:
        ode = {"skipped": "n_ode = 0"}
    elif "entropy_nats" not in data:
        ode = {"skipped": "the data's density is unknown: no floor to read an NLL against"}
    else:
        x = dist.sample(n_ode, generator, dtype=torch.float64).reshape((n_ode,) + tuple(model.data_shape))
        ode = _timed(seconds, "ode", lambda: ode_nll(model, x, generator))
    settings = {"n_samples": n, "n_ode": n_ode, "n_reference": n_ref, "floor_repeats": floor_repeats}
    return _layout("distribution", settings, data, part, ode, seconds)


def evaluate_digits(samples: torch.Tensor, generator: torch.Generator, classifier=None) -> dict:
    """Digit images ``samples`` (n, 1, 8, 8) in [-1, 1] against the held-out split."""
    seconds: dict = {}
    fd = _timed(seconds, "frechet", lambda: evaluate_digit_samples(samples, classifier))
    train, _ = digits_split("train")
    held, held_labels = digits_split("heldout")
    nd = _timed(seconds, "samples", lambda: against_heldout(samples.clamp(-1, 1), train, held, generator))
    part = {**fd, **nd, "heldout_class_histogram": torch.bincount(held_labels, minlength=NUM_CLASSES).tolist()}
    data = {"dims": int(held[0].numel()), "n_train": int(train.shape[0]), "n_heldout": int(held.shape[0])}
    settings = {"n_samples": int(samples.shape[0]), "n_ode": 0}
    return _layout("digits", settings, data, part, {"skipped": "no density for images of digits"}, seconds)


def evaluate_heldout(model, samples: torch.Tensor, train: torch.Tensor, heldout: torch.Tensor,
                     generator: torch.Generator, n_ode: int = 256, log_scale: float = 0.0,
                     heldout_desc: dict | None = None) -> dict:
    """Model-space ``samples`` against held-out rows (``train`` and ``heldout`` in model space too);
    ``log_scale``: sum of the log standardisation scales, so held-out NLL is reported in data units."""
    seconds: dict = {}
    part = _timed(seconds, "samples", lambda: {"n": int(samples.shape[0]), "space": "model (standardised columns)",
                                               **against_heldout(samples, train, heldout, generator)})
    dims = math.prod(heldout.shape[1:])
    if n_ode == 0:
        ode = {"skipped": "n_ode = 0"}
    else:
        x = heldout[:n_ode].double().reshape((-1,) + tuple(model.data_shape))
        ode = _timed(seconds, "ode", lambda: ode_nll(model, x, generator))
        for key in ("nll_nats", "nll_nats_median"):
            if ode.get(key) is not None:
                ode[key] += log_scale  # log p_data(x) = log p_model(z) - sum log scale
        if ode.get("nll_nats") is not None:
            ode["nll_bpd"] = nats_to_bpd(ode["nll_nats"], dims)
        ode["on"] = "held-out rows, nats in data units (no floor: the density is unknown)"
    data = {"dims": dims, "n_train": int(train.shape[0]), "n_heldout": int(heldout.shape[0]),
            "heldout": heldout_desc or {}}
    settings = {"n_samples": int(samples.shape[0]), "n_ode": n_ode}
    return _layout("heldout", settings, data, part, ode, seconds)

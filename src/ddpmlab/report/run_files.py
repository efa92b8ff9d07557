"""A run directory's own files as the report reads them: ``evaluation.json`` (every field checked before it
is shown: a hand-edited or hostile file is refused in one line) and ``metrics.csv`` (the training curve)."""
from __future__ import annotations

import csv
import json
from pathlib import Path

from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.family import FAMILIES
from ddpmlab.report.memorisation import check_optimum_distances
from ddpmlab.runs.checkpoint import METRICS_FILE
from ddpmlab.runs.fields import INT64_MAX, NUMBERS, read_field
from ddpmlab.runs.metrics_log import read_metrics

EVALUATION_FILE = "evaluation.json"
# What the report reads of an evaluation.json (``summary.metric_rows``, the per-step figures, the class
# histogram). Bound totals and the data's entropies are numbers; every other figure may be null (not
# measured). The sample metrics come in groups, all of a group's fields or none (the first names the group:
# the model's decide, the oracle has the same), the groups of ``REQUIRED_GROUPS`` always.
BOUND_FIELDS = tuple(f"{k}{se}" for k in ("total_nats", "prior_nats", "steps_nats", "decoder_nats", "total_bpd")
                     for se in ("", "_se"))
SAMPLE_GROUPS = (("w1", "w1_noise_floor", "ks", "ks_noise_floor"), ("sliced_w1", "sliced_w1_noise_floor"),
                 ("mmd", "mmd_noise_floor"), ("nll_nats", "nll_nats_se", "nll_nats_floor", "outside_support_fraction"),
                 ("fd", "fd_floor", "classes_present"))
REQUIRED_GROUPS = ("sliced_w1", "mmd")  # data that are not a mixture


def _check_part(ev: dict, who: str, kind: str, bound: bool) -> None:
    """The figures of ``who`` (the model, or the oracle of mixture data)."""
    present = set(read_field(ev, "model.samples", dict)) | (set() if kind == "mixture" else set(REQUIRED_GROUPS))
    for group in SAMPLE_GROUPS:
        if group[0] in present:
            for key in group:
                read_field(ev, f"{who}.samples.{key}", float, nullable=True)
    for key in ("class_histogram", "heldout_class_histogram"):
        read_field(ev, f"{who}.samples.{key}", NUMBERS, None)
    for key in ("nll_nats", "nll_nats_se"):
        read_field(ev, f"{who}.ode.{key}", float, None, nullable=True)
    if kind == "mixture":
        for key in BOUND_FIELDS if bound else ():
            read_field(ev, f"{who}.bound.{key}", float)
        for key in ("component_fractions", "component_fractions_se"):
            if not read_field(ev, f"{who}.samples.{key}", NUMBERS):
                raise ValueError(f"{who}.samples.{key} is empty")


def check_evaluation(ev, kind: str, run_family: str = "ddpm") -> dict:
    """``ev`` (an evaluation.json's content) if every field the report reads is of its kind, for a run of
    data ``kind`` and model family ``run_family``; ``ValueError`` naming the first that is not."""
    if not isinstance(ev, dict) or ev.get("format") != "ddpmlab-evaluation":
        raise ValueError("not a ddpmlab evaluation")
    got = read_field(ev, "kind", str, "mixture")
    if got != kind:
        raise ValueError(f"kind is {got[:40]!r}, the run's data are {kind!r}")
    recorded = read_field(ev, "family", str, "ddpm")
    if recorded != run_family:
        raise ValueError(f"family is {recorded[:40]!r}, the run's model is a {run_family} model")
    bound = "bound" in FAMILIES.get(run_family).exact_terms
    for who in ("model", "oracle") if kind == "mixture" else ("model",):
        _check_part(ev, who, kind, bound)
    if read_field(ev, "model.flow_map", dict, None) is not None:  # a few-step family's map error per t
        times = read_field(ev, "model.flow_map.t", NUMBERS)
        for key in ("error", "error_se"):
            if len(read_field(ev, f"model.flow_map.{key}", NUMBERS)) != len(times):
                raise ValueError(f"model.flow_map.{key} and model.flow_map.t differ in length")
    if read_field(ev, "memorisation", dict, None) is not None:  # near-copies of a finite training set
        read_field(ev, "memorisation.n_train", int)
        for key in ("model", "true_samples", "threshold"):
            read_field(ev, f"memorisation.{key}", float)
        read_field(ev, "memorisation.empirical_optimum", float, None, nullable=True)
    check_optimum_distances(ev)  # per t, the distances to both optima (issue 26)
    if kind == "mixture":
        for key in ("entropy_nats", "entropy_bpd"):
            read_field(ev, f"data.{key}", float)
        read_field(ev, "data.true_component_fractions", NUMBERS)
        terms = read_field(ev, "model.bound.terms_nats", NUMBERS, None) if bound else None
        if terms is not None:  # the per-step figures: the model's and the oracle's terms, of one length
            for path in ("model.bound.terms_nats_se", "oracle.bound.terms_nats", "oracle.bound.terms_nats_se"):
                if len(read_field(ev, path, NUMBERS)) != len(terms):
                    raise ValueError(f"{path} and model.bound.terms_nats differ in length")
    else:
        read_field(ev, "data.entropy_nats", float, None, nullable=True)
    return ev


def read_evaluation(path: Path, kind: str, run_family: str = "ddpm") -> dict | None:
    """The run's evaluation.json (None when it has none), checked by ``check_evaluation``."""
    f = path / EVALUATION_FILE
    if not f.exists():
        return None
    try:
        return check_evaluation(json.loads(f.read_text()), kind, run_family)
    except RecursionError:
        raise DDPMLabError(f"{f}: nested too deeply to be an evaluation") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DDPMLabError(f"{f}: unreadable ({exc}); delete it or run `ddpmlab evaluate` again") from None
    except ValueError as exc:
        raise DDPMLabError(f"{f}: malformed evaluation ({exc}); delete it or run `ddpmlab evaluate` again") from None


def read_training_curve(path: Path) -> list | None:
    """metrics.csv's rows (None when the run has none); a step outside 0..2^63 - 1 is refused."""
    f = path / METRICS_FILE
    if not f.exists():
        return None
    try:
        rows = read_metrics(f)
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, csv.Error) as exc:
        raise DDPMLabError(f"{f}: unreadable ({type(exc).__name__}: {exc})") from None
    bad = next((r["step"] for r in rows if not 0 <= r["step"] <= INT64_MAX), None)
    if bad is not None:
        raise DDPMLabError(f"{f}: unreadable (step {str(bad)[:20]} is not a training step)")
    return rows

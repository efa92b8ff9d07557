"""Several runs in one report: runs whose configs differ only in ``train.seed`` form a group, shown as the
mean and standard deviation over its seeds, in a colour of its own (``plots.GROUP_COLORS``) in every figure.

A group's name is short: its run's directory name where every group is one run, else the config keys that
tell the groups apart, and of those only keys the runs use (``used_keys``: not a flow option in a DDPM run,
nor the width of an MLP in a run of your own network) whose values differ between the groups that use them.
"""
from __future__ import annotations

import inspect
import json
import math
from dataclasses import dataclass

import numpy as np

from ddpmlab.config.objective_keys import OBJECTIVE_KEYS
from ddpmlab.core.schedule import SCHEDULES
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.objectives.losses import OBJECTIVES, objective_options
from ddpmlab.report.plots import GROUP_COLORS
from ddpmlab.sampling.api import sample_options

SEED_KEY = ("train", "seed")
# keys that change how a run is carried out (where, how often it saves, how many samples it draws at the
# end), not what it learns or how its samples are drawn: never a group's name
BOOKKEEPING = frozenset({"train.seed", "train.checkpoint_every", "train.keep_checkpoints", "train.device",
                         "train.threads", "sample.n"})
FILE_KEYS = ("data.path", "data.standardize", "data.label_column")  # read only for data.name = "file"
MAX_LABEL = 40  # characters of a group's name, beyond which a shorter naming is preferred
MAX_VALUE = 24  # characters of a config value in a group's name


@dataclass
class Group:
    label: str
    color: str
    views: list  # RunView, in the order given

    @property
    def seeds(self) -> list:
        return [v.config["train"]["seed"] for v in self.views]


def _flat(config: dict) -> dict:
    return {f"{s}.{k}": v for s, values in config.items() for k, v in values.items()}


def _without_seed(config: dict) -> str:
    c = json.loads(json.dumps(config))
    c[SEED_KEY[0]].pop(SEED_KEY[1], None)
    return json.dumps(c, sort_keys=True)


def differing_keys(configs: list[dict]) -> list[str]:
    """'section.key' names whose values differ between some of ``configs`` (in config order)."""
    flats = [_flat(c) for c in configs]
    keys = list(flats[0]) + [k for f in flats[1:] for k in f if k not in flats[0]]
    return [k for k in dict.fromkeys(keys) if len({json.dumps(f.get(k)) for f in flats}) > 1]


def _unused_model_keys(view) -> set:
    """[model] keys the model does not record of itself (``describe()``: what rebuilds it)."""
    kept = {"family", "arch", *view.run.model.describe()}
    return {f"model.{k}" for k in view.config["model"] if k not in kept}


def _unused_schedule_keys(view) -> set:
    """[schedule] keys its schedule was not made from: all of them for a family without a schedule (flow)."""
    keys = {f"schedule.{k}" for k in view.config["schedule"]}
    spec = view.run.model.schedule_spec() or {}
    if not spec:
        return keys
    try:
        takes = set(inspect.signature(SCHEDULES.get(spec["kind"])).parameters)
    except (DDPMLabError, KeyError, TypeError, ValueError):
        return set()
    return keys - {f"schedule.{k}" for k in {"kind", "steps"} | takes}


def _unused_train_keys(view) -> set:
    """[train] keys that set an option the run's objective does not take; label_dropout without classes."""
    t = view.config["train"]
    try:
        takes = set(objective_options(OBJECTIVES.get(t["objective"])))
    except DDPMLabError:  # your own objective (module:function): its options are not known here
        return set()
    out = {f"train.{k}" for k, arg in OBJECTIVE_KEYS.items() if arg not in takes}
    if not t.get("objective_options"):
        out.add("train.objective_options")
    if not view.config["model"].get("num_classes"):
        out.add("train.label_dropout")
    return out


def _unused_sample_keys(view) -> set:
    """[sample] options that do not reach the run's sampler (``sampling.api.sample_options``)."""
    s = view.config["sample"]
    try:
        given = sample_options(s["sampler"], s.get("eta"), s.get("ode_solver"), s.get("time_shift", 1.0),
                               s.get("grid", "uniform"))
    except (DDPMLabError, KeyError, TypeError, ValueError):
        return set()
    unused = {f"sample.{k}" for k, opt in (("eta", "eta"), ("ode_solver", "solver")) if opt not in given}
    return unused | ({"sample.time_shift"} if "shift" not in given and s.get("grid") != "shifted" else set())


def _unused_data_keys(view) -> set:
    d = view.config["data"]
    out = set(FILE_KEYS) if d.get("name") != "file" else set()
    return out | ({"data.max_classes"} if not (d.get("labels") or d.get("label_column")) else set())


def used_keys(view) -> set[str]:
    """The 'section.key' names of the config of ``view``'s run that the run uses: every key but those of
    ``BOOKKEEPING`` and those that reach neither its model, its schedule, its objective, its sampler nor its
    data (a flow option in a DDPM run, model.width in a run of your own network, eta for the ancestral sampler)."""
    every = set(_flat(view.config))
    unused = (_unused_model_keys(view) | _unused_schedule_keys(view) | _unused_train_keys(view)
              | _unused_sample_keys(view) | _unused_data_keys(view))
    return every - BOOKKEEPING - unused


def telling_keys(views) -> list[str]:
    """The keys that tell ``views`` (one run of each group) apart: used by some of them, and of different
    values among those that use them (in config order)."""
    used = [used_keys(v) for v in views]
    flats = [_flat(v.config) for v in views]
    return [k for k in differing_keys([v.config for v in views]) if k not in BOOKKEEPING
            and len({json.dumps(f.get(k)) for f, u in zip(flats, used) if k in u}) > 1]


def _value_text(v) -> str:
    text = str(v)
    return text if len(text) <= MAX_VALUE else text[:MAX_VALUE - 1] + "\u2026"


def key_labels(views) -> list[str]:
    """Each view's ``telling_keys`` it uses, as "key=value, ..." (the key without its section unless two
    sections share it)."""
    keys = telling_keys(views)
    short = [k.split(".", 1)[1] for k in keys]
    names = short if len(set(short)) == len(short) else keys
    labels = []
    for v in views:
        flat, used = _flat(v.config), used_keys(v)
        labels.append(", ".join(f"{n}={_value_text(flat[k])}" for n, k in zip(names, keys) if k in used))
    return labels


def _labels(members) -> list[str]:
    """The groups' names: run names (every group one run) or ``key_labels``, whichever are distinct and
    short; the first run's name with the count of the others when neither tells them apart."""
    if len(members) == 1:
        return [members[0][0].name if len(members[0]) == 1 else "all runs"]
    firsts = [m[0] for m in members]
    candidates = ([[v.name for v in firsts]] if all(len(m) == 1 for m in members) else []) + [key_labels(firsts)]
    valid = [c for c in candidates if all(c) and len(set(c)) == len(c)]
    if valid:
        return next((c for c in valid if max(map(len, c)) <= MAX_LABEL), min(valid, key=lambda c: max(map(len, c))))
    labels = [m[0].name + (f" +{len(m) - 1}" if len(m) > 1 else "") for m in members]
    return labels if len(set(labels)) == len(labels) else [f"group {i + 1}" for i in range(len(members))]


def group_runs(views) -> list[Group]:
    """Groups of runs that differ only in their seed, in order of first appearance; each run takes its
    group's colour (``RunView.color``)."""
    by_key: dict = {}
    for v in views:
        by_key.setdefault(_without_seed(v.config), []).append(v)
    members = list(by_key.values())
    groups = []
    for i, (label, m) in enumerate(zip(_labels(members), members)):
        groups.append(Group(label, GROUP_COLORS[i % len(GROUP_COLORS)], m))
        for v in m:
            v.color = groups[-1].color
    return groups


def objective_text(view) -> str:
    """The run's objective in words: its name and the options it takes that are not at their defaults
    (losses of different texts are different quantities: ``plots.training_curves``)."""
    t, used = view.config["train"], used_keys(view)
    try:
        defaults = objective_options(OBJECTIVES.get(t["objective"]))
    except DDPMLabError:
        defaults = {}
    options = {k: t[k] for k, arg in OBJECTIVE_KEYS.items() if f"train.{k}" in used and t.get(k) != defaults.get(arg)}
    options.update(t.get("objective_options") or {})
    extra = ", ".join(f"{k}={_value_text(v)}" for k, v in options.items())
    return str(t["objective"]) + (f" ({extra})" if extra else "")


def mean_sd(values) -> tuple[float | None, float | None, int]:
    """Mean, sample standard deviation (None for one value) and count of the finite ``values``."""
    v = np.array([x for x in values if isinstance(x, (int, float)) and x is not None and math.isfinite(x)],
                 dtype=np.float64)
    if len(v) == 0:
        return None, None, 0
    return float(v.mean()), (float(v.std(ddof=1)) if len(v) > 1 else None), len(v)


def metric_table(groups) -> tuple[list[str], list[dict]]:
    """(metric keys in order, one dict per key: label, note, and per group the model's values, and the
    oracle's and the floor's values over every run)."""
    order, table = [], {}
    for g in groups:
        for v in g.views:
            for r in v.rows:
                if r["key"] not in table:
                    order.append(r["key"])
                    table[r["key"]] = {"label": r["label"], "note": r["note"], "groups": {}, "oracle": [],
                                       "floor": []}
                e = table[r["key"]]
                e["groups"].setdefault(g.label, []).append(r["model"])
                e["oracle"].append(r["oracle"])
                e["floor"].append(r["floor"])
    return order, [table[k] for k in order]

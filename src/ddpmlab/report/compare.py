"""Several runs in one report: runs whose configs differ only in ``train.seed`` form a group, shown as the
mean and standard deviation over its seeds; groups are named by the config keys that tell them apart.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

from ddpmlab.report.plots import COLORS

SEED_KEY = ("train", "seed")


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


def group_runs(views) -> list[Group]:
    """Groups of runs that differ only in their seed, in order of first appearance."""
    by_key: dict = {}
    for v in views:
        by_key.setdefault(_without_seed(v.config), []).append(v)
    members = list(by_key.values())
    keys = [k for k in differing_keys([m[0].config for m in members]) if k != "train.seed"]
    short = [k.split(".", 1)[1] for k in keys]
    names = short if len(set(short)) == len(short) else keys  # "var_type", unless two sections share a key
    groups = []
    for i, m in enumerate(members):
        flat = _flat(m[0].config)
        label = ", ".join(f"{n}={flat.get(k)}" for n, k in zip(names, keys)) if keys else \
            (m[0].name if len(m) == 1 else "all runs")
        groups.append(Group(label, COLORS[i % len(COLORS)], m))
    return groups


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

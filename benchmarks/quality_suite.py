"""The recommended recipe over a spread of data: is it good on the user's own data, not only the seed's
mixture? (issue 24)

    nice -n 19 env OMP_NUM_THREADS=1 python benchmarks/quality_suite.py [--seeds 0-4] [--budgets 1,2,4]
        [--datasets seed_mixture,moons,...] [--set model.width=64 ...] [--digits-seeds 2] [--out DIR]
        [--name quality_suite]

Per dataset, seed and budget (a multiple of the recipe's ``train.iters``: its rule's number for the data,
``ddpmlab.config.budget``, when it is "auto") the recipe (``configs/
default.toml`` with ``--set`` overrides) trains through the Python API (``workflows.pipeline.fit``), is
saved and loaded back as ``ddpmlab train`` leaves it, and is measured with ``evaluation.quality`` (the
yardstick of the post-training line), with ``--draws`` independent draws of ``--n`` samples from the
run's own sampler:

- the seed mixture, the shipped 2-D sets (fresh draws; the recipe streams fresh data): W1 in 1-D,
  sliced W1 in 2-D, to fresh true draws, beside the mean of 5 true samples of the same size;
- Gaussian mixtures in 3-D and 10-D (unequal weights, full covariances) and a 2-D Student-t with 3
  degrees of freedom, each given as a user ``.npy`` file of ``--file-rows`` rows (the config cannot
  declare a mixture): the same, in data units, against the exact distribution;
- a user ``.npy`` file of 8,000 rows (three uneven rings, off centre and anisotropic in data units):
  sliced W1 to the rows held out at training time, beside as many training rows (``ddpmlab evaluate``'s
  floor);
- digits: the Frechet distance in the digit classifier's features (``fid.evaluate_digit_samples``, as
  many samples as training images) beside its floor (training images against held-out images).

Where the density is known (the mixtures, the checkerboard, the Student-t), the exact NLL gap
KL(q || p_model) in nats, 0 for a perfect model: the mean over ``--n-ode`` fresh true points x of the
model's probability-flow ODE NLL (``evaluation.ode.ode_log_likelihood``) plus log q(x), paired point by
point. Writes NAME.md, NAME.json (every row, rewritten after each dataset) and NAME.png into ``--out``
(default benchmarks/results), the load average at the top; ``--combine A.json B.json`` merges runs made
apart (e.g. seeds run one after another) into NAME.md / .json / .png.
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ddpmlab.config.budget import AUTO, auto_iters
from ddpmlab.config.schema import load_config
from ddpmlab.config.validation import validate
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.core.fileio import atomic_savefig, atomic_write_bytes, atomic_write_json
from ddpmlab.core.threads import intra_op_threads
from ddpmlab.data.base import make_training_data
from ddpmlab.data.named import NAMED
from ddpmlab.evaluation.ode import ode_log_likelihood
from ddpmlab.evaluation.fid import evaluate_digit_samples
from ddpmlab.evaluation.finished import data_log_scale, draw_run_samples, to_model_space
from ddpmlab.evaluation.quality import GOOD_RATIO, against_truth, run_quality
from ddpmlab.runs.format import load_run
from ddpmlab.workflows.pipeline import fit

ROOT = Path(__file__).resolve().parents[1]


class StudentT:
    """A 2-D Student-t with ``df`` degrees of freedom, location ``loc`` and scale matrix ``scale``:
    x = loc + L z / sqrt(w / df), z ~ N(0, I), w ~ chi^2(df) (df an integer: a sum of df squared normals)."""

    event_shape = (2,)
    dim = 2

    def __init__(self, df: int = 3, loc=(3.0, -1.0), scale=((2.0, 0.8), (0.8, 0.5))):
        self.df = df
        self.loc = torch.tensor(loc, dtype=torch.float64)
        self.scale = torch.tensor(scale, dtype=torch.float64)
        self.tril = torch.linalg.cholesky(self.scale)

    def sample(self, n: int, generator=None, dtype=torch.float32) -> torch.Tensor:
        z = torch.randn(n, 2, generator=generator, dtype=torch.float64)
        w = torch.randn(n, self.df, generator=generator, dtype=torch.float64).square().sum(1)
        return (self.loc + (z @ self.tril.T) / (w / self.df).sqrt()[:, None]).to(dtype)

    def log_prob(self, x) -> torch.Tensor:
        """The multivariate t density: log G((v + d) / 2) - log G(v / 2) - d / 2 log(v pi) - log|L|
        - (v + d) / 2 log(1 + |L^-1 (x - loc)|^2 / v)."""
        x = torch.as_tensor(x, dtype=torch.float64).reshape(-1, 2)
        v, d = float(self.df), 2.0
        u = torch.linalg.solve_triangular(self.tril, (x - self.loc).T, upper=False).T
        return (math.lgamma((v + d) / 2) - math.lgamma(v / 2) - d / 2 * math.log(v * math.pi)
                - self.tril.diagonal().log().sum() - (v + d) / 2 * torch.log1p(u.square().sum(1) / v))


def random_mixture(dim: int, weights, seed: int) -> GaussianMixture:
    """A mixture with the given unequal weights, means spread over a few units and full covariances
    (random rotations of random variances in [0.05, 1])."""
    g = torch.Generator().manual_seed(seed)
    k = len(weights)
    means = 2.5 * torch.randn(k, dim, generator=g, dtype=torch.float64)
    covs = []
    for _ in range(k):
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        var = 0.05 + 0.95 * torch.rand(dim, generator=g, dtype=torch.float64)
        covs.append(q @ torch.diag(var) @ q.T)
    return GaussianMixture(weights, means, torch.stack(covs))


def rings(n: int, seed: int = 0) -> np.ndarray:
    """The user's file: three rings of radii 1, 2, 3 holding 1/2, 1/3, 1/6 of the points, radial noise
    0.08, then stretched and moved in data units: (x, y) -> (40 + 5 x, -3 + 0.5 y)."""
    r = np.random.default_rng(seed)
    ring = r.choice(3, size=n, p=[1 / 2, 1 / 3, 1 / 6])
    angle = r.uniform(0, 2 * np.pi, n)
    radius = (ring + 1) + 0.08 * r.standard_normal(n)
    return np.stack([40 + 5 * radius * np.cos(angle), -3 + 0.5 * radius * np.sin(angle)], 1).astype(np.float32)


# name: (label, how it is given, exact distribution or None)
MIXTURE_3D = random_mixture(3, [0.6, 0.3, 0.1], seed=3)
MIXTURE_10D = random_mixture(10, [0.5, 0.25, 0.15, 0.1], seed=10)
DATASETS = {
    "seed_mixture": ("seed mixture (1-D)", "named", None),
    "moons": ("moons (2-D)", "named", None),
    "eight_gaussians": ("eight gaussians (2-D)", "named", None),
    "checkerboard": ("checkerboard (2-D)", "named", None),
    "swiss_roll": ("swiss roll (2-D)", "named", None),
    "mixture_3d": ("mixture, 3 components (3-D file)", "truth_file", MIXTURE_3D),
    "mixture_10d": ("mixture, 4 components (10-D file)", "truth_file", MIXTURE_10D),
    "student_t": ("Student-t, 3 d.o.f. (2-D file)", "truth_file", StudentT()),
    "rings_npy": ("three rings, 8,000 rows (2-D user .npy)", "user_file", None),
    "digits": ("digits (8 x 8)", "named", None),
}
USER_ROWS = 8000


def parse_ints(text: str) -> list[int]:
    """'0-4' or '0,2,3' (or a mix) as a list of ints."""
    out = []
    for part in text.split(","):
        a, _, b = part.partition("-")
        out += list(range(int(a), int(b) + 1)) if b else [int(a)]
    return out


def data_file(name: str, directory: Path, rows: int) -> Path:
    """The dataset's .npy file in ``directory`` (written once)."""
    path = directory / f"{name}.npy"
    if not path.exists():
        dist = DATASETS[name][2]
        x = rings(USER_ROWS) if dist is None else dist.sample(rows, torch.Generator().manual_seed(12345)).numpy()
        np.save(path, x)
    return path


def config_for(name: str, seed: int, budget: int, overrides: list[str], directory: Path, rows: int):
    cfg = load_config("default", overrides + [f"train.seed={seed}", "train.threads=1"])
    if DATASETS[name][1] == "named":
        cfg.data.name = name
    else:
        cfg.data.name, cfg.data.path = "file", str(data_file(name, directory, rows))
    if cfg.train.iters == AUTO:  # the recipe's rule for this data (ddpmlab.config.budget)
        cfg.train.iters = auto_iters(make_training_data(cfg.data, torch.Generator().manual_seed(0)).data_shape)
    cfg.train.iters = budget * cfg.train.iters
    validate(cfg)
    return cfg


def truth_of(name: str):
    """The exact distribution of a dataset (None for the user's file and digits)."""
    _, kind, dist = DATASETS[name]
    if kind == "named" and name != "digits":
        return NAMED[name]()
    return dist


def nll_gap(run, dist, n_ode: int, generator) -> dict:
    """KL(q || p_model) in nats, paired on ``n_ode`` fresh true points x: the mean of the model's ODE NLL
    (``evaluation.ode.ode_log_likelihood``: exact divergence in 2-D, Hutchinson beyond; data units) plus
    log q(x), and its SE."""
    if n_ode == 0 or not hasattr(dist, "log_prob"):
        return {}
    x = dist.sample(n_ode, generator, dtype=torch.float64)
    z = to_model_space(run, x.reshape((n_ode,) + tuple(run.model.data_shape)).float()).double()
    try:
        r = ode_log_likelihood(run.model, z, generator=generator, rtol=1e-5, atol=1e-5,
                               max_nfe=5000, threads=1)
    except DDPMLabError as exc:
        return {"nll_status": str(exc)}
    gap = -r["log_likelihood"] + data_log_scale(run) + dist.log_prob(x.reshape(n_ode, -1)).double()
    if not bool(torch.isfinite(gap).all()):
        return {"nll_status": "not finite"}
    return {"nll_gap_nats": float(gap.mean()), "nll_gap_se": float(gap.std() / math.sqrt(n_ode))}


def measure(name: str, run, args, generator) -> dict:
    """The metric beside its floor for one trained run (mean of ``args.draws`` draws but for digits)."""
    if name == "digits":
        n = len(NAMED["digits"]().images)
        with intra_op_threads(1):
            fd = evaluate_digit_samples(draw_run_samples(run, n, generator))
        return {"metric": "Frechet distance", "value": fd["fd"], "floor": fd["fd_floor"],
                "ratio": fd["fd"] / fd["fd_floor"]}
    dist = truth_of(name)
    draws = []
    for _ in range(args.draws):
        if DATASETS[name][1] == "truth_file":  # measured in data units against the exact distribution
            with intra_op_threads(1):
                x = run.to_data_units(draw_run_samples(run, args.n, generator))
            draws.append(against_truth(dist, x, generator))
        else:
            draws.append(run_quality(run, generator, n=args.n))
    value = sum(d["value"] for d in draws) / len(draws)
    floor = sum(d["floor"] for d in draws) / len(draws)
    out = {"metric": draws[0]["metric"], "value": value, "floor": floor, "ratio": value / floor,
           "ratio_per_draw": [d["ratio"] for d in draws]}
    if dist is not None:
        out.update(nll_gap(run, dist, args.n_ode, generator))
    return out


def one_run(name: str, seed: int, budget: int, args, directory: Path) -> dict:
    cfg = config_for(name, seed, budget, args.set, directory, args.file_rows)
    trainer = fit(cfg, progress=False)
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        trainer.save(Path(tmp) / "run")
        run = load_run(Path(tmp) / "run")
    start = time.perf_counter()
    row = {"dataset": name, "seed": seed, "budget": budget, "iters": cfg.train.iters,
           "width": cfg.model.width, "depth": cfg.model.depth, "train_seconds": round(trainer.train_seconds, 2),
           **measure(name, run, args, torch.Generator().manual_seed(10_000 + seed))}
    row["measure_seconds"] = round(time.perf_counter() - start, 1)
    return row


def _mean(values: list) -> float | None:
    """The mean of the values that are not None (None when there are none)."""
    v = [x for x in values if x is not None]
    return sum(v) / len(v) if v else None


def _num(v, fmt=".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def table(rows: list[dict]) -> list[str]:
    lines = ["| dataset | metric | budget (iters) | seeds | ratio: mean | worst | seeds <= 2.0 | metric | floor | "
             "NLL gap (nats) | train s |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in dict.fromkeys(r["dataset"] for r in rows):
        for budget in sorted({r["budget"] for r in rows if r["dataset"] == name}):
            rs = [r for r in rows if r["dataset"] == name and r["budget"] == budget]
            mean = lambda k: _mean([r.get(k) for r in rs])  # noqa: E731
            ratios = [r["ratio"] for r in rs]
            good = sum(x <= GOOD_RATIO for x in ratios)
            lines.append(f"| {DATASETS[name][0]} | {rs[0]['metric']} | x{budget} ({rs[0]['iters']}) | {len(rs)} | "
                         f"{_num(mean('ratio'), '.2f')} | {max(ratios):.2f} | {good} of {len(rs)} | "
                         f"{_num(mean('value'), '.4g')} | {_num(mean('floor'), '.4g')} | "
                         f"{_num(mean('nll_gap_nats'), '.3f')} | {_num(mean('train_seconds'), '.1f')} |")
    return lines


def verdicts(rows: list[dict]) -> list[str]:
    """Per dataset: the budgets at which every seed is within ``GOOD_RATIO``."""
    out = []
    for name in dict.fromkeys(r["dataset"] for r in rows):
        ok = [f"x{b}" for b in sorted({r["budget"] for r in rows if r["dataset"] == name})
              if all(r["ratio"] <= GOOD_RATIO for r in rows if r["dataset"] == name and r["budget"] == b)]
        n = len({r["seed"] for r in rows if r["dataset"] == name})
        verdict = (f"every seed ({n}) within {GOOD_RATIO:g}x at budget {', '.join(ok)}" if ok
                   else f"not within {GOOD_RATIO:g}x on every seed ({n}) at any budget")
        out.append(f"{DATASETS[name][0]}: {verdict}")
    return out


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(dict.fromkeys(r["dataset"] for r in rows))
    cols = min(5, len(names))
    nrows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 2.8 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        rs = [r for r in rows if r["dataset"] == name]
        iters = sorted({r["iters"] for r in rs})
        for seed in sorted({r["seed"] for r in rs}):
            pts = sorted((r["iters"], r["ratio"]) for r in rs if r["seed"] == seed)
            ax.plot(*zip(*pts), "o-", lw=0.8, ms=3, alpha=0.6)
        ax.axhline(GOOD_RATIO, color="k", ls="--", lw=0.8)
        ax.axhline(1.0, color="0.6", lw=0.6)
        ax.set_xscale("log", base=2)
        ax.set_xticks(iters, [str(i) for i in iters])
        ax.set_title(DATASETS[name][0], fontsize=8)
        ax.set_xlabel("training steps", fontsize=7)
        ax.set_ylabel(f"{rs[0]['metric']} / floor", fontsize=7)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def write(rows: list[dict], args, head: str, meta: dict | None = None) -> str:
    notes = [f"- Note: {n}" for n in args.note]
    md = "\n".join([head, "", *table(rows), "", *(f"- {v}" for v in verdicts(rows)), *notes, ""])
    atomic_write_bytes(args.out / f"{args.name}.md", md.encode())
    meta = meta or {"command": sys.argv[1:], "load_average": head.split("load average ")[-1].split(";")[0]}
    atomic_write_json(args.out / f"{args.name}.json", {**meta, "rows": rows})
    figure(rows, args.out / f"{args.name}.png")
    return md


def combine(args) -> None:
    """NAME.md, .json and .png from the rows of several runs of the suite (seeds run apart), each run's
    command and load averages quoted."""
    import json

    loaded = [json.loads(p.read_text()) for p in args.combine]
    parts = [q for part in loaded for q in part.get("parts", [part])]  # a combined file keeps its parts
    rows = [r for part in loaded for r in part["rows"]]
    head = "Combined from: " + "; ".join(f"`python benchmarks/quality_suite.py {' '.join(part['command'])}` "
                                         f"(load average {part.get('load_average', '?')})" for part in parts)
    args.out.mkdir(parents=True, exist_ok=True)
    meta = {"parts": [{"command": part["command"], "load_average": part.get("load_average", "?")} for part in parts]}
    print(write(rows, args, head, meta))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=parse_ints, default=parse_ints("0-4"))
    ap.add_argument("--budgets", type=parse_ints, default=[1, 2, 4], help="multiples of the recipe's train.iters")
    ap.add_argument("--datasets", type=lambda s: s.split(","), default=list(DATASETS))
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE", help="override the recipe")
    ap.add_argument("--digits-seeds", type=int, default=None, help="at most this many seeds for digits (the slowest)")
    ap.add_argument("--n", type=int, default=10_000, help="samples per draw")
    ap.add_argument("--draws", type=int, default=2, help="independent draws averaged per run")
    ap.add_argument("--n-ode", type=int, default=128, help="true points of the ODE NLL (0: skip)")
    ap.add_argument("--file-rows", type=int, default=20_000, help="rows of the mixture / Student-t files")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--name", default="quality_suite")
    ap.add_argument("--note", action="append", default=[], help="a line added under the table (repeatable)")
    ap.add_argument("--combine", type=Path, nargs="+", metavar="JSON",
                    help="train nothing: write NAME.md / .png from the rows of earlier runs' JSON files")
    args = ap.parse_args()
    if args.combine:
        return combine(args)
    unknown = [d for d in args.datasets if d not in DATASETS]
    if unknown:
        ap.error(f"unknown datasets {unknown}; choose from {', '.join(DATASETS)}")
    torch.set_num_threads(1)
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"load average: {load}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    head = (f"`python benchmarks/quality_suite.py {' '.join(sys.argv[1:])}`: 1 thread, torch {torch.__version__}; "
            f"load average at the start {load}; ratio = the metric / a true sample's (mean of {args.draws} draws "
            f"of {args.n} samples; digits: one draw of as many samples as training images)")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, seed in enumerate(args.seeds):  # seed by seed: a stopped run still covers every dataset
            for name in args.datasets:
                if name == "digits" and args.digits_seeds is not None and i >= args.digits_seeds:
                    continue
                for budget in args.budgets:
                    rows.append(one_run(name, seed, budget, args, Path(tmp)))
                    r = rows[-1]
                    print(f"{name} seed {seed} x{budget}: ratio {r['ratio']:.2f} ({r['metric']} {r['value']:.4g}, "
                          f"floor {r['floor']:.4g}), NLL gap {_num(r.get('nll_gap_nats'))}, "
                          f"train {r['train_seconds']} s, measure {r['measure_seconds']} s", flush=True)
                write(rows, args, head)
    end = " ".join(f"{x:.2f}" for x in os.getloadavg())
    md = write(rows, args, head + f"; at the end {end}")
    print(md)


if __name__ == "__main__":
    main()

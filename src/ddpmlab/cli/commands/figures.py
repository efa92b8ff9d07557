"""``ddpmlab figures DIR [-n N] [--out DIR]``: figures of a finished run whose data have 2 or more features.

Points (the first two features): scatter.png (data beside samples), density.png (true density or data
histogram beside the samples' histogram) and reverse.gif (the reverse process). Images: samples.png
(a 10 x 10 grid) and reverse.gif.
"""
from __future__ import annotations

from ddpmlab.cli.arguments import SEED, count

HELP = "draw the figures of a finished run on 2-D (or wider) data or images: scatter, density, reverse.gif"


def add_arguments(p) -> None:
    from ddpmlab.cli.commands import add_trust_code

    add_trust_code(p)
    p.add_argument("run_dir", metavar="DIR", help="a finished run (ddpmlab train)")
    p.add_argument("-n", type=count(2), default=2000, help="samples to draw (default 2000)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed of the sampler and the data draw")
    p.add_argument("--out", default=None, help="output directory (default: the run directory; else new, empty, "
                   "or an earlier figures --out, whose files are replaced)")


def training_data(run, n: int, generator):
    """(data in data units, the true distribution or None) of a finished run: a file's rows (its
    features), a tensor run's kept rows, or draws of its distribution (named, or declared in its config)."""
    import torch

    from ddpmlab.data.base import load_file_rows
    from ddpmlab.evaluation.finished import heldout_split, run_data

    if run.cfg.data.name == "file":
        return load_file_rows(run.cfg.data)[0], None  # the features, without a label column
    kind, dist = run_data(run)
    if kind == "heldout":
        return torch.cat(heldout_split(run)), None  # every row: the training and the held-out ones
    return dist.sample(n, generator), dist


def run(args) -> int:
    import math
    import os
    from pathlib import Path

    import torch

    from ddpmlab.config.checks import sampling_bytes
    from ddpmlab.core.resources import check_memory
    from ddpmlab.runs.ownership import DirectoryClaim
    from ddpmlab.figures.plots2d import write_figures
    from ddpmlab.runs.format import load_run
    from ddpmlab.sampling.api import draw_samples
    from ddpmlab.core.utils import DDPMLabError

    run_ = load_run(args.run_dir, trust_code=args.trust_code)
    shape = tuple(run_.info["data"]["data_shape"])
    if len(shape) != 3 and math.prod(shape) < 2:
        raise DDPMLabError(f"{args.run_dir}: the data have one feature; the tutorial draws the 1-D figures")
    s = run_.cfg.sample
    n = args.n if len(shape) != 3 else min(args.n, 100)
    check_memory(sampling_bytes(run_.cfg, n, shape, s.steps or run_.cfg.schedule.steps), f"-n {args.n}",
                 "the samples and their trajectories")
    in_run = args.out is None or os.path.realpath(args.out) == os.path.realpath(args.run_dir)
    claim = (DirectoryClaim(args.run_dir, "train", accept=("train", "tutorial"), create=False,
                            command="ddpmlab figures") if in_run
             else DirectoryClaim(args.out, "figures", accept=(None, "figures")))
    with claim as out:
        g = torch.Generator().manual_seed(args.seed)
        data, dist = training_data(run_, args.n, g)
        traj = draw_samples(run_.model, n, s.sampler, s.steps, s.eta, g, keep_trajectory=True,
                            ode_solver=s.ode_solver, time_shift=s.time_shift, grid=s.grid)
        title = "".join(c if c.isprintable() else repr(c)[1:-1] for c in run_.info["data"]["name"])  # a path's tab
        names = write_figures(out, data, run_.to_data_units(traj), dist=dist, title=title)
    print(f"wrote {', '.join(names)} to {Path(out)}")
    return 0

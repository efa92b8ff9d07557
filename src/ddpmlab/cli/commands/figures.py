"""``ddpmlab figures DIR [-n N] [--out DIR]``: figures of a finished run whose data have 2 or more features.

Points (the first two features): scatter.png (data beside samples), density.png (true density or data
histogram beside the samples' histogram) and reverse.gif (the reverse process). Images: samples.png
(a 10 x 10 grid) and reverse.gif.
"""
from __future__ import annotations

HELP = "draw the figures of a finished run on 2-D (or wider) data or images: scatter, density, reverse.gif"


def add_arguments(p) -> None:
    from ddpmlab.cli.commands import add_trust_code

    add_trust_code(p)
    p.add_argument("run_dir", metavar="DIR", help="a finished run (ddpmlab train)")
    p.add_argument("-n", type=int, default=2000, help="samples to draw (default 2000)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampler and the data draw")
    p.add_argument("--out", default=None, help="output directory (default: the run directory)")


def training_data(run, n: int, generator):
    """(data in data units, the true distribution or None) of a finished run."""
    from ddpmlab.data.files import load_data_file
    from ddpmlab.data.named import NAMED
    from ddpmlab.core.utils import DDPMLabError

    d = run.cfg.data
    if d.name == "file":
        return load_data_file(d.path), None
    if d.name not in NAMED:
        raise DDPMLabError(f"unknown dataset {d.name!r} in the run's config")
    dist = NAMED[d.name]()
    return dist.sample(n, generator), dist


def run(args) -> int:
    import math
    from pathlib import Path

    import torch

    from ddpmlab.core.fileio import ensure_writable_dir
    from ddpmlab.figures.plots2d import write_figures
    from ddpmlab.runs.format import load_run
    from ddpmlab.sampling import draw_samples
    from ddpmlab.core.utils import DDPMLabError

    if args.n < 2:
        raise DDPMLabError(f"-n must be >= 2, got {args.n}")
    run_ = load_run(args.run_dir, trust_code=args.trust_code)
    shape = tuple(run_.info["data"]["data_shape"])
    if len(shape) != 3 and math.prod(shape) < 2:
        raise DDPMLabError(f"{args.run_dir}: the data have one feature; the tutorial draws the 1-D figures")
    out = ensure_writable_dir(args.out or args.run_dir)
    g = torch.Generator().manual_seed(args.seed)
    data, dist = training_data(run_, args.n, g)
    s = run_.cfg.sample
    traj = draw_samples(run_.model, args.n if len(shape) != 3 else min(args.n, 100), s.sampler, s.steps, s.eta, g,
                        keep_trajectory=True, ode_solver=s.ode_solver, time_shift=s.time_shift)
    names = write_figures(out, data, run_.to_data_units(traj), dist=dist, title=run_.info["data"]["name"])
    print(f"wrote {', '.join(names)} to {Path(out)}")
    return 0

"""``ddpmlab tutorial --out DIR [--recipe seed|recommended|both] [--seed S] [--iters N]``: the seed's system
end to end, then the recommended recipe and the exact reverse process beside it."""
from __future__ import annotations

from ddpmlab.cli.arguments import SEED, count

HELP = ("train the seed's recipe on its 1-D mixture (five figures, metrics, exact evaluation), then the "
        "recommended recipe, and show both beside the exact reverse process")


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="output directory (created if missing; new, empty, or an "
                   "earlier tutorial's, whose files are replaced)")
    p.add_argument("--recipe", choices=("seed", "recommended", "both"), default="both",
                   help="which recipes to train (default both: the seed's, then the recommended one)")
    p.add_argument("--seed", type=SEED, help="random seed of both recipes (data, initialisation, noise); default 0")
    p.add_argument("--iters", type=int,
                   help="training iterations of both recipes (default 1000 for the seed's, 2000 for the recommended)")
    p.add_argument("--samples", type=count(-2 ** 63), help="generated samples of both recipes (default 10000)")
    p.add_argument("--threads", type=count(0), help="torch intra-op threads (default 0: chosen from the work's size)")
    p.add_argument("--beta", type=float, help="the seed's recipe: constant noise level beta in (0, 1) (default 0.02)")
    p.add_argument("--steps", type=count(-2 ** 63), help="the seed's recipe: diffusion steps T (default 250)")
    p.add_argument("--hidden", type=count(-2 ** 63), help="the seed's recipe: hidden width of both networks (default 4)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any value of the seed's recipe (the tutorial config; repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


FLAGS = {"seed": "train.seed", "iters": "train.iters", "beta": "schedule.beta", "steps": "schedule.steps",
         "hidden": "model.hidden", "samples": "sample.n", "threads": "train.threads"}
BOTH = ("seed", "iters", "samples", "threads")  # flags that set the recommended recipe too


def run(args) -> int:
    from ddpmlab.config.schema import load_config
    from ddpmlab.core.utils import DDPMLabError
    from ddpmlab.evaluation.exact import format_table
    from ddpmlab.models.registry import is_target
    from ddpmlab.runs.ownership import DirectoryClaim
    from ddpmlab.workflows.tutorial import pointer_lines, run_tutorial
    from ddpmlab.workflows.tutorial_summary import summary_lines, verdict_lines

    given = {flag: key for flag, key in FLAGS.items() if getattr(args, flag) is not None}
    overrides = [f"{key}={getattr(args, flag)!r}" for flag, key in given.items()] + args.set
    recommended = [f"{key}={getattr(args, flag)!r}" for flag, key in given.items() if flag in BOTH]
    cfg = load_config("tutorial", overrides)  # a bad value is refused before the directory is touched
    if is_target(cfg.model.arch):  # the tutorial imports no module of yours (it has no --trust-code)
        raise DDPMLabError(f"model.arch = {cfg.model.arch!r} names a network class of your own; the tutorial "
                           "trains ddpmlab's networks only (train yours with ddpmlab train --trust-code)")
    load_config("default", recommended)
    with DirectoryClaim(args.out, "tutorial", accept=(None, "tutorial")):
        r = run_tutorial(args.out, overrides, progress=not args.no_progress, recipe=args.recipe,
                         recommended_overrides=recommended)
    if r["seed"] is not None:
        for line in summary_lines(r["seed"]):
            print(line)
        print(format_table(r["seed"]["evaluation"]))
    print()
    for line in verdict_lines(r["seed"], r["recommended"]):
        print(line)
    print()
    for line in pointer_lines(r):
        print(line)
    return 0

"""``ddpmlab tutorial --out DIR [--seed S] [--iters N]``: the seed's system end to end."""
from __future__ import annotations

from ddpmlab.cli.arguments import SEED, count

HELP = "train the seed's recipe on its 1-D mixture, sample, write five figures, metrics and evaluation"


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="output directory (created if missing; new, empty, or an "
                   "earlier tutorial's, whose files are replaced)")
    p.add_argument("--seed", type=SEED, help="random seed (data, initialisation, noise); default 0")
    p.add_argument("--iters", type=int, help="training iterations (default 1000)")
    p.add_argument("--beta", type=float, help="constant noise level beta in (0, 1) (default 0.02)")
    p.add_argument("--steps", type=count(-2 ** 63), help="diffusion steps T (default 250)")
    p.add_argument("--hidden", type=count(-2 ** 63), help="hidden width of both networks (default 4)")
    p.add_argument("--samples", type=count(-2 ** 63), help="number of generated samples (default 10000)")
    p.add_argument("--threads", type=count(0), help="torch intra-op threads (default 0: chosen from the work's size)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override any value of the tutorial config (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


FLAGS = {"seed": "train.seed", "iters": "train.iters", "beta": "schedule.beta", "steps": "schedule.steps",
         "hidden": "model.hidden", "samples": "sample.n", "threads": "train.threads"}


def run(args) -> int:
    from ddpmlab.config import load_config
    from ddpmlab.evaluation.report import format_table
    from ddpmlab.runs.ownership import DirectoryClaim
    from ddpmlab.workflows.tutorial import run_tutorial, summary_lines

    overrides = [f"{key}={getattr(args, flag)!r}" for flag, key in FLAGS.items() if getattr(args, flag) is not None]
    overrides += args.set
    load_config("tutorial", overrides)  # a bad value is refused before the directory is touched
    with DirectoryClaim(args.out, "tutorial", accept=(None, "tutorial")):
        m = run_tutorial(args.out, overrides, progress=not args.no_progress)
    for line in summary_lines(m):
        print(line)
    print(format_table(m["evaluation"]))
    print(f"figures, metrics.json and evaluation.json written to {args.out}")
    return 0

"""``ddpmlab tutorial --out DIR [--seed S] [--iters N]``: the seed's system end to end."""
from __future__ import annotations

HELP = "train the seed's recipe on its 1-D mixture, sample, write five figures and metrics.json"


def add_arguments(p) -> None:
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--seed", type=int, default=0, help="random seed (data, initialisation, noise)")
    p.add_argument("--iters", type=int, default=1000, help="training iterations (default 1000)")
    p.add_argument("--beta", type=float, default=0.02, help="constant noise level beta in (0, 1)")
    p.add_argument("--steps", type=int, default=250, help="diffusion steps T")
    p.add_argument("--hidden", type=int, default=4, help="hidden width of both networks")
    p.add_argument("--samples", type=int, default=10_000, help="number of generated samples")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args) -> int:
    from ddpmlab.tutorial import run_tutorial, summary_lines

    m = run_tutorial(args.out, seed=args.seed, iters=args.iters, beta=args.beta, num_steps=args.steps,
                     hidden=args.hidden, n_samples=args.samples, progress=not args.no_progress)
    for line in summary_lines(m):
        print(line)
    print(f"figures and metrics.json written to {args.out}")
    return 0

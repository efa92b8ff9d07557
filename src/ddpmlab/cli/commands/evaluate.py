"""``ddpmlab evaluate DIR``: exact evaluation of a finished run against the best possible, in nats."""
from __future__ import annotations

from ddpmlab.cli.arguments import SEED, count

HELP = ("evaluate a finished run: its bound, the exact oracle's bound, the data's entropy, the ODE "
        "likelihood and sample metrics with their floors; writes DIR/evaluation.json")


def add_arguments(p) -> None:
    from ddpmlab.cli.commands import add_trust_code

    add_trust_code(p)
    p.add_argument("dir", metavar="DIR", help="a finished run (run.json and model.safetensors)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed of the evaluation's draws")
    p.add_argument("--n-bound", type=count(1), default=10_000, help="data points for each bound (default 10000)")
    p.add_argument("--n-ode", type=count(1), default=256, help="data points for the ODE likelihood (default 256)")
    p.add_argument("--samples", type=count(2), default=10_000, help="ancestral samples for sample metrics")
    p.add_argument("--threads", type=count(0), default=0,
                   help="torch intra-op threads (default 0: chosen from the work's size)")


def run(args) -> int:
    from pathlib import Path

    import torch

    from ddpmlab.evaluation.report import evaluate_run, format_table
    from ddpmlab.config.checks import sampling_bytes
    from ddpmlab.core.fileio import atomic_write_json
    from ddpmlab.core.resources import check_memory
    from ddpmlab.runs.ownership import DirectoryClaim
    from ddpmlab.runs.format import load_run
    from ddpmlab.core.utils import DDPMLabError
    from ddpmlab.workflows.threads import model_threads

    if args.threads < 0:
        raise DDPMLabError(f"--threads must be >= 0, got {args.threads}")
    run = load_run(args.dir, trust_code=args.trust_code)
    model, dist, info = run.model, run.dist, run.info
    if dist is None:
        raise DDPMLabError(f"{args.dir}: the run's data distribution is unknown; exact evaluation needs "
                           "a Gaussian mixture")
    if "scale" in info.get("data", {}):
        raise DDPMLabError(f"{args.dir}: the run's data were standardised; exact evaluation needs the model "
                           "in data units")
    shape = tuple(info["data"]["data_shape"])
    for flag, n, steps in (("--n-bound", args.n_bound, 2), ("--n-ode", args.n_ode, 2), ("--samples", args.samples, 0)):
        check_memory(sampling_bytes(run.cfg, n, shape, steps), f"{flag} {n}", "the evaluation's draws")
    with DirectoryClaim(args.dir, "train", accept=("train", "tutorial"), create=False, command="ddpmlab evaluate"):
        with model_threads(args.threads, model, max(args.n_bound, args.samples)):
            ev = evaluate_run(model, dist, torch.Generator().manual_seed(args.seed), n_bound=args.n_bound,
                              n_ode=args.n_ode, n_samples=args.samples)
        atomic_write_json(Path(args.dir) / "evaluation.json", ev)
    print(format_table(ev))
    print(f"evaluation.json written to {args.dir}")
    return 0

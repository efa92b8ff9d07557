"""``ddpmlab evaluate DIR``: evaluate a finished run against the best possible, whatever its data."""
from __future__ import annotations

HELP = ("evaluate a finished run, every metric beside its floor: on mixture data the bound, the exact "
        "oracle's bound, the data's entropy, the ODE likelihood and sample metrics; on 2-D sets sliced W1, "
        "MMD and the exact NLL where known; on digits the Frechet distance; on your own file the rows held "
        "out at training time; writes DIR/evaluation.json")


def add_arguments(p) -> None:
    p.add_argument("dir", metavar="DIR", help="a finished run (run.json and model.safetensors)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the evaluation's draws")
    p.add_argument("--n-bound", type=int, default=10_000, help="data points for each bound (mixtures; default 10000)")
    p.add_argument("--n-ode", type=int, default=256,
                   help="data points for the ODE likelihood (default 256; 0 skips it)")
    p.add_argument("--samples", type=int, default=None, help="samples for the sample metrics (default 10000; "
                   "digits: as many as training images; a file: as many as training rows, at most 10000)")


def run(args) -> int:
    from pathlib import Path

    import torch

    from ddpmlab.core.fileio import atomic_write_json, ensure_writable_dir
    from ddpmlab.evaluation.finished import evaluate_finished_run
    from ddpmlab.evaluation.report import format_table
    from ddpmlab.evaluation.summary import format_rows
    from ddpmlab.runs.format import load_run
    from ddpmlab.core.utils import DDPMLabError

    run = load_run(args.dir)
    out = ensure_writable_dir(args.dir)
    try:
        ev = evaluate_finished_run(run, torch.Generator().manual_seed(args.seed), n_bound=args.n_bound,
                                   n_ode=args.n_ode, n_samples=args.samples)
    except DDPMLabError as exc:
        raise DDPMLabError(f"{args.dir}: {exc}") from None
    atomic_write_json(Path(out) / "evaluation.json", ev)
    print(format_table(ev) if ev["kind"] == "mixture" else format_rows(ev))
    print(f"evaluation.json written to {args.dir}")
    return 0

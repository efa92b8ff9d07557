"""``ddpmlab evaluate DIR``: exact evaluation of a finished run against the best possible, in nats."""
from __future__ import annotations

HELP = ("evaluate a finished run: its bound, the exact oracle's bound, the data's entropy, the ODE "
        "likelihood and sample metrics with their floors; writes DIR/evaluation.json")


def add_arguments(p) -> None:
    from ddpmlab.cli.commands import add_trust_code

    add_trust_code(p)
    p.add_argument("dir", metavar="DIR", help="a finished run (run.json and model.safetensors)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the evaluation's draws")
    p.add_argument("--n-bound", type=int, default=10_000, help="data points for each bound (default 10000)")
    p.add_argument("--n-ode", type=int, default=256, help="data points for the ODE likelihood (default 256)")
    p.add_argument("--samples", type=int, default=10_000, help="samples for sample metrics (ancestral; a flow run's by its ODE)")


def run(args) -> int:
    from pathlib import Path

    import torch

    from ddpmlab.evaluation.report import evaluate_run, format_table
    from ddpmlab.evaluation.report_flow import evaluate_flow_run, format_flow_table
    from ddpmlab.core.fileio import atomic_write_json, ensure_writable_dir
    from ddpmlab.runs.format import load_run
    from ddpmlab.core.utils import DDPMLabError

    run = load_run(args.dir, trust_code=args.trust_code)
    model, dist, info = run.model, run.dist, run.info
    if dist is None:
        raise DDPMLabError(f"{args.dir}: the run's data distribution is unknown; exact evaluation needs "
                           "a Gaussian mixture")
    if "scale" in info.get("data", {}):
        raise DDPMLabError(f"{args.dir}: the run's data were standardised; exact evaluation needs the model "
                           "in data units")
    out = ensure_writable_dir(args.dir)
    generator = torch.Generator().manual_seed(args.seed)
    if getattr(model, "family", "ddpm") == "flow":  # no bound: the ODE likelihood and ODE samples
        s = run.cfg.sample
        ev = evaluate_flow_run(model, dist, generator, n_ode=args.n_ode, n_samples=args.samples, steps=s.steps,
                               solver=s.ode_solver)
        table = format_flow_table(ev)
    else:
        ev = evaluate_run(model, dist, generator, n_bound=args.n_bound, n_ode=args.n_ode, n_samples=args.samples)
        table = format_table(ev)
    atomic_write_json(Path(out) / "evaluation.json", ev)
    print(table)
    print(f"evaluation.json written to {args.dir}")
    return 0

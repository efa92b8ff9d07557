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
    p.add_argument("--samples", type=int, default=10_000, help="ancestral samples for sample metrics")
    p.add_argument("--class", dest="classes", default=None, metavar="C[,C...]",
                   help="class-conditional run: per class, W1 to the true conditional of the model and of the "
                   "exact guided oracle, the floor, the exact posterior's accuracy (writes evaluation_classes.json and "
                   "classes.png)")
    p.add_argument("--guidance", default="0", metavar="W[,W...]", help="guidance weights for --class (default 0)")


def run(args) -> int:
    from pathlib import Path

    import torch

    from ddpmlab.evaluation.report import evaluate_run, format_table
    from ddpmlab.core.fileio import atomic_write_json, ensure_writable_dir
    from ddpmlab.runs.format import load_run
    from ddpmlab.core.utils import DDPMLabError

    run = load_run(args.dir, trust_code=args.trust_code)
    model, dist, info = run.model, run.dist, run.info
    if args.classes is not None and info.get("data", {}).get("name") == "digits":
        return _per_class(args, run, ensure_writable_dir(args.dir))  # the digit classifier's view
    if dist is None:
        raise DDPMLabError(f"{args.dir}: the run's data distribution is unknown; exact evaluation needs "
                           "a Gaussian mixture")
    if "scale" in info.get("data", {}):
        raise DDPMLabError(f"{args.dir}: the run's data were standardised; exact evaluation needs the model "
                           "in data units")
    out = ensure_writable_dir(args.dir)
    if args.classes is not None:
        return _per_class(args, run, out)
    ev = evaluate_run(model, dist, torch.Generator().manual_seed(args.seed), n_bound=args.n_bound,
                      n_ode=args.n_ode, n_samples=args.samples)
    atomic_write_json(Path(out) / "evaluation.json", ev)
    print(format_table(ev))
    print(f"evaluation.json written to {args.dir}")
    return 0


def _per_class(args, run, out) -> int:
    from pathlib import Path

    import torch

    from ddpmlab.core.fileio import atomic_write_json
    from ddpmlab.core.utils import DDPMLabError
    from ddpmlab.evaluation.guidance import format_classes
    from ddpmlab.workflows.conditional import evaluate_run_classes, resolve_classes

    try:
        weights = [float(w) for w in str(args.guidance).split(",")]
    except ValueError:
        raise DDPMLabError(f"--guidance expects weights like 0,1,3, got {args.guidance!r}") from None
    classes = resolve_classes(args.classes, run)
    ev = evaluate_run_classes(run, classes, weights, args.samples, torch.Generator().manual_seed(args.seed),
                              figure=Path(out) / "classes.png")
    atomic_write_json(Path(out) / "evaluation_classes.json",
                      {str(w): {str(c): r for c, r in rep.items()} for w, rep in ev.items()})
    print("\n".join(format_classes(rep, w) for w, rep in ev.items()))
    print(f"evaluation_classes.json and classes.png written to {args.dir}")
    return 0

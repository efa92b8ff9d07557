"""``ddpmlab evaluate DIR``: evaluate a finished run against the best possible, whatever its data."""
from __future__ import annotations

from ddpmlab.cli.arguments import SEED, count

HELP = ("evaluate a finished run, every metric beside its floor: on mixture data the bound, the exact "
        "oracle's bound, the data's entropy, the ODE likelihood and sample metrics; on 2-D sets sliced W1, "
        "MMD and the exact NLL where known; on digits the Frechet distance; on your own file the rows held "
        "out at training time; writes DIR/evaluation.json")


def add_arguments(p) -> None:
    from ddpmlab.cli.commands import add_trust_code

    add_trust_code(p)
    p.add_argument("dir", metavar="DIR", help="a finished run (run.json and model.safetensors)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed of the evaluation's draws")
    p.add_argument("--n-bound", type=count(1), default=10_000,
                   help="data points for each bound (mixtures; default 10000)")
    p.add_argument("--n-ode", type=count(0), default=256,
                   help="data points for the ODE likelihood (default 256; 0 skips it)")
    p.add_argument("--samples", type=count(2), default=None, help="samples for the sample metrics (default 10000; "
                   "digits: as many as training images; a file: as many as training rows, at most 10000)")
    p.add_argument("--threads", type=count(0), default=0,
                   help="torch intra-op threads (default 0: chosen from the work's size)")
    p.add_argument("--class", dest="classes", default=None, metavar="C[,C...]",
                   help="class-conditional run: per class, W1 to the true conditional of the model and of the "
                   "exact guided oracle, the floor, the exact posterior's accuracy (writes evaluation_classes.json and "
                   "classes.png)")
    p.add_argument("--guidance", default="0", metavar="W[,W...]", help="guidance weights for --class (default 0)")
    p.add_argument("--guidance-method", default="cfg", metavar="METHOD",
                   help="with --class: cfg (default), interval, autoguidance (needs --guide-with) or cfg++ (ddim or "
                   "ancestral sampler; its weight is the paper's lambda); each row also gives the W1 to the tilted "
                   "target p(x|c)^g p(x)^(1-g), g = 1 + w (cfg++: g = w), for the model and the exact scores")
    p.add_argument("--guidance-interval", default=None, metavar="LO,HI",
                   help="noise levels sigma = sigma(t)/alpha(t) where --guidance-method interval guides "
                   "(default 0.28,5.42, Kynkaanniemi et al. 2024)")
    p.add_argument("--guide-with", default=None, metavar="RUN",
                   help="--guidance-method autoguidance: a weaker run of the same family and data to guide with")
    p.add_argument("--sampler", default=None, help="with --class: the sampler (default the run's sample.sampler)")


def run(args) -> int:
    from pathlib import Path

    import torch

    from ddpmlab.config.checks import sampling_bytes
    from ddpmlab.core.fileio import atomic_write_json
    from ddpmlab.core.resources import check_memory
    from ddpmlab.evaluation.finished import evaluate_finished_run
    from ddpmlab.evaluation.range_check import warn_out_of_range
    from ddpmlab.evaluation.exact import format_table
    from ddpmlab.evaluation.summary import format_rows
    from ddpmlab.runs.ownership import DirectoryClaim
    from ddpmlab.runs.format import load_run
    from ddpmlab.core.utils import DDPMLabError
    from ddpmlab.workflows.threads import model_threads

    run = load_run(args.dir, trust_code=args.trust_code)
    if args.classes is not None:  # per class, with guidance: the exact conditional oracle's view
        info = run.info.get("data", {})
        if info.get("name") != "digits" and run.dist is None:
            raise DDPMLabError(f"{args.dir}: the run's data distribution is unknown; per-class evaluation needs "
                               "a Gaussian mixture (or digits)")
        if info.get("name") != "digits" and "scale" in info:
            raise DDPMLabError(f"{args.dir}: the run's data were standardised; per-class evaluation needs the "
                               "model in data units")
        with DirectoryClaim(args.dir, "train", accept=("train", "tutorial"), create=False,
                            command="ddpmlab evaluate"):
            return _per_class(args, run, Path(args.dir))
    shape = tuple(run.info["data"]["data_shape"])
    for flag, n, steps in (("--n-bound", args.n_bound, 2), ("--n-ode", args.n_ode, 2),
                           ("--samples", args.samples or 10_000, 0)):
        check_memory(sampling_bytes(run.cfg, n, shape, steps), f"{flag} {n}", "the evaluation's draws")
    with DirectoryClaim(args.dir, "train", accept=("train", "tutorial"), create=False, command="ddpmlab evaluate"):
        try:
            with model_threads(args.threads, run.model, max(args.n_bound, args.samples or 10_000)):
                ev = evaluate_finished_run(run, torch.Generator().manual_seed(args.seed), n_bound=args.n_bound,
                                           n_ode=args.n_ode, n_samples=args.samples, threads=None)
                table = format_table(ev) if ev["kind"] == "mixture" else format_rows(ev)
        except DDPMLabError as exc:
            raise DDPMLabError(f"{args.dir}: {exc}") from None
        atomic_write_json(Path(args.dir) / "evaluation.json", ev)
    warn_out_of_range(ev.get("samples_out_of_range"), "evaluation samples")
    print(table)
    print(f"evaluation.json written to {args.dir}")
    return 0


def _per_class(args, run, out) -> int:
    from pathlib import Path

    import torch

    from ddpmlab.core.fileio import atomic_write_json
    from ddpmlab.core.utils import DDPMLabError
    from ddpmlab.evaluation.guidance import format_classes
    from ddpmlab.models.guidance import check_guidance_weight
    from ddpmlab.workflows.conditional import evaluate_run_classes, resolve_classes

    try:
        weights = [float(w) for w in str(args.guidance).split(",")]
    except ValueError:
        raise DDPMLabError(f"--guidance expects weights like 0,1,3, got {args.guidance!r}") from None
    weights = [check_guidance_weight(w) for w in weights]  # all of them, before any is evaluated
    classes = resolve_classes(args.classes, run)
    method, interval, weak = _method_options(args, run)
    ev = evaluate_run_classes(run, classes, weights, args.samples or 10_000, torch.Generator().manual_seed(args.seed),
                              sampler=args.sampler, figure=Path(out) / "classes.png", method=method,
                              interval=interval, weak=weak)
    atomic_write_json(Path(out) / "evaluation_classes.json",
                      {str(w): {str(c): r for c, r in rep.items()} for w, rep in ev.items()})
    print("\n".join(format_classes(rep, w) for w, rep in ev.items()))
    print(f"evaluation_classes.json and classes.png written to {args.dir}")
    return 0



def _method_options(args, run):
    """(the guidance method's registered name, its interval or None, the run to guide with or None), each
    checked before any sample is drawn (the sampler the method serves: ``evaluate_classes``)."""
    from ddpmlab.core.utils import DDPMLabError
    from ddpmlab.models.guidance import check_interval
    from ddpmlab.models.guidance_methods import method_named
    from ddpmlab.runs.format import load_run

    name, _ = method_named(args.guidance_method)
    interval = None
    if args.guidance_interval is not None:
        if name != "interval":
            raise DDPMLabError("--guidance-interval goes with --guidance-method interval")
        interval = check_interval(str(args.guidance_interval).split(","))
    if (args.guide_with is None) != (name != "autoguidance"):
        raise DDPMLabError("--guide-with RUN goes with --guidance-method autoguidance, and it needs one")
    weak = None if args.guide_with is None else load_run(args.guide_with, trust_code=args.trust_code)
    return name, interval, weak

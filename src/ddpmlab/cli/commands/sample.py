"""``ddpmlab sample DIR -n N [--sampler ancestral|ddim|ode] [--steps K] [--grid G] [--ode-solver S] [--time-shift K]
[--class C[,C...] [--guidance W]] --out FILE.npy``.

The flags go through the run's config validation (``--eta nan`` is refused with the config's message),
the memory the draw needs is checked first, an existing ``--out`` is replaced only with ``--force``, and
samples holding NaN or infinity are never written (exit 3). A refused or failed command leaves nothing
behind, not even the directories it created for ``--out``.
"""
from __future__ import annotations

from ddpmlab.cli.arguments import SEED, count

HELP = "draw samples from a trained run into a .npy file (in data units)"


def add_arguments(p) -> None:
    from ddpmlab.cli.commands import add_trust_code

    # Names are checked against the registries by the run's config validation after parsing (the message
    # lists them): --help never waits for torch, and a sampler registered by your own code is accepted.
    p.add_argument("run_dir", metavar="DIR", help="a finished run (ddpmlab train / tutorial)")
    p.add_argument("-n", type=count(1), default=1000, help="number of samples")
    p.add_argument("--sampler", metavar="NAME", default=None,
                   help="a registered sampler, dl.SAMPLERS, or your function as package.module:name (with "
                   "--trust-code) (default: the run's sample.sampler)")
    p.add_argument("--steps", type=count(0), default=None, help="sampling steps (default: the run's, 0 = all T)")
    p.add_argument("--grid", metavar="NAME", default=None,
                   help="a registered time grid of the steps, dl.TIME_GRIDS (default: the run's sample.grid)")
    p.add_argument("--eta", type=float, default=None, help="DDIM eta in [0, 1] (default: the run's)")
    p.add_argument("--ode-solver", metavar="NAME", default=None,
                   help="a registered solver of --sampler ode, dl.ODE_SOLVERS (default: the run's sample.ode_solver)")
    p.add_argument("--time-shift", type=float, default=None,
                   help="flow runs: shift of the ODE's time grid, 0.01 to 100 (default: the run's "
                   "sample.time_shift)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed of the sampler")
    p.add_argument("--class", dest="classes", default=None, metavar="C[,C...]",
                   help="class-conditional run: -n samples of each class, in this order (indices or the "
                   "label values the run recorded)")
    p.add_argument("--guidance", type=float, default=0.0, metavar="W",
                   help="classifier-free guidance weight w in [0, 100] with --class (0: the plain conditional "
                   "model)")
    p.add_argument("--out", required=True, help="output .npy file")
    add_trust_code(p)
    p.add_argument("--threads", type=count(0), default=0,
                   help="torch intra-op threads (default 0: chosen from the work's size)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


# (attribute, option, [sample] key)
FLAGS = (("n", "-n", "n"), ("sampler", "--sampler", "sampler"), ("steps", "--steps", "steps"), ("eta", "--eta", "eta"),
         ("ode_solver", "--ode-solver", "ode_solver"), ("time_shift", "--time-shift", "time_shift"),
         ("grid", "--grid", "grid"))


def sample_config(run_cfg, args):
    """The run's ``[sample]`` section with the flags given, validated together as the config validates it
    (``--grid karras --time-shift 1`` on a run with a shift); a refusal names the first flag that the run's
    config refuses alone, else every flag given."""
    from ddpmlab.config.schema import from_dict
    from ddpmlab.core.utils import DDPMLabError

    given = [(option, key, getattr(args, flag)) for flag, option, key in FLAGS if getattr(args, flag) is not None]
    d = run_cfg.to_dict()
    for _, key, value in given:
        d["sample"][key] = value
    try:
        return from_dict(d, args.trust_code)  # --sampler may name your function (package.module:name)
    except DDPMLabError as exc:
        for option, key, value in given:
            alone = run_cfg.to_dict()
            alone["sample"][key] = value
            try:
                from_dict(alone, args.trust_code)
            except DDPMLabError as own:
                raise DDPMLabError(f"{option} {value}: {own}") from None
        raise DDPMLabError(f"{' '.join(f'{o} {v}' for o, _, v in given)}: {exc}") from None


def check_out(out, force: bool) -> None:
    from ddpmlab.core.fileio import check_output_file
    from ddpmlab.core.utils import DDPMLabError

    if not out.name.endswith(".npy"):
        raise DDPMLabError(f"--out must name a .npy file, got {str(out)!r}")
    check_output_file(out, force)


def run(args) -> int:
    import math
    from pathlib import Path

    from ddpmlab.config.schema import from_dict
    from ddpmlab.config.checks import sampling_bytes
    from ddpmlab.core.resources import check_memory
    from ddpmlab.runs.ownership import make_dirs, remove_dirs
    from ddpmlab.runs.run_info import read_run_info
    from ddpmlab.workflows.pipeline import sample_to_file

    out = Path(args.out)
    check_out(out, args.force)
    run_dir = Path(args.run_dir)
    info = read_run_info(run_dir / "run.json") if (run_dir / "run.json").is_file() else None
    if info is not None:  # a missing run is sample_to_file's one line
        cfg = sample_config(from_dict(info["config"], args.trust_code), args)
        shape = tuple(info["data"]["data_shape"])
        check_memory(sampling_bytes(cfg, args.n, shape) + 4 * args.n * math.prod(shape) * 3,
                     f"-n {args.n}", f"{args.n} samples of shape {shape}")
    created = make_dirs(out.parent) if str(out.parent) else []
    try:
        shape = sample_to_file(run_dir, args.n, out, sampler=args.sampler, steps=args.steps, eta=args.eta,
                               seed=args.seed, ode_solver=args.ode_solver, trust_code=args.trust_code,
                               threads=args.threads, classes=args.classes, guidance=args.guidance,
                               time_shift=args.time_shift, grid=args.grid)
    except BaseException:
        remove_dirs(created)
        raise
    per_class = f" ({args.n} per class {args.classes}, guidance {args.guidance:g})" if args.classes else ""
    print(f"wrote {shape[0]} samples of shape {shape[1:]} to {args.out}{per_class}")
    return 0

"""``ddpmlab sample DIR -n N [--sampler ancestral|ddim|ode] [--steps K] [--ode-solver S] [--time-shift K] --out FILE.npy``."""
from __future__ import annotations

HELP = "draw samples from a trained run into a .npy file (in data units)"


def add_arguments(p) -> None:
    from ddpmlab.cli.commands import add_trust_code

    from ddpmlab.sampling import ODE_SOLVERS, SAMPLERS

    p.add_argument("run_dir", metavar="DIR", help="a finished run (ddpmlab train / tutorial)")
    p.add_argument("-n", type=int, default=1000, help="number of samples")
    p.add_argument("--sampler", choices=SAMPLERS.names(), default=None,
                   help="default: the run's sample.sampler")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (default: the run's, 0 = all T)")
    p.add_argument("--eta", type=float, default=None, help="DDIM eta (default: the run's)")
    p.add_argument("--ode-solver", choices=ODE_SOLVERS.names(), default=None,
                   help="solver of --sampler ode (default: the run's sample.ode_solver)")
    p.add_argument("--time-shift", type=float, default=None,
                   help="flow runs: shift of the ODE's time grid (default: the run's sample.time_shift)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the sampler")
    p.add_argument("--out", required=True, help="output .npy file")
    add_trust_code(p)


def run(args) -> int:
    from pathlib import Path

    from ddpmlab.workflows.pipeline import sample_to_file
    from ddpmlab.core.utils import DDPMLabError

    if args.n < 1:
        raise DDPMLabError(f"-n must be >= 1, got {args.n}")
    if not args.out.endswith(".npy"):
        raise DDPMLabError(f"--out must name a .npy file, got {args.out!r}")
    shape = sample_to_file(Path(args.run_dir), args.n, Path(args.out), sampler=args.sampler, steps=args.steps,
                           eta=args.eta, seed=args.seed,
                           ode_solver=args.ode_solver, trust_code=args.trust_code, time_shift=args.time_shift)
    print(f"wrote {args.n} samples of shape {shape[1:]} to {args.out}")
    return 0

"""``ddpmlab logprob DIR --data FILE --out FILE.npy [--method ode|bound] [--divergence D] [--seed S]``.

Writes log p(x) of each example of FILE (.csv, .npy or .npz, read as training reads a file) under the run's
model, in nats per example in the units of the data (``dl.log_prob`` on the run: the probability-flow ODE
likelihood, or minus the variational bound), as a float64 array (N,), and prints one line: the mean
+- its standard error, and beside it the exact mean log q(x) and the paired difference where the run's
data distribution is known in closed form (the seed's mixture, any Gaussian mixture, the checkerboard).
A file whose examples do not have the run's shape, or that holds NaN, is refused in one line before any
work; an existing --out is replaced only with --force; a result that is not finite is never written (exit 3).
"""
from __future__ import annotations

from ddpmlab.cli.arguments import SEED, count

HELP = ("log p(x) of each example of a data file under a finished run, in nats per example in data units "
        "(probability-flow ODE likelihood, or the variational bound), beside the exact log q(x) where known; "
        "writes a .npy file")


def add_arguments(p) -> None:
    from ddpmlab.cli.commands import add_trust_code

    p.add_argument("run_dir", metavar="DIR", help="a finished run (ddpmlab train / tutorial)")
    p.add_argument("--data", required=True, metavar="FILE",
                   help="the examples: .csv (rows), .npy or .npz (N, *dims), in the units of the run's data")
    p.add_argument("--out", required=True, help="output .npy file: log p(x), float64 (N,), nats per example")
    p.add_argument("--method", choices=("ode", "bound"), default="ode",
                   help="ode: the probability-flow ODE likelihood (any run; default); bound: minus the variational "
                   "bound, a lower bound on log p(x) of the DDPM's ancestral chain")
    p.add_argument("--divergence", choices=("auto", "exact", "hutchinson"), default="auto",
                   help="ode: the divergence, exact (one backward pass per dimension) or Hutchinson's estimate "
                   "(auto: exact up to 16 dimensions)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed of Hutchinson's probes and the bound's draws")
    add_trust_code(p)
    p.add_argument("--threads", type=count(0), default=0,
                   help="torch intra-op threads (default 0: chosen from the work's size)")
    p.add_argument("--force", action="store_true", help="replace --out if it exists")


def read_examples(path, data_shape: tuple):
    """The examples of ``path`` (N, *data_shape) float64, in data units; a file of another shape (other than
    in singleton axes, such as (N, 8, 8) for (1, 8, 8)) is one line."""
    import torch

    from ddpmlab.core.utils import DDPMLabError
    from ddpmlab.data.files import load_data_file

    x = load_data_file(path)  # missing, empty, non-numeric, NaN or infinite: one line naming the file
    got = tuple(x.shape[1:])
    if got != data_shape:
        if [d for d in got if d != 1] != [d for d in data_shape if d != 1]:
            raise DDPMLabError(f"{path}: examples of shape {got}, but the run's data have shape {data_shape}")
        x = x.reshape((x.shape[0],) + data_shape)
    return x.to(torch.float64)


def _mean_se(v) -> tuple[float, float]:
    return float(v.mean()), float(v.std() / v.numel() ** 0.5)


def summary(lp, exact, method: str, divergence: str, data_name: str) -> str:
    """One line: the mean of ``lp`` +- its SE, and beside it the exact mean log q(x) and the paired
    difference when ``exact`` (log q at the same points) is known."""
    what = "log p(x)" if method == "ode" else "-L (a lower bound on log p(x))"
    how = f"ODE, {divergence} divergence" if method == "ode" else "variational bound"
    mean, se = _mean_se(lp)
    line = f"{what}: mean {mean:.4f} +- {se:.4f} nats per example over {lp.numel()} (data units; {how})"
    if exact is not None:
        diff, diff_se = _mean_se(lp - exact)
        line += (f"; exact log q(x) of {data_name}: mean {float(exact.mean()):.4f}, difference "
                 f"{diff:.4f} +- {diff_se:.4f} (paired)")
    return line


def run(args) -> int:
    from pathlib import Path

    import torch

    from ddpmlab.cli.commands.sample import check_out
    from ddpmlab.core.fileio import atomic_write_npy
    from ddpmlab.core.utils import NonFiniteError
    from ddpmlab.evaluation.logprob import exact_log_prob, log_prob, resolve_divergence
    from ddpmlab.runs.format import load_run
    from ddpmlab.runs.ownership import make_dirs, remove_dirs
    from ddpmlab.workflows.threads import model_threads

    out = Path(args.out)
    check_out(out, args.force)
    run_ = load_run(args.run_dir, trust_code=args.trust_code)
    shape = tuple(run_.model.data_shape)
    x = read_examples(args.data, shape)
    divergence = resolve_divergence(args.divergence, shape)
    with model_threads(args.threads, run_.model, x.shape[0]):
        lp = log_prob(run_, x, method=args.method, divergence=divergence,
                      generator=torch.Generator().manual_seed(args.seed), threads=None)
    bad = int((~torch.isfinite(lp)).sum())
    if bad:
        raise NonFiniteError(f"log p(x) is NaN or infinite for {bad} of {lp.numel()} examples; nothing written")
    created = make_dirs(out.parent) if str(out.parent) else []
    try:
        atomic_write_npy(out, lp.numpy())
    except BaseException:
        remove_dirs(created)
        raise
    print(f"{summary(lp, exact_log_prob(run_, x), args.method, divergence, run_.info['data']['name'])}; "
          f"written to {args.out}")
    return 0

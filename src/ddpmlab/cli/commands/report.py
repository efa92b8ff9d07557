"""``ddpmlab report RUN [RUN ...] --out report.html``: one self-contained interactive HTML page."""
from __future__ import annotations

from ddpmlab.cli.arguments import SEED, count, count_or_zero

HELP = ("one self-contained HTML report (opens offline) of a run, or a comparison of runs: config, training "
        "curve, samples beside data, every metric beside the oracle and the floor, where the nats are lost "
        "step by step, and a slider over t; runs that differ only in seed are grouped")


def add_arguments(p) -> None:
    from ddpmlab.cli.commands import add_trust_code

    p.add_argument("runs", nargs="+", metavar="RUN", help="finished run directories (ddpmlab train)")
    p.add_argument("--out", required=True, help="the HTML file to write")
    p.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    p.add_argument("--allow-mixed-data", action="store_true",
                   help="compare runs trained on different data (the page says so)")
    p.add_argument("--seed", type=SEED, default=0, help="random seed of the report's draws")
    p.add_argument("--n-bound", type=count(2), default=2000,
                   help="data points for each bound where a run has no evaluation.json (default 2000)")
    p.add_argument("--n-ode", type=count_or_zero(2), default=64,
                   help="data points for the ODE likelihood where a run has no evaluation.json (0 skips it)")
    p.add_argument("--samples", type=count(2), default=2000,
                   help="samples for the sample metrics where a run has no evaluation.json (default 2000; "
                   "digits: as many as training images)")
    add_trust_code(p)


def run(args) -> int:
    from ddpmlab.report.build import build_report
    from ddpmlab.report.collect import ReportSettings

    s = ReportSettings(seed=args.seed, n_bound=args.n_bound, n_ode=args.n_ode, n_samples=args.samples)
    r = build_report(args.runs, args.out, force=args.force, allow_mixed_data=args.allow_mixed_data, settings=s,
                     trust_code=args.trust_code)
    print(f"report of {r['runs']} run(s) in {r['groups']} group(s) written to {r['path']} "
          f"({r['bytes'] / 1e6:.1f} MB)")
    return 0

"""``ddpmlab sweep --config A [--config B] --seeds 0-4 [--grid section.key=v1,v2 ...] [--set ...] --jobs N
--out DIR [--evaluate] [--print-commands]``: a grid of trainings across cores, and its summary table.

Exit codes: 0 every job finished; 1 one or more jobs failed (each reported in one line with its log);
2 a user-facing error before anything ran; 130 interrupted (running jobs write a checkpoint, and
running the same sweep again continues them).
"""
from __future__ import annotations

import sys

HELP = ("train a grid of configs x --grid values x seeds, N jobs at once (one thread each), each an ordinary "
        "run directory; writes jobs.csv and a summary table (mean and spread over seeds) as Markdown and CSV")


def add_arguments(p) -> None:
    from ddpmlab.cli.commands import add_trust_code

    p.add_argument("--config", action="append", default=[], metavar="NAME|FILE",
                   help="a packaged config name or a TOML file (repeatable; default: default)")
    p.add_argument("--seeds", default=None, help="seeds, e.g. 0-4 or 0,2,7 (sets train.seed; default 0; or give "
                   "them as --grid train.seed=1,2, not both); at most 10000 jobs in all")
    p.add_argument("--grid", action="append", default=[], metavar="SECTION.KEY=V1,V2",
                   help="values to try for one config key (repeatable: every combination is run)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value in every job (repeatable)")
    p.add_argument("--jobs", type=int, default=0, help="jobs at once (default: the cores this process may use)")
    p.add_argument("--out", required=True, help="directory of the sweep (one run directory per job inside): new, "
                   "empty, or this sweep's own (to continue it); locked while the sweep runs")
    p.add_argument("--evaluate", action="store_true", help="also run `ddpmlab evaluate` on each run (Gaussian-"
                   "mixture data) and summarise its bound, ODE NLL and sample metrics")
    p.add_argument("--print-commands", action="store_true",
                   help="print each job's command line (for a cluster scheduler) and exit without running")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_trust_code(p)  # passed on to every job's train and evaluate, including the jobs it resumes


def run(args) -> int:
    from ddpmlab.core.fileio import check_replaceable
    from ddpmlab.core.utils import DDPMLabError
    from ddpmlab.runs.ownership import DirectoryClaim
    from ddpmlab.workflows.sweep import JOBS_FILE
    from ddpmlab.workflows.sweep_plan import command_line, only_planned_runs, parse_seeds, plan_sweep
    from ddpmlab.workflows.sweep_summary import SUMMARY_FILES

    if args.jobs < 0:
        raise DDPMLabError(f"--jobs must be >= 1 (or 0: one per usable core), got {args.jobs}")
    seeds = parse_seeds(args.seeds) if args.seeds is not None else None
    jobs = plan_sweep(args.config, args.grid, seeds, args.set, args.out, args.evaluate, args.trust_code, args.imports)
    if args.print_commands:
        for job in jobs:
            print(command_line(job))
        return 0
    with DirectoryClaim(args.out, "sweep", accept=(None, "sweep"), command="ddpmlab sweep",
                        adopt=lambda path: only_planned_runs(path, jobs)) as out:
        for path in [out / JOBS_FILE, *(out / name for name in SUMMARY_FILES), *(job.log for job in jobs)]:
            check_replaceable(path)  # a link or special file planted in the sweep: refused before any job runs
        return _run_jobs(args, jobs, out)


def _run_jobs(args, jobs, out) -> int:
    """Run the planned ``jobs`` in the claimed sweep directory ``out``; write its job table and summary."""
    from ddpmlab.core.threads import usable_cores
    from ddpmlab.workflows.sweep import SweepInterrupted, run_jobs, write_jobs_csv
    from ddpmlab.workflows.sweep_summary import write_summary

    workers = args.jobs or usable_cores()
    print(f"sweep: {len(jobs)} jobs, {min(workers, len(jobs))} at once with one thread each, under {out}",
          flush=True)
    code = 0
    try:
        results = run_jobs(jobs, workers, progress=not args.no_progress)
    except SweepInterrupted as exc:
        results, code = exc.results, 130
    write_jobs_csv(out, results)
    table, failed = write_summary(out, results, report=lambda line: print(line, file=sys.stderr))
    print(table, end="")
    print(f"summary.md, summary.csv and jobs.csv written to {out}")
    if code:
        print("ddpmlab sweep: interrupted; run the same command again to continue", file=sys.stderr)
        return code
    if failed:
        print(f"ddpmlab sweep: {failed} of {len(jobs)} jobs failed (see the lines above and jobs.csv)",
              file=sys.stderr)
        return 1
    return 0

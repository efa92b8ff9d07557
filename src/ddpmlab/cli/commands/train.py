"""``ddpmlab train --config FILE --out DIR [--set section.key=value ...] [--dry-run]``, or
``ddpmlab train --resume DIR`` to continue an interrupted run; also under ``torchrun ... -m ddpmlab train``.

Exit codes: 0 done; 2 a user-facing error (one line); 3 a non-finite loss (one line, the last good
checkpoint kept); 130 / 143 stopped by SIGINT / SIGTERM after writing a checkpoint.

A config naming your own network class (``package.module:Class``) imports its module only with
``--trust-code``, for a new run and ``--resume`` alike (a run directory may come from someone else); so do
its ``[plugins] modules``, ``--import MODULE`` (recorded there) and an objective or sampler named as
``package.module:name`` (``ddpmlab.config.plugins``).

The run directory is owned for the whole command (``ddpmlab.runs.ownership``): a second command writing
into it is refused, and a new run goes only into a new or empty directory (or one where an earlier
``train`` failed before its first checkpoint).
"""
from __future__ import annotations

import contextlib
import os
import sys

from ddpmlab.cli.arguments import count

HELP = "train a model from a TOML config (a file, or a packaged name: tutorial, default, ...)"
EXIT_NON_FINITE = 3


def add_arguments(p) -> None:
    from ddpmlab.cli.commands import add_trust_code

    p.add_argument("--config", default=None, help="TOML file or packaged config name (default: default)")
    p.add_argument("--out", help="run directory (created if missing; must be new or empty)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set train.iters=500")
    p.add_argument("--data", metavar="PATH", help="train on your own .csv / .npy / .npz file "
                   "(sets data.name = 'file' and data.path, stored as an absolute path)")
    p.add_argument("--label-column", metavar="NAME|INDEX", help="with --data: the column of class labels (a "
                   "header name or 0-based index; its values are mapped to classes and the mapping kept with the "
                   "run): trains a class-conditional network (sets data.label_column)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its newest intact checkpoint, "
                   "with the checkpoint's config (only train.iters, train.checkpoint_every, train.keep_checkpoints "
                   "and train.device may change)")
    p.add_argument("--checkpoint-every", type=count(0), metavar="N",
                   help="write a checkpoint every N steps (sets train.checkpoint_every; 0 = only at the end)")
    p.add_argument("--keep-checkpoints", type=count(1), metavar="K", help="keep the newest K checkpoints "
                   "(sets train.keep_checkpoints)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), help="where to train (sets train.device)")
    p.add_argument("--threads", type=int, metavar="N", help="torch intra-op threads (sets train.threads; "
                   "0 = chosen from the work's size and the usable cores)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_trust_code(p)


def _new_run_config(args, overrides):
    """The config of a new run: --config and --set, then --data set on the dataclass itself (a path is
    never written into TOML text), and a file's path made absolute so the run works from anywhere."""
    from ddpmlab.config.schema import load_config
    from ddpmlab.config.validation import validate
    from ddpmlab.core.utils import DDPMLabError

    if args.data is not None and not args.data.strip():
        raise DDPMLabError("--data is empty; name a .csv, .npy or .npz file")
    cfg = load_config(args.config or "default", overrides, trust_code=args.trust_code)
    cfg.plugins.modules = list(dict.fromkeys([*cfg.plugins.modules, *args.imports]))  # recorded in the run
    if args.data is not None:
        cfg.data.name, cfg.data.path = "file", args.data
    if args.label_column is not None:
        if args.data is None:
            raise DDPMLabError("--label-column names a column of your --data file; give --data PATH")
        cfg.data.label_column = str(args.label_column)
    if cfg.data.name == "file" and cfg.data.path:
        cfg.data.path = os.path.abspath(cfg.data.path)
    validate(cfg)
    return cfg


def run(args) -> int:
    from ddpmlab.config.toml_writer import to_toml
    from ddpmlab.core.utils import DDPMLabError
    from ddpmlab.runs.ownership import DirectoryClaim
    from ddpmlab.runs.resume import resumable_checkpoint, resume_config
    from ddpmlab.training.distributed import torchrun_env
    from ddpmlab.training.signals import NonFiniteLoss, TrainingInterrupted
    from ddpmlab.workflows.pipeline import train_run

    env = torchrun_env()  # a malformed torchrun launch is refused before anything is written
    main = env is None or env.rank == 0  # under torchrun only rank 0 writes and reports
    overrides = list(args.set)
    if args.checkpoint_every is not None:
        overrides.append(f"train.checkpoint_every={args.checkpoint_every}")
    if args.keep_checkpoints is not None:
        overrides.append(f"train.keep_checkpoints={args.keep_checkpoints}")
    if args.device is not None:
        overrides.append(f"train.device={args.device!r}")
    if args.threads is not None:
        overrides.append(f"train.threads={args.threads}")
    if args.resume:
        if args.config or args.data is not None or args.label_column is not None:
            raise DDPMLabError("--resume continues with the checkpoint's config; drop --config / --data "
                               "(to train longer: --set train.iters=N)")
        if args.out and os.path.realpath(args.out) != os.path.realpath(args.resume):
            raise DDPMLabError("--resume DIR continues the run in DIR; --out, if given, must be the same directory")
        out = args.resume
    else:
        cfg = _new_run_config(args, overrides)
        out = args.out
    if args.dry_run:
        if args.resume:
            cfg = resume_config(args.resume, overrides, trust_code=args.trust_code)
        print(to_toml(cfg), end="")
        return 0
    if not out:
        raise DDPMLabError("--out DIR is required (or --resume DIR, or --dry-run)")
    claim = (DirectoryClaim(out, "train", accept=("train",), create=False, command="ddpmlab train --resume")
             if args.resume else DirectoryClaim(out, "train", accept=(None, "train")))
    with claim if main else contextlib.nullcontext():
        if args.resume:
            cfg = resume_config(out, overrides, resumable_checkpoint(out, args.trust_code)[0], args.trust_code)
        try:
            summary = train_run(cfg, out, progress=not args.no_progress, resume=bool(args.resume),
                                trust_code=args.trust_code)
        except TrainingInterrupted as exc:
            if main:
                print(f"ddpmlab train: {exc}", file=sys.stderr)
            return exc.exit_code
        except NonFiniteLoss as exc:
            if main:
                print(f"ddpmlab train: error: {exc}", file=sys.stderr)
            return EXIT_NON_FINITE
    if main:
        loss = "n/a (no step)" if summary["final_loss"] is None else f"{summary['final_loss']:.5g}"
        print(f"trained {summary['iters']} steps in {summary['train_seconds']:.2f} s; final loss {loss}; "
              f"run written to {out}")
        _print_quality(out, summary["iters"], args.trust_code)
    return 0


def _print_quality(out, iters: int, trust_code: bool) -> None:
    """The post-training line: the samples' distance to unseen data beside a true sample's
    (``ddpmlab.evaluation.quality``)."""
    from ddpmlab.evaluation.quality import quality_line, run_quality
    from ddpmlab.runs.format import load_run

    print(quality_line(run_quality(load_run(out, trust_code=trust_code)), iters))

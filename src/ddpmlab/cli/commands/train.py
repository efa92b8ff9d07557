"""``ddpmlab train --config FILE --out DIR [--set section.key=value ...] [--dry-run]``, or
``ddpmlab train --resume DIR`` to continue an interrupted run; also under ``torchrun ... -m ddpmlab train``.

Exit codes: 0 done; 2 a user-facing error (one line); 3 a non-finite loss (one line, the last good
checkpoint kept); 130 / 143 stopped by SIGINT / SIGTERM after writing a checkpoint.
"""
from __future__ import annotations

import os
import sys

HELP = "train a model from a TOML config (a file, or a packaged name: tutorial, default, ...)"
EXIT_NON_FINITE = 3


def add_arguments(p) -> None:
    p.add_argument("--config", default=None, help="TOML file or packaged config name (default: default)")
    p.add_argument("--out", help="run directory (created if missing)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one config value (repeatable), e.g. --set train.iters=500")
    p.add_argument("--data", metavar="PATH", help="train on your own .csv / .npy / .npz file "
                   "(sets data.name = 'file' and data.path)")
    p.add_argument("--label-column", metavar="NAME|INDEX", help="with --data: the column of class labels (a "
                   "header name or 0-based index; its values are mapped to classes and the mapping kept with the "
                   "run): trains a class-conditional network (sets data.label_column)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its latest checkpoint, with the "
                   "checkpoint's config (only train.iters, train.checkpoint_every, train.keep_checkpoints and "
                   "train.device may change)")
    p.add_argument("--checkpoint-every", type=int, metavar="N",
                   help="write a checkpoint every N steps (sets train.checkpoint_every; 0 = only at the end)")
    p.add_argument("--keep-checkpoints", type=int, metavar="K", help="keep the newest K checkpoints "
                   "(sets train.keep_checkpoints)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), help="where to train (sets train.device)")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def run(args) -> int:
    from ddpmlab.runs.checkpoint import resume_config
    from ddpmlab.config import load_config, to_toml
    from ddpmlab.workflows.pipeline import train_run
    from ddpmlab.training.trainer import NonFiniteLoss, TrainingInterrupted
    from ddpmlab.core.utils import DDPMLabError

    overrides = list(args.set)
    if args.checkpoint_every is not None:
        overrides.append(f"train.checkpoint_every={args.checkpoint_every}")
    if args.keep_checkpoints is not None:
        overrides.append(f"train.keep_checkpoints={args.keep_checkpoints}")
    if args.device is not None:
        overrides.append(f"train.device={args.device!r}")
    if args.resume:
        if args.config or args.data or args.label_column:
            raise DDPMLabError("--resume continues with the checkpoint's config; drop --config / --data "
                               "(to train longer: --set train.iters=N)")
        if args.out and os.path.realpath(args.out) != os.path.realpath(args.resume):
            raise DDPMLabError("--resume DIR continues the run in DIR; --out, if given, must be the same directory")
        cfg = resume_config(args.resume, overrides)
        out = args.resume
    else:
        if args.data:
            overrides += ["data.name='file'", f"data.path={args.data!r}"]
        if args.label_column is not None:
            if not args.data:
                raise DDPMLabError("--label-column names a column of your --data file; give --data PATH")
            overrides.append(f"data.label_column={str(args.label_column)!r}")
        cfg = load_config(args.config or "default", overrides)
        out = args.out
    if args.dry_run:
        print(to_toml(cfg), end="")
        return 0
    if not out:
        raise DDPMLabError("--out DIR is required (or --resume DIR, or --dry-run)")
    main = os.environ.get("RANK", "0") == "0"  # under torchrun only rank 0 reports
    try:
        summary = train_run(cfg, out, progress=not args.no_progress, resume=bool(args.resume))
    except TrainingInterrupted as exc:
        if main:
            print(f"ddpmlab train: {exc}", file=sys.stderr)
        return exc.exit_code
    except NonFiniteLoss as exc:
        if main:
            print(f"ddpmlab train: error: {exc}", file=sys.stderr)
        return EXIT_NON_FINITE
    if main:
        print(f"trained {summary['iters']} steps in {summary['train_seconds']:.2f} s; "
              f"final loss {summary['final_loss']:.5g}; run written to {out}")
    return 0

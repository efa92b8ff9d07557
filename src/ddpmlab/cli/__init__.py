"""The ``ddpmlab`` command. Every user-facing problem ends in one line on stderr and a non-zero exit:
2 for bad input and operating-system failures (a full disk, an unreadable file, a directory in use),
3 for a computation that produced NaN or infinity; warnings are one line each and do not stop it."""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
import warnings

COMMANDS = ("tutorial", "train", "sample", "evaluate", "logprob", "figures", "report", "sweep")


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse's default prints the usage too)
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="ddpmlab", description="Denoising diffusion models at small scale.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name in COMMANDS:
        mod = importlib.import_module(f"ddpmlab.cli.commands.{name}")
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


@contextlib.contextmanager
def _warnings_as_lines(command: str, report: bool):
    """ddpmlab's own warnings become one line each on stderr (``ddpmlab CMD: warning: ...``)."""
    from ddpmlab.core.utils import DDPMLabWarning

    with warnings.catch_warnings():
        warnings.simplefilter("always", DDPMLabWarning)
        original = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if not issubclass(category, DDPMLabWarning):
                original(message, category, filename, lineno, file, line)
            elif report:
                print(f"ddpmlab {command}: warning: {message}", file=sys.stderr)

        warnings.showwarning = show
        yield


def main(argv=None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, or argparse's one-line error: its code, also when called in-process
        return exc.code if isinstance(exc.code, int) else 2
    # imported after parsing, so that --help and a mistyped flag never wait for torch
    from ddpmlab.core.utils import DDPMLabError, NonFiniteError
    from ddpmlab.training.distributed import is_reporting_process

    report = is_reporting_process()  # under a working torchrun, rank 0 reports for all

    def fail(message: str, code: int) -> int:
        if report:
            print(f"ddpmlab {args.command}: error: {message}", file=sys.stderr)
        return code

    with _warnings_as_lines(args.command, report):
        try:
            if getattr(args, "imports", None):  # before any config or run is read (ddpmlab.config.plugins)
                from ddpmlab.config.plugins import import_plugins

                import_plugins(args.imports, args.trust_code, "--import")
            return int(args._run(args) or 0)
        except NonFiniteError as exc:  # a DDPMLabError with its own exit code
            return fail(str(exc), exc.exit_code)
        except DDPMLabError as exc:
            return fail(str(exc), 2)
        except MemoryError:
            return fail("out of memory (lower the sizes: -n, train.batch_size, model.width, ...)", 2)
        except OSError as exc:  # a failure no reader or writer turned into its own line
            where = f"{exc.filename}: " if exc.filename else ""
            return fail(f"{where}{exc.strerror or exc}", 2)
        except KeyboardInterrupt:
            print(f"ddpmlab {args.command}: interrupted", file=sys.stderr)
            return 130

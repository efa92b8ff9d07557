"""The ``ddpmlab`` command. Every user-facing problem ends in one line on stderr and exit code 2."""
from __future__ import annotations

import argparse
import importlib
import os
import sys

from ddpmlab.core.utils import DDPMLabError

COMMANDS = ("tutorial", "train", "sample", "evaluate", "figures", "report")


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


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except DDPMLabError as exc:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, one line from rank 0 only
            print(f"ddpmlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"ddpmlab {args.command}: interrupted", file=sys.stderr)
        return 130

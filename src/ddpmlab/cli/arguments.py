"""Argument types of the commands, range-checked as they are parsed, so a bad value is argparse's one line
(``ddpmlab sample: error: argument -n: ...``) instead of a failure deep inside."""
from __future__ import annotations

import argparse
import math

INT64_MAX = 2 ** 63 - 1


def count(low: int = 0, high: int = INT64_MAX):
    """An integer in ``low..high``; also written as 1e4 or 10_000."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
            if not math.isfinite(f) or f != int(f):
                raise argparse.ArgumentTypeError(f"invalid int value: {text!r} (not a whole number)") from None
            value = int(f)
        if not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{text} is outside {low}..{high}")
        return value

    parse.__name__ = "int"
    return parse


def count_or_zero(low: int, high: int = INT64_MAX):
    """0 (which skips the computation) or an integer in ``low..high``."""
    parse_count = count(0, high)

    def parse(text: str) -> int:
        value = parse_count(text)
        if 0 < value < low:
            raise argparse.ArgumentTypeError(f"{text} is neither 0 (skip) nor in {low}..{high}")
        return value

    parse.__name__ = "int"
    return parse


SEED = count(0, INT64_MAX)  # what torch and numpy generators take

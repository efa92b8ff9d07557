"""Typed reading of the JSON files a run directory holds (run.json, evaluation.json), whose every value
may have been edited by hand: ``read_field(info, "summary.iters", int)`` is the value at that dotted path if it
is of that kind, else a ``ValueError`` naming the path (the caller adds the file's name).

Kinds: ``int`` (an integer within int64, not a bool), ``float`` (any finite number, not a bool, not
beyond float64's range), ``str``, ``dict``, and ``NUMBERS`` (a list of finite numbers).
"""
from __future__ import annotations

import sys

MISSING = object()  # ``default`` when a missing field is an error
NUMBERS = "numbers"  # the kind: a list of finite numbers
INT64_MAX = 2 ** 63 - 1


def is_number(value) -> bool:
    """A finite int or float that float64 holds (bool, NaN, infinity and 10**400 are not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and abs(value) <= sys.float_info.max


_KINDS = {
    int: ("an integer", lambda v: isinstance(v, int) and not isinstance(v, bool) and abs(v) <= INT64_MAX),
    float: ("a finite number", is_number),
    str: ("a string", lambda v: isinstance(v, str)),
    dict: ("an object", lambda v: isinstance(v, dict)),
    NUMBERS: ("a list of finite numbers", lambda v: isinstance(v, list) and all(map(is_number, v))),
}


def _shown(value) -> str:
    """``value`` as an error message shows it: short, on one line (repr escapes line breaks)."""
    if isinstance(value, (dict, list)):
        return "an object" if isinstance(value, dict) else "a list"
    text = repr(value) if not isinstance(value, int) or abs(value) < 10 ** 30 else "a huge integer"
    return text if len(text) <= 40 else text[:37] + "..."


def read_field(obj, path: str, kind, default=MISSING, nullable: bool = False, low=None):
    """The value at ``path`` ("a.b.c") in the nested objects ``obj``, checked to be of ``kind`` (and at
    least ``low``; None also where ``nullable``); ``default`` where it is missing, when given."""
    value, keys = obj, path.split(".")
    for i, key in enumerate(keys):
        if not isinstance(value, dict):
            raise ValueError(f"{'.'.join(keys[:i])} must be an object, got {_shown(value)}")
        if key not in value:
            if default is MISSING:
                raise ValueError(f"{path} is missing")
            return default
        value = value[key]
    what, check = _KINDS[kind]
    if value is None and nullable:
        return None
    if not check(value):
        raise ValueError(f"{path} must be {what}{' or null' if nullable else ''}, got {_shown(value)}")
    if low is not None and value < low:
        raise ValueError(f"{path} must be at least {low}, got {_shown(value)}")
    return value

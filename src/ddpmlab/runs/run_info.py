"""Reading a finished run's ``run.json`` and checking every field before anything is built from it:
an unreadable file (EIO, EACCES), invalid JSON, a wrong format, a ``data_shape`` that is not a few
positive integers, or a ``shift`` / ``scale`` of the wrong shape or type is one line naming the file."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ddpmlab.core.fileio import read_bytes
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.runs.fields import read_field

FORMAT = "ddpmlab-run"
MAX_FEATURES = 2 ** 31  # a sample of more features than this is not a run ddpmlab wrote


def _number_array(value, name: str, shape: tuple) -> np.ndarray:
    """``value`` as a float64 array of ``shape``, every entry a finite number (not a bool or a string)."""
    def numbers_only(v):
        if isinstance(v, list):
            return all(numbers_only(u) for u in v)
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if not isinstance(value, list) or not numbers_only(value):
        raise ValueError(f"data.{name} must be a list of numbers")
    try:
        arr = np.asarray(value, dtype=np.float64)
    except ValueError:
        raise ValueError(f"data.{name} is a ragged list") from None
    if arr.shape != shape:
        raise ValueError(f"data.{name} has shape {list(arr.shape)}, the data have shape {list(shape)}")
    if not np.isfinite(arr).all():
        raise ValueError(f"data.{name} holds a non-finite value")
    return arr


def check_run_info(info) -> dict:
    """``info`` (run.json's content) if every field a run is built from is well formed; ``ValueError``
    naming the first field that is not."""
    if not isinstance(info, dict):
        raise ValueError("not a JSON object")
    if info.get("format") != FORMAT:
        raise ValueError(f"format is {info.get('format')!r}, expected {FORMAT!r}")
    if not isinstance(info.get("config"), dict):
        raise ValueError("'config' missing or not a table")
    data = info.get("data")
    if not isinstance(data, dict):
        raise ValueError("'data' missing or not an object")
    shape = data.get("data_shape")
    if (not isinstance(shape, list) or not 1 <= len(shape) <= 3
            or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in shape)
            or math.prod(shape) > MAX_FEATURES):
        raise ValueError(f"data.data_shape must be 1 to 3 positive integers, got {shape!r}")
    if not isinstance(data.get("name", ""), str):
        raise ValueError("data.name must be a string")
    if ("shift" in data) != ("scale" in data):
        raise ValueError("data.shift and data.scale come together")
    if "scale" in data:
        _number_array(data["shift"], "shift", tuple(shape))
        if not (_number_array(data["scale"], "scale", tuple(shape)) > 0).all():
            raise ValueError("data.scale must be positive")
    if "mixture" in data and not isinstance(data["mixture"], dict):
        raise ValueError("data.mixture must be an object")
    _check_records(info)
    return info


def _check_records(info: dict) -> None:
    """The recorded facts commands show or compute with (the training summary, the held-out rows of a
    file), each of its kind where present: an edited ``summary.iters = "<b>"`` is refused here."""
    read_field(info, "data.n_train", int, 0, low=0)
    for key in ("n", "seed"):
        read_field(info, f"data.heldout.{key}", int, 0, low=0)
    read_field(info, "data.heldout.fraction", float, 0.0, low=0)
    for key in ("rule", "reason", "sha256", "file_sha256"):
        read_field(info, f"data.heldout.{key}", str, "")
    read_field(info, "summary.iters", int, 0, low=0)
    read_field(info, "summary.train_seconds", float, 0.0, low=0)
    read_field(info, "summary.final_loss", float, None, nullable=True)


def read_run_info(run_file) -> dict:
    """run.json as a dict, checked by ``check_run_info``; every problem is one line naming the file."""
    run_file = Path(run_file)
    raw = read_bytes(run_file)
    try:
        return check_run_info(json.loads(raw.decode()))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DDPMLabError(f"{run_file}: not valid JSON (truncated or corrupt?): {exc}") from None
    except RecursionError:
        raise DDPMLabError(f"{run_file}: nested too deeply to be a run description") from None
    except ValueError as exc:
        raise DDPMLabError(f"{run_file}: malformed run description ({exc})") from None

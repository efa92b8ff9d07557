"""A finished run on disk: weights in safetensors, everything else in JSON (never pickle)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ddpmlab.distributions import GaussianMixture
from ddpmlab.fileio import atomic_write_bytes, atomic_write_json
from ddpmlab.models.seed import SeedReverse
from ddpmlab.schedule import make_schedule
from ddpmlab.utils import DDPMLabError

RUN_FILE, WEIGHTS_FILE = "run.json", "model.safetensors"


def save_seed_run(out: Path, model: SeedReverse, info: dict) -> None:
    """Write ``model.safetensors`` and ``run.json`` (``info`` must describe schedule and data)."""
    tensors = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    atomic_write_bytes(Path(out) / WEIGHTS_FILE, st_save(tensors))
    atomic_write_json(Path(out) / RUN_FILE, {"format": "ddpmlab-run", "version": 1, "recipe": "seed", **info})


def load_seed_run(path) -> tuple[SeedReverse, GaussianMixture, dict]:
    """Load a run written by ``save_seed_run``: (model, data distribution, info)."""
    path = Path(path)
    run_file, weights_file = path / RUN_FILE, path / WEIGHTS_FILE
    if not run_file.is_file() or not weights_file.is_file():
        raise DDPMLabError(f"{str(path)!r} is not a finished run (needs {RUN_FILE} and {WEIGHTS_FILE})")
    try:
        info = json.loads(run_file.read_text())
        sched = make_schedule(**info["schedule"])
        model = SeedReverse(sched, tuple(info["data_shape"]), hidden=int(info["hidden"]))
        dist = GaussianMixture.from_dict(info["data"]["mixture"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DDPMLabError(f"{run_file}: malformed run description ({type(exc).__name__}: {exc})") from None
    try:
        state = st_load(weights_file.read_bytes())
        model.load_state_dict(state)
    except Exception as exc:  # safetensors raises its own error types on corrupt data
        raise DDPMLabError(f"{weights_file}: unreadable or mismatched weights ({exc})".splitlines()[0]) from None
    return model, dist, info

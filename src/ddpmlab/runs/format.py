"""A finished run on disk: weights in safetensors, everything else in JSON/TOML (never pickle).

    DIR/run.json           format, resolved config, data description, step, timings
    DIR/config.toml        the resolved config (what ``--dry-run`` prints)
    DIR/model.safetensors  ``model.*`` trained weights and ``ema.*`` EMA weights when kept
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from ddpmlab.config.build import build_model
from ddpmlab.config import Config, from_dict, to_toml
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.fileio import atomic_write_bytes, atomic_write_json
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.runs.run_info import read_run_info

RUN_FILE, WEIGHTS_FILE, CONFIG_FILE = "run.json", "model.safetensors", "config.toml"
FORMAT = "ddpmlab-run"


@dataclass
class Run:
    model: torch.nn.Module  # the weights to sample with (EMA when kept)
    cfg: Config
    info: dict  # run.json
    dist: GaussianMixture | None  # the true distribution when known

    def to_data_units(self, x: torch.Tensor) -> torch.Tensor:
        d = self.info["data"]
        if "scale" not in d:
            return x
        shape = (1,) + tuple(d["data_shape"])
        return x * torch.tensor(d["scale"]).reshape(shape) + torch.tensor(d["shift"]).reshape(shape)


def save_run(out, cfg: Config, data_desc: dict, model, ema_model=None, extra: dict | None = None) -> None:
    """Write the three files of a finished run (each atomically)."""
    out = Path(out)
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if ema_model is not None:
        tensors.update({f"ema.{k}": v.detach().contiguous().cpu() for k, v in ema_model.state_dict().items()})
    atomic_write_bytes(out / WEIGHTS_FILE, st_save(tensors))
    atomic_write_bytes(out / CONFIG_FILE, to_toml(cfg).encode())
    atomic_write_json(out / RUN_FILE, {"format": FORMAT, "version": 1, "config": cfg.to_dict(),
                                       "data": data_desc, **(extra or {})})


def load_run(path) -> Run:
    """Load a run written by ``save_run``; a missing, corrupt or mismatched file is a one-line error."""
    path = Path(path)
    run_file, weights_file = path / RUN_FILE, path / WEIGHTS_FILE
    if not run_file.is_file() or not weights_file.is_file():
        raise DDPMLabError(f"{str(path)!r} is not a finished run (needs {RUN_FILE} and {WEIGHTS_FILE})")
    info = read_run_info(run_file)  # every field checked; each problem one line naming the file
    try:
        cfg = from_dict(info["config"])
        data = info["data"]
        dist = GaussianMixture.from_dict(data["mixture"]) if "mixture" in data else None
        model = build_model(cfg, tuple(data["data_shape"]))
    except DDPMLabError as exc:
        raise DDPMLabError(f"{run_file}: {exc}") from None
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as exc:
        raise DDPMLabError(f"{run_file}: malformed run description ({type(exc).__name__}: {exc})") from None
    try:
        tensors = st_load(weights_file.read_bytes())
    except (SafetensorError, ValueError, OSError) as exc:
        raise DDPMLabError(f"{weights_file}: unreadable weights ({str(exc).splitlines()[0]})") from None
    prefix = "ema." if any(k.startswith("ema.") for k in tensors) else "model."
    state = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise DDPMLabError(f"{weights_file}: weights do not match the run's model "
                           f"({str(exc).splitlines()[0]})") from None
    model.eval()
    return Run(model, cfg, info, dist)


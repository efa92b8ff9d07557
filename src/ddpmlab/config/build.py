"""Build a schedule and a reverse-process model from a ``Config``."""
from __future__ import annotations

import math

from ddpmlab.config import Config
from ddpmlab.core.parameterisation import DiffusionModel, GaussianDiffusion
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.models.preconditioning import GaussianPreconditioner
from ddpmlab.models.seed import SeedReverse
from ddpmlab.core.schedule import NoiseSchedule, make_schedule
from ddpmlab.core.utils import DDPMLabError


def build_schedule(cfg: Config) -> NoiseSchedule:
    s = cfg.schedule
    return make_schedule(s.kind, s.steps, beta=s.beta, beta_start=s.beta_start, beta_end=s.beta_end)


def build_model(cfg: Config, data_shape: tuple):
    """The model ``cfg.model`` describes, for data of shape (N, *data_shape)."""
    m = cfg.model
    schedule = build_schedule(cfg)
    if m.arch == "seed":
        return SeedReverse(schedule, data_shape, hidden=m.hidden)
    diffusion = GaussianDiffusion(schedule, m.mean_type, m.var_type)
    if m.arch == "mlp":
        D = math.prod(data_shape)
        net = MLPDenoiser(D, out_dim=diffusion.output_channels(1) * D, width=m.width, depth=m.depth,
                          time_dim=m.time_dim)
    elif m.arch == "unet":
        if len(data_shape) != 3:
            raise DDPMLabError(f"model.arch = 'unet' needs image data (C, H, W), got shape {data_shape}")
        from ddpmlab.models.unet import UNet

        net = UNet(data_shape[0], diffusion.output_channels(data_shape[0]), base=m.width, time_dim=m.time_dim)
    else:  # validated earlier
        raise DDPMLabError(f"unknown architecture {m.arch!r}")
    precond = GaussianPreconditioner(m.mean_type) if m.precondition else None
    return DiffusionModel(net, diffusion, data_shape, precond)

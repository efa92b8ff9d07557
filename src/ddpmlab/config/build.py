"""Build a schedule and a reverse-process model from a ``Config``."""
from __future__ import annotations

from ddpmlab.config.sections import Config
from ddpmlab.core.schedule import NoiseSchedule, make_schedule
from ddpmlab.models.registry import build_model as build_arch


def build_schedule(cfg: Config) -> NoiseSchedule:
    s = cfg.schedule
    return make_schedule(s.kind, s.steps, beta=s.beta, beta_start=s.beta_start, beta_end=s.beta_end)


def build_model(cfg: Config, data_shape: tuple, trust_code: bool = False, net=None):
    """The model ``cfg.model`` describes, for data of shape (N, *data_shape); ``net`` replaces the network
    (your own ``nn.Module``); a ``package.module:Class`` architecture is imported only with ``trust_code``."""
    return build_arch(cfg.model.arch, build_schedule(cfg), data_shape, cfg.model, trust_code=trust_code, net=net)

"""Architectures by name (``ARCHITECTURES``), and the user's own network class named as
``package.module:Class`` (as Hydra's ``_target_``).

A registered builder is ``f(schedule, data_shape, options) -> model`` where ``options`` carries the
``[model]`` settings (mean_type, var_type, width, depth, time_dim, hidden, precondition, net_kwargs).
"""
from __future__ import annotations

import importlib
import math
import os
import re
import sys

from torch import nn

from ddpmlab.core.var_types import output_channels
from ddpmlab.core.registry import Registry
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.diffusion_model import DiffusionModel
from ddpmlab.models.flow_model import FlowModel
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.models.seed import SeedReverse

ARCHITECTURES = Registry("architecture")
TARGET = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")


def is_target(arch) -> bool:
    """Whether ``arch`` names a class to import (``package.module:Class``) rather than a registered name."""
    return isinstance(arch, str) and TARGET.fullmatch(arch) is not None


def is_flow(o) -> bool:
    """Whether the ``[model]`` options describe a flow (``family = "flow"``) rather than a DDPM."""
    return getattr(o, "family", "ddpm") == "flow"


def _wrap(net, schedule, data_shape, o, arch: str | None = None):
    if is_flow(o):
        model = FlowModel(net, data_shape, net_kwargs=getattr(o, "net_kwargs", None),
                          precondition=getattr(o, "precondition", False))
    else:
        model = DiffusionModel(net, schedule, o.mean_type, o.var_type, data_shape, precondition=o.precondition,
                               net_kwargs=getattr(o, "net_kwargs", None))
    if arch is not None:  # what describe_model records, the same for every family
        model.arch_options = {"arch": arch, "width": o.width, "depth": o.depth, "time_dim": o.time_dim}
        if getattr(o, "num_classes", 0):
            model.arch_options["num_classes"] = o.num_classes
    return model


@ARCHITECTURES.register("seed")
def build_seed(schedule, data_shape, o):
    """The seed's two small networks for the mean and standard deviation (``ddpmlab.models.seed``)."""
    if is_flow(o):
        raise DDPMLabError("model.arch = 'seed' is a DDPM reverse chain; a flow needs mlp, unet or your network")
    return SeedReverse(schedule, data_shape, hidden=o.hidden)


@ARCHITECTURES.register("mlp")
def build_mlp(schedule, data_shape, o):
    """A residual MLP with a sinusoidal time embedding on flattened data (``ddpmlab.models.mlp``)."""
    D = math.prod(data_shape)
    net = MLPDenoiser(D, out_dim=output_channels(o.var_type, 1) * D, width=o.width, depth=o.depth, time_dim=o.time_dim,
                      num_classes=getattr(o, "num_classes", 0))
    return _wrap(net, schedule, data_shape, o, "mlp")


@ARCHITECTURES.register("unet")
def build_unet(schedule, data_shape, o):
    """A small U-Net for images (C, H, W) (``ddpmlab.models.unet``)."""
    if len(data_shape) != 3:
        raise DDPMLabError(f"model.arch = 'unet' needs image data (C, H, W), got shape {data_shape}")
    from ddpmlab.models.unet import UNet

    net = UNet(data_shape[0], output_channels(o.var_type, data_shape[0]), base=o.width, time_dim=o.time_dim,
               num_classes=getattr(o, "num_classes", 0))
    return _wrap(net, schedule, data_shape, o, "unet")


def check_trust(arch, trust_code: bool, where: str = "the config") -> None:
    """Refuse, in one line, an ``arch`` that names a class to import (``package.module:Class``) unless
    ``trust_code``: the check ``import_target`` makes before importing anything, also made early by a
    command that starts others (``ddpmlab sweep``). A registered name passes."""
    if not is_target(arch):
        return
    module_name = arch.partition(":")[0]
    if module_name == "__main__":
        raise DDPMLabError(f"{where} names the network class {arch!r}, defined in a script or notebook: "
                           "load the run with load_run(path, net=YourNet(...)), or move the class into a module")
    if not trust_code:
        raise DDPMLabError(f"{where} names the network class {arch!r}; loading it imports module "
                           f"{module_name!r}, which runs its code: pass --trust-code (or trust_code=True) if you "
                           "trust it, or pass the network yourself (load_run(path, net=...))")


def import_target(target: str, trust_code: bool, where: str = "the config") -> type:
    """The class ``package.module:Class``: the one place ddpmlab imports a module a config or run names.
    Importing runs that module's code, so it needs ``trust_code`` (a run directory someone sends you must
    never run code on load). The working directory is searched too, as ``python -m`` does. What it names
    must be a ``torch.nn.Module`` class; anything else (``os:system``) is refused before it is called."""
    if not is_target(target):
        raise DDPMLabError(f"{where} names the network {target!r}, which is not a class as 'package.module:Class'")
    check_trust(target, trust_code, where)
    module_name, _, qualname = target.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        obj = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (Exception, SystemExit) as exc:  # an import runs arbitrary code: any failure is the user's module's
        raise DDPMLabError(f"cannot import the network class {target!r} ({type(exc).__name__}: {exc})") from None
    if not (isinstance(obj, type) and issubclass(obj, nn.Module)):
        raise DDPMLabError(f"{where} names {target!r}, a {type(obj).__name__}, not a torch.nn.Module class; "
                           "refused (it is never called)")
    return obj


def build_model(arch: str, schedule, data_shape, options, trust_code: bool = False, net: nn.Module | None = None):
    """The model ``arch`` describes (a registered name or ``package.module:Class``) for data of shape
    (N, *data_shape). ``net``: your own network instance, used instead of building one."""
    data_shape = tuple(data_shape)
    if net is not None:
        return _wrap(net, schedule, data_shape, options)
    if is_target(arch):
        cls = import_target(arch, trust_code)
        try:
            net = cls(**dict(options.net_kwargs))
        except Exception as exc:
            raise DDPMLabError(f"cannot build the network {arch}(**{dict(options.net_kwargs)}) "
                               f"({type(exc).__name__}: {exc})") from None
        if not isinstance(net, nn.Module):  # a class may return anything from __new__
            raise DDPMLabError(f"{arch} built a {type(net).__name__}, not a torch.nn.Module")
        return _wrap(net, schedule, data_shape, options)
    return ARCHITECTURES.get(arch)(schedule, data_shape, options)


SEED_TYPES = ("previous_x", "learned")  # (mean type, variance type) of the seed's networks: mu and sigma


def describe_model(model) -> dict:
    """The ``[model]`` settings that rebuild ``model`` (``build_model``): a registered architecture's
    options, or your network's class as ``package.module:Class`` with its ``net_kwargs``."""
    if isinstance(model, FlowModel):
        d = {"family": "flow", "precondition": model.precond is not None}
        if model.arch_options is not None:
            return {**d, **model.arch_options}
        cls = type(model.net)
        return {**d, "arch": f"{cls.__module__}:{cls.__qualname__}", "net_kwargs": dict(model.net_kwargs)}
    if isinstance(model, SeedReverse):
        return {"arch": "seed", "mean_type": SEED_TYPES[0], "var_type": SEED_TYPES[1], "hidden": model.net.hidden}
    if not isinstance(model, DiffusionModel):
        raise DDPMLabError(f"a {type(model).__name__} cannot be saved as a run: wrap your network in "
                           "ddpmlab.DiffusionModel")
    d = {"mean_type": model.mean_type, "var_type": model.var_type, "precondition": model.precond is not None}
    if model.arch_options is not None:
        return {**d, **model.arch_options}
    cls = type(model.net)
    return {**d, "arch": f"{cls.__module__}:{cls.__qualname__}", "net_kwargs": dict(model.net_kwargs)}

"""Architectures by name (``ARCHITECTURES``), and the user's own network class named as
``package.module:Class`` (as Hydra's ``_target_``).

A registered builder is ``f(schedule, data_shape, options) -> network`` where ``options`` carries the
``[model]`` settings (family, mean_type, var_type, width, depth, time_dim, hidden, precondition,
net_kwargs); the run's family wraps the network into its model (``Family.wrap``). A builder may return a
whole model instead (the seed's networks are a DDPM reverse chain), which must be of the run's family.
"""
from __future__ import annotations

import dataclasses
import importlib
import math
import os
import sys

import torch
from torch import nn

from ddpmlab.core.process import ProcessModel
from ddpmlab.core.registry import Registry, is_target
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.core.var_types import output_channels
from ddpmlab.models.family import FAMILIES
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.models.seed import SeedReverse

ARCHITECTURES = Registry("architecture")


def _wrap(net, schedule, data_shape, o, arch: str | None = None):
    """``net`` as a model of the options' family; a whole model a builder made is kept (if of that family)."""
    family = FAMILIES.get(getattr(o, "family", "ddpm"))
    if isinstance(net, ProcessModel):
        if not isinstance(net, family.base):
            raise DDPMLabError(f"model.arch = {arch!r} builds a {net.family} model, not a {family.name} one")
        return net
    model = family.wrap(net, schedule, data_shape, o)
    if arch is not None:
        model.arch_options = _arch_options(arch, o)
    return model


def _arch_options(arch: str, o) -> dict:
    """What ``describe_model`` records of a registered architecture, the same for every family."""
    options = {"arch": arch, "width": o.width, "depth": o.depth, "time_dim": o.time_dim}
    if getattr(o, "num_classes", 0):
        options["num_classes"] = o.num_classes
    return options


@ARCHITECTURES.register("seed")
def build_seed(schedule, data_shape, o):
    """The seed's two small networks for the mean and standard deviation (``ddpmlab.models.seed``): a
    whole DDPM model."""
    return _wrap(SeedReverse(schedule, data_shape, hidden=o.hidden), schedule, data_shape, o, "seed")


def mlp_network(data_shape, o) -> nn.Module:
    """A residual MLP with a sinusoidal time embedding on flattened data (``ddpmlab.models.mlp``)."""
    D = math.prod(data_shape)
    return MLPDenoiser(D, out_dim=output_channels(o.var_type, 1) * D, width=o.width, depth=o.depth,
                       time_dim=o.time_dim, num_classes=getattr(o, "num_classes", 0))


def unet_network(data_shape, o) -> nn.Module:
    """A small U-Net for images (C, H, W) (``ddpmlab.models.unet``)."""
    if len(data_shape) != 3:
        raise DDPMLabError(f"model.arch = 'unet' needs image data (C, H, W), got shape {data_shape}")
    from ddpmlab.models.unet import UNet

    return UNet(data_shape[0], output_channels(o.var_type, data_shape[0]), base=o.width, time_dim=o.time_dim,
                num_classes=getattr(o, "num_classes", 0))


NETWORKS = {"mlp": mlp_network, "unet": unet_network}  # the registered architectures that are one network


@ARCHITECTURES.register("mlp")
def build_mlp(schedule, data_shape, o):
    """A residual MLP with a sinusoidal time embedding on flattened data (``mlp_network``)."""
    return _wrap(mlp_network(data_shape, o), schedule, data_shape, o, "mlp")


@ARCHITECTURES.register("unet")
def build_unet(schedule, data_shape, o):
    """A small U-Net for images (C, H, W) (``unet_network``)."""
    return _wrap(unet_network(data_shape, o), schedule, data_shape, o, "unet")


NETWORK = "network class"


def check_trust(arch, trust_code: bool, where: str = "the config", kind: str = NETWORK) -> None:
    """Refuse, in one line, an ``arch`` that names a class to import (``package.module:Class``) unless
    ``trust_code``: the check ``import_target`` makes before importing anything, also made early by a
    command that starts others (``ddpmlab sweep``). A registered name passes. The one trust gate: a plugin
    module or a ``package.module:function`` objective or sampler (``kind``) passes it too
    (``ddpmlab.config.plugins``)."""
    network = kind == NETWORK
    if network and not is_target(arch):
        return
    module_name = arch.partition(":")[0]
    if module_name == "__main__":
        fix = "load the run with load_run(path, net=YourNet(...)), or move the class into a module" if network \
            else "move it into a module"
        raise DDPMLabError(f"{where} names the {kind} {arch!r}, defined in a script or notebook: {fix}")
    if not trust_code:
        fix = ", or pass the network yourself (load_run(path, net=...))" if network else ""
        raise DDPMLabError(f"{where} names the {kind} {arch!r}; loading it imports module "
                           f"{module_name!r}, which runs its code: pass --trust-code (or trust_code=True) if you "
                           f"trust it{fix}")


def import_code(name: str, trust_code: bool, where: str = "the config", kind: str = NETWORK):
    """What ``package.module:name`` names, or the module ``package.module`` itself, after the trust gate
    (``check_trust``): the one place ddpmlab imports a module a config or run names. The working
    directory is searched too, as ``python -m`` does; any failure of the import is one line."""
    check_trust(name, trust_code, where, kind)
    module_name, _, qualname = name.partition(":")
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    try:
        obj = importlib.import_module(module_name)
        for part in qualname.split(".") if qualname else ():
            obj = getattr(obj, part)
    except (Exception, SystemExit) as exc:  # an import runs arbitrary code: any failure is the user's module's
        raise DDPMLabError(f"cannot import the {kind} {name!r} ({type(exc).__name__}: "
                           f"{' '.join(str(exc).split())})") from None
    return obj


def import_target(target: str, trust_code: bool, where: str = "the config") -> type:
    """The class ``package.module:Class`` (``import_code``). Importing runs that module's code, so it needs
    ``trust_code`` (a run directory someone sends you must never run code on load). What it names must be
    a ``torch.nn.Module`` class; anything else (``os:system``) is refused before it is called."""
    if not is_target(target):
        raise DDPMLabError(f"{where} names the network {target!r}, which is not a class as 'package.module:Class'")
    obj = import_code(target, trust_code, where)
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


def describe_model(model, defaults=None) -> dict:
    """The ``[model]`` settings that rebuild ``model`` (``build_model``): its own ``describe()`` (a
    registered architecture's options, or your network's class as ``package.module:Class`` with its
    ``net_kwargs``); with ``defaults`` (the ``[model]`` section's defaults, a dataclass), a ddpmlab network
    made by hand is described as the registered architecture that builds it (``_as_registered``). A
    model of no family is refused in one line."""
    if not isinstance(model, ProcessModel):
        raise DDPMLabError(f"a {type(model).__name__} cannot be saved as a run: wrap your network in "
                           "ddpmlab.DiffusionModel or ddpmlab.FlowModel")
    d = model.describe()
    return _as_registered(model, d, defaults) if defaults is not None and is_target(d.get("arch", "")) else d


def _as_registered(model, d: dict, defaults) -> dict:
    """``d`` with a registered architecture's options in place of the network's class when that
    architecture builds the very same network (``dl.MLPDenoiser(...)`` made through the API: its
    ``config_options()``, checked by building it with ``NETWORKS`` under a forked RNG), so that its run
    loads without --trust-code; else ``d`` unchanged."""
    net = model.net  # a target is a network's class (``AroundNetwork.network_description``)
    claim = getattr(net, "config_options", None)
    if claim is None:
        return d
    said = {k: v for k, v in d.items() if k not in ("arch", "net_kwargs")}
    o = dataclasses.replace(defaults, **{**said, **claim()})
    try:
        with torch.random.fork_rng(devices=[]):
            built = NETWORKS[o.arch](model.data_shape, o)
    except (KeyError, DDPMLabError):
        return d
    same = type(built) is type(net) and built.init_kwargs == net.init_kwargs
    return {**said, **_arch_options(o.arch, o)} if same else d


def check_rebuildable(arch: str, net_kwargs: dict, net) -> None:
    """Refuse, in one line, to record the network class ``arch`` (``package.module:Class``) with
    ``net_kwargs`` when no other process could rebuild ``net`` from them: a class of a script or notebook
    (``__main__``) or one not importable by its name (defined in a function), or one that
    ``Class(**net_kwargs)`` does not rebuild (an error, or other weights' names or shapes). Asked by
    ``save_run`` before anything is written, so that a run is refused when saved, not when loaded."""
    if not is_target(arch):
        return
    module_name, _, qualname = arch.partition(":")
    where = f"cannot save the run: its network class {arch!r}"
    fix = "pass the keyword arguments that rebuild it (DiffusionModel(net, ..., net_kwargs={...}), or FlowModel)"
    if module_name == "__main__":
        raise DDPMLabError(f"{where} is defined in a script or notebook, which no other process can import: "
                           "move it into a module")
    cls = sys.modules.get(module_name)
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
    if cls is not type(net):
        raise DDPMLabError(f"{where} cannot be imported by that name (defined inside a function?): define it at "
                           "the top level of a module")
    try:
        with torch.random.fork_rng(devices=[]):
            rebuilt = cls(**dict(net_kwargs))
    except Exception as exc:  # the user's constructor: any failure is one line
        raise DDPMLabError(f"{where} cannot be rebuilt from its recorded net_kwargs {dict(net_kwargs)} "
                           f"({type(exc).__name__}: {' '.join(str(exc).split())}): {fix}") from None
    shapes = lambda m: {k: tuple(v.shape) for k, v in m.state_dict().items()}  # noqa: E731
    if not isinstance(rebuilt, nn.Module) or shapes(rebuilt) != shapes(net):
        raise DDPMLabError(f"{where} built from its recorded net_kwargs {dict(net_kwargs)} is another network "
                           f"than the one trained (other weights): {fix}")

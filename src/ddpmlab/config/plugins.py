"""Your own code in every command: plugin modules, and objectives and samplers named as ``package.module:name``.

A config's ``[plugins] modules`` (and any command's ``--import MODULE``) names modules imported before the
config is validated, so that the objectives, samplers, architectures and mean types they register are names
the config, the CLI and a run reopened in a fresh process know. ``train.objective`` and ``sample.sampler``
may also name your function (or objective class) as ``package.module:name``, as ``model.arch`` names a
network class: it is imported and registered under that name, which the run records.

Importing runs a module's code, so every import here passes the trust gate of networks
(``ddpmlab.models.registry.check_trust``): refused in one line without ``trust_code`` (``--trust-code``).
What this process has already imported through the gate is not imported again, and reading the same
config once more (a run's config re-validated) needs no second ``trust_code``: nothing new runs.
"""
from __future__ import annotations

import inspect
import keyword

from ddpmlab.core.registry import is_target
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.registry import import_code
from ddpmlab.objectives.losses import OBJECTIVES
from ddpmlab.sampling.registry import SAMPLERS


def _callable_class(obj) -> bool:
    """A class whose instances are called (a ``__call__`` of its own or a base's, not ``type``'s)."""
    return inspect.isclass(obj) and any("__call__" in vars(k) for k in obj.__mro__[:-1])


# (section, key) that may name your code as "package.module:name" -> (its registry, what it names, accepts)
CODE_KEYS = {("train", "objective"): (OBJECTIVES, "objective", lambda o: inspect.isfunction(o) or _callable_class(o)),
             ("sample", "sampler"): (SAMPLERS, "sampler function", inspect.isfunction)}
UNKNOWN_HINT = (" (or your own: registered by a module in [plugins] modules or --import MODULE, or named as "
                "'package.module:name'; both need --trust-code)")
_imported: set[str] = set()  # the modules and targets this process imported through the gate


def check_module_name(name, where: str = "plugins.modules") -> None:
    """Refuse, in one line, anything but a module name (dotted identifiers, as ``import`` takes)."""
    parts = name.split(".") if isinstance(name, str) else [""]
    if not all(p.isidentifier() and not keyword.iskeyword(p) for p in parts) or name == "__main__":
        raise DDPMLabError(f"{where}: {name!r} is not a module name (dotted identifiers, as in "
                           "'import package.module')")


def import_plugins(modules, trust_code: bool, where: str = "plugins.modules") -> None:
    """Import ``modules`` in order, each through the trust gate; every name is checked before any import."""
    for name in modules:
        check_module_name(name, where)
    for name in modules:
        if name not in _imported:
            import_code(name, trust_code, where, "plugin module")
            _imported.add(name)


def load_target(section: str, key: str, name: str, trust_code: bool) -> None:
    """Import the ``package.module:name`` that ``section.key`` names, through the trust gate, and register
    it under that name; a registered name is left alone."""
    registry, kind, accepts = CODE_KEYS[(section, key)]
    if not is_target(name) or name in _imported:
        return
    where = f"{section}.{key}"
    obj = import_code(name, trust_code, where, kind)
    if not accepts(obj):
        raise DDPMLabError(f"{where} names {name!r}, a {type(obj).__name__}, not a {kind} of your own (a "
                           f"{'function or callable class' if key == 'objective' else 'function'}); refused, never "
                           "called")
    registry.register(name, obj, replace=True)
    _imported.add(name)


def load_plugins(cfg, trust_code: bool) -> None:
    """Everything ``cfg`` names to import (its plugin modules, then its objective and sampler targets),
    before it is validated (``ddpmlab.config.schema.from_dict``)."""
    import_plugins(cfg.plugins.modules, trust_code)
    for section, key in CODE_KEYS:
        load_target(section, key, getattr(getattr(cfg, section), key), trust_code)

"""Loading the run configuration: TOML file -> dataclasses, ``--set section.key=value`` overrides, validated once.

The sections and their fields are ``ddpmlab.config.sections``; ``ddpmlab train --dry-run`` prints the resolved
config as TOML.
"""
from __future__ import annotations

import sys
from dataclasses import fields
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from ddpmlab.config.budget import AUTO
from ddpmlab.config.plugins import load_plugins
from ddpmlab.config.sections import Config
from ddpmlab.config.validation import validate
from ddpmlab.core.utils import DDPMLabError

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"

INT64 = (-2 ** 63, 2 ** 63 - 1)  # what TOML integers are, and what torch and numpy take as a seed


def _coerce(section: str, key: str, value, typ):
    name = f"{section}.{key}"
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise DDPMLabError(f"{name} must be true or false, got {value!r}")
    if typ is int:
        if name == "train.iters" and value == AUTO:  # set from the data by ddpmlab.config.budget
            return value
        if isinstance(value, bool) or not isinstance(value, int):
            also = ' or "auto"' if name == "train.iters" else ""
            raise DDPMLabError(f"{name} must be an integer{also}, got {value!r}")
        if not INT64[0] <= value <= INT64[1]:
            raise DDPMLabError(f"{name} must be a 64-bit integer ({INT64[0]}..{INT64[1]}), got {value}")
        return value
    if typ is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise DDPMLabError(f"{name} must be a number, got {value!r}")
        if value != value or value in (float("inf"), float("-inf")):
            raise DDPMLabError(f"{name} must be finite, got {value!r}")
        return float(value)
    if typ is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise DDPMLabError(f"{name} must be a table of keyword arguments, got {value!r}")
        return dict(value)
    if typ is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise DDPMLabError(f"{name} must be a list of strings, got {value!r}")
        return list(value)
    if not isinstance(value, str):
        raise DDPMLabError(f"{name} must be a string, got {value!r}")
    return value


def _section_types(cls) -> dict:
    hints = {"int": int, "float": float, "bool": bool, "str": str, "dict": dict, "list": list}
    return {f.name: hints[f.type] if isinstance(f.type, str) else f.type for f in fields(cls)}


def from_dict(d: dict, trust_code: bool = False) -> Config:
    """Build and validate a Config from nested dicts; unknown sections or keys are errors. The code it names
    (``[plugins] modules``, ``package.module:name`` targets) is imported first, which needs ``trust_code``
    (``ddpmlab.config.plugins``)."""
    cfg = Config()
    if not isinstance(d, dict):
        raise DDPMLabError("config must be a table of sections")
    for section, values in d.items():
        if section not in {f.name for f in fields(Config)}:
            raise DDPMLabError(f"unknown config section [{section}]; sections: "
                               f"{', '.join(f.name for f in fields(Config))}")
        if not isinstance(values, dict):
            raise DDPMLabError(f"config section [{section}] must be a table")
        sub = getattr(cfg, section)
        types = _section_types(type(sub))
        for key, value in values.items():
            if key not in types:
                raise DDPMLabError(f"unknown config key {section}.{key}; keys of [{section}]: {', '.join(types)}")
            setattr(sub, key, _coerce(section, key, value, types[key]))
    load_plugins(cfg, trust_code)
    validate(cfg)
    return cfg



def parse_override(text: str) -> tuple[str, str, object]:
    """'section.key=value' with a TOML value (strings may be bare)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise DDPMLabError(f"--set expects section.key=value, got {text!r}")
    dotted, raw = text.split("=", 1)
    section, key = dotted.strip().split(".", 1)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw.strip()
    return section, key, value


def resolve_config_path(name_or_path: str) -> Path:
    """A file path, or the name of a packaged config (e.g. 'tutorial', 'default')."""
    p = Path(name_or_path)
    if p.is_file():
        return p
    packaged = CONFIG_DIR / f"{name_or_path}.toml"
    if packaged.is_file():
        return packaged
    names = ", ".join(sorted(q.stem for q in CONFIG_DIR.glob("*.toml")))
    raise DDPMLabError(f"config {name_or_path!r} not found (a .toml file, or one of: {names})")


def load_config(name_or_path: str | None, overrides: list[str] = (), trust_code: bool = False) -> Config:
    """Read a TOML config (or start from defaults), apply ``--set`` overrides, validate. ``trust_code``: let
    it import the code it names (``[plugins] modules``, ``package.module:name`` targets)."""
    d: dict = {}
    if name_or_path:
        path = resolve_config_path(name_or_path)
        try:
            d = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise DDPMLabError(f"{path}: not valid TOML ({exc})") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DDPMLabError(f"{path}: cannot read config ({exc})") from None
    for text in overrides:
        section, key, value = parse_override(text)
        d.setdefault(section, {})
        if not isinstance(d[section], dict):
            raise DDPMLabError(f"config section [{section}] must be a table")
        d[section][key] = value
    return from_dict(d, trust_code)

"""A ``Config`` written as TOML (what ``--dry-run`` prints and ``config.toml`` holds; read back by
``ddpmlab.config.schema.load_config``)."""
from __future__ import annotations


def _toml_string(v: str) -> str:
    """A TOML basic string: quotes, backslashes and every control character escaped (a path may hold any)."""
    out = []
    for ch in v:
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in _TOML_ESCAPES:
            out.append(_TOML_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


_TOML_ESCAPES = {"\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_value(v) -> str:
    if isinstance(v, dict):
        return "{" + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return _toml_string(v)
    return repr(v)


def _toml_key(k: str) -> str:
    return k if k.replace("_", "a").replace("-", "a").isalnum() else _toml_value(k)


def to_toml(cfg) -> str:
    """The resolved config as TOML (round-trips through ``load_config``)."""
    lines = []
    for section, values in cfg.to_dict().items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {_toml_value(v)}" for k, v in values.items()]
        lines.append("")
    return "\n".join(lines)

"""Every string that reaches the report page passes through exactly one of these, chosen by where it lands:

- ``esc``: HTML text and attribute values (``<``, ``>``, ``&``, both quotes);
- ``script_json``: JSON inside a ``<script>`` element. ``<`` ``>`` ``&`` are written as ``\\u003c`` ...,
  so that no ``</script>`` can end the element and no ``<!--`` can open a script-data comment (which
  hides the next ``</script>``, so that nothing after it runs), and U+2028/U+2029 as ``\\u2028`` ...
  (line breaks to older JavaScript); a value JSON cannot hold (NaN, infinity) is written as null;
- ``plotly_figure``: a figure's strings as plotly draws them: plotly reads ``<b>``, ``<a href>`` ... in
  titles, trace names and hover text as markup of its own, so ``<``, ``>``, ``&`` become entities, which
  it shows as the characters themselves.

Run names, config values and anything else read from a run directory may hold any of these characters.
"""
from __future__ import annotations

import html
import json

from ddpmlab.core.fileio import finite_json

_SCRIPT_JSON = {ord("<"): "\\u003c", ord(">"): "\\u003e", ord("&"): "\\u0026", 0x2028: "\\u2028",
                0x2029: "\\u2029"}


def esc(text) -> str:
    """``text`` (any value, as ``str`` shows it) safe in HTML text and in a quoted attribute value."""
    return html.escape(str(text), quote=True)


def script_json(obj) -> str:
    """``obj`` as JSON safe inside ``<script type="application/json">`` (read back by ``JSON.parse``)."""
    text = json.dumps(finite_json(obj), separators=(",", ":"), allow_nan=False)
    return text.translate(_SCRIPT_JSON)


def plotly_text(text: str) -> str:
    """``text`` shown literally by plotly (which reads tags and entities in its text)."""
    return html.escape(text, quote=False)


def plotly_figure(obj):
    """A copy of a figure (or a list of traces) with every string made ``plotly_text``: the page's single
    entry for figures, so that no run name or config value in a title, a legend or a hover is markup."""
    if isinstance(obj, str):
        return plotly_text(obj)
    if isinstance(obj, dict):
        return {k: plotly_figure(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plotly_figure(v) for v in obj]
    return obj

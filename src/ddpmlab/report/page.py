"""One self-contained HTML file: plotly.js embedded once, every figure as JSON drawn by ``Plotly.newPlot``,
sliders as plain ``<input type=range>`` that swap a figure's traces (``Plotly.react``). The page loads
nothing: no server, no network. Figures inside a closed ``<details>`` are drawn when it is opened.
"""
from __future__ import annotations

import math

from ddpmlab.report.escape import esc, plotly_figure, script_json

SCRIPT = r"""
(function () {
  const FIGS = JSON.parse(document.getElementById('ddpmlab-figures').textContent);
  const SLIDERS = JSON.parse(document.getElementById('ddpmlab-sliders').textContent);
  const CONFIG = {displaylogo: false, responsive: true};
  const drawn = new Set();
  function draw(id) {
    if (drawn.has(id)) return Promise.resolve();
    drawn.add(id);
    return Plotly.newPlot(id, FIGS[id].data, FIGS[id].layout, CONFIG);
  }
  function drawVisible(root) {
    return Promise.all([...root.querySelectorAll('div.plot')]
      .filter(function (el) { return !el.closest('details:not([open])'); })
      .map(function (el) { return draw(el.id); }));
  }
  Object.keys(SLIDERS).forEach(function (sid) {
    const s = SLIDERS[sid], input = document.getElementById(sid), label = document.getElementById(sid + '-label');
    input.addEventListener('input', function () {
      const k = parseInt(input.value, 10);
      label.textContent = s.labels[k];
      delete input.dataset.shown;  // data-shown: the frame the figure has finished drawing
      const done = function () { if (parseInt(input.value, 10) === k) input.dataset.shown = String(k); };
      if (drawn.has(s.plot)) Plotly.react(s.plot, s.frames[k], FIGS[s.plot].layout, CONFIG).then(done);
      else { FIGS[s.plot].data = s.frames[k]; done(); }
    });
  });
  document.querySelectorAll('details').forEach(function (d) {
    d.addEventListener('toggle', function () {
      if (!d.open) return;
      d.querySelectorAll('div.plot').forEach(function (el) { if (drawn.has(el.id)) Plotly.Plots.resize(el); });
      drawVisible(d);
    });
  });
  drawVisible(document).then(function () {  // data-ready: every visible figure has finished drawing
    document.body.setAttribute('data-ready', '1');
  });
})();
"""

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1180px;
       padding: 0 18px 40px; color: #222; }
h1 { font-size: 1.5em; margin: 18px 0 4px; } h2 { font-size: 1.2em; margin-top: 28px;
     border-bottom: 1px solid #ddd; } h3 { font-size: 1.05em; }
table { border-collapse: collapse; margin: 8px 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; vertical-align: top; }
th:first-child, td:first-child { text-align: left; } th { background: #f4f4f4; }
.note { background: #fff8e0; border-left: 4px solid #e0b000; padding: 6px 10px; margin: 8px 0; }
.warn { background: #fdecea; border-left: 4px solid #d62728; padding: 6px 10px; margin: 8px 0; }
.muted { color: #666; font-size: 0.9em; } .plot { width: 100%; }
.slider { display: flex; gap: 12px; align-items: center; margin: 6px 0; }
.slider input { flex: 1; } details { margin: 10px 0; } summary { cursor: pointer; font-weight: 600; }
code { background: #f4f4f4; padding: 0 3px; }
.groups { display: grid; grid-template-columns: repeat(auto-fit, minmax(340px, 1fr)); gap: 18px; align-items: start; }
.group { min-width: 0; overflow-x: auto; border-top: 4px solid #ccc; padding-top: 2px; }
.group h3 { margin: 6px 0; }
"""


def fmt(v, se=None) -> str:
    """A number for a table cell (4 significant figures, integers as they are), with +- its SE."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    if isinstance(v, bool) or isinstance(v, int):
        s = str(v)
    elif isinstance(v, float):
        s = f"{v:.4f}" if 1e-3 <= abs(v) < 1e4 else f"{v:.4g}"
    else:
        return esc(v)
    return s if se is None else f"{s} &plusmn; {fmt(se)}"


def table(header: list, rows: list, cls: str = "") -> str:
    """``rows``: lists of cells, each HTML already escaped by the caller (``esc``, ``fmt``) or an (html, css
    class) pair; the header's cells are text, escaped here."""
    def cell(tag, c):
        if isinstance(c, tuple):
            return f'<{tag} class="{c[1]}">{c[0]}</{tag}>'
        return f"<{tag}>{c}</{tag}>"
    head = "".join(cell("th", esc(h)) for h in header)
    body = "".join("<tr>" + "".join(cell("td", c) for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class Page:
    """Collects HTML parts, figures and sliders; ``render`` writes the one file's text."""

    def __init__(self, title: str):
        self.title, self.parts, self.figures, self.sliders, self.data = title, [], {}, {}, {}

    def add(self, html_text: str) -> None:
        self.parts.append(html_text)

    def _add(self, fig: dict) -> str:
        fid = f"fig{len(self.figures)}"
        self.figures[fid] = plotly_figure(fig)
        return fid

    def figure(self, fig: dict | None) -> str:
        """A placeholder div for ``fig`` (nothing for None)."""
        return "" if fig is None else f'<div class="plot" id="{self._add(fig)}"></div>'

    def slider(self, s: dict, what: str = "step") -> str:
        """A figure with a range input over its frames (``marginals.marginal_slider``)."""
        fid = self._add(s["figure"])
        plot = f'<div class="plot" id="{fid}"></div>'
        sid = f"slider{len(self.sliders)}"
        self.sliders[sid] = {"plot": fid, "frames": plotly_figure(s["frames"]), "labels": s["labels"]}
        k = s["initial"]
        return (f'<div class="slider"><label for="{sid}">{esc(what)}</label><input type="range" id="{sid}" '
                f'min="0" max="{len(s["frames"]) - 1}" step="1" value="{k}" data-plot="{fid}" data-shown="{k}">'
                f'<span id="{sid}-label">{esc(s["labels"][k])}</span></div>{plot}')

    def render(self, plotly_js: str) -> str:
        return "\n".join([
            "<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
            '<meta name="viewport" content="width=device-width, initial-scale=1">',
            '<meta name="generator" content="ddpmlab report">',
            f"<title>{esc(self.title)}</title><style>{STYLE}</style>",
            f"<script>{plotly_js}</script></head><body>",
            *self.parts,
            f'<script type="application/json" id="ddpmlab-figures">{script_json(self.figures)}</script>',
            f'<script type="application/json" id="ddpmlab-sliders">{script_json(self.sliders)}</script>',
            f'<script type="application/json" id="ddpmlab-data">{script_json(self.data)}</script>',
            f"<script>{SCRIPT}</script>", "</body></html>"])

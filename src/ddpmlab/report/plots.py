"""Plotly figures of the report as plain JSON-ready dicts ``{"data": [...], "layout": {...}}`` (no
plotly Python objects: the page draws them with the embedded plotly.js). Numbers are rounded to 4
significant digits and non-finite values become null, which keeps the page small and valid JSON.
"""
from __future__ import annotations

import math

import numpy as np
import torch

DATA_COLOR, MODEL_COLOR, ORACLE_COLOR = "#1f77b4", "#ff7f0e", "#2ca02c"
# one colour per group of runs, in every figure of the report (a single run is drawn in the first); none of
# them is the data's or the oracle's colour
GROUP_COLORS = (MODEL_COLOR, "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f")
DATA_UNITS = "data units"


def num(a, sig: int = 4):
    """An array (any shape) as nested lists of floats rounded to ``sig`` significant digits, None for
    NaN and infinity."""
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 0:
        v = float(a)
        return float(f"{v:.{sig}g}") if math.isfinite(v) else None
    return [num(v, sig) for v in a] if a.ndim > 1 else [float(f"{v:.{sig}g}") if math.isfinite(v) else None
                                                         for v in a.tolist()]


def layout(title: str, xtitle: str = "", ytitle: str = "", height: int = 340, **extra) -> dict:
    out = {"title": {"text": title, "font": {"size": 14}}, "height": height,
           "margin": {"l": 60, "r": 20, "t": 40, "b": 45},
           "xaxis": {"title": {"text": xtitle}}, "yaxis": {"title": {"text": ytitle}},
           "legend": {"orientation": "h", "y": -0.22}, "hovermode": "closest"}
    out.update(extra)
    return out


def line(x, y, name: str, color: str, dash: str = "solid", width: float = 2, sig: int = 4, shape: str = "linear",
         **extra) -> dict:
    return {"type": "scatter", "mode": "lines", "x": num(x), "y": num(y, sig), "name": name,
            "line": {"color": color, "dash": dash, "width": width, "shape": shape}, **extra}


def band(x, lo, hi, color: str, name: str = "") -> dict:
    """A shaded region between ``lo`` and ``hi`` (mean +- sd of a group of runs)."""
    x = np.asarray(x, dtype=np.float64)
    return {"type": "scatter", "mode": "lines", "x": num(np.concatenate([x, x[::-1]])),
            "y": num(np.concatenate([np.asarray(hi), np.asarray(lo)[::-1]])), "fill": "toself",
            "fillcolor": color, "opacity": 0.2, "line": {"width": 0, "color": color}, "hoverinfo": "skip",
            "showlegend": False, "name": name}


def smooth(y, window: int) -> np.ndarray:
    """Moving average over ``window`` points (shorter at the start)."""
    y = np.asarray(y, dtype=np.float64)
    c = np.concatenate([[0.0], np.cumsum(y)])
    i = np.arange(1, len(y) + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


def thin(n: int, keep: int = 1500) -> np.ndarray:
    """Indices of at most ``keep`` evenly spread points of ``n``, the last included."""
    return np.unique(np.linspace(0, n - 1, min(n, keep)).round().astype(int))


def _curve_traces(label, color, runs, axes: dict) -> list:
    """One group's training curve: a single run's loss and its moving average; a group of seeds' mean
    moving average and +- one standard deviation over the seeds."""
    n = min(len(r) for r in runs)
    steps = np.array([row["step"] for row in runs[0][:n]])
    window = max(1, n // 50)
    curves = np.stack([smooth([row["loss"] for row in r[:n]], window) for r in runs])
    idx = thin(n)
    if len(runs) == 1:
        raw = np.array([row["loss"] for row in runs[0][:n]])
        return [line(steps[idx], raw[idx], f"{label}: loss", color, width=1, opacity=0.35, **axes),
                line(steps[idx], curves[0][idx], f"{label}: moving average ({window} steps)", color, **axes)]
    mean, sd = curves.mean(0), curves.std(0, ddof=1)
    return [{**band(steps[idx], (mean - sd)[idx], (mean + sd)[idx], color), **axes},
            line(steps[idx], mean[idx], f"{label}: mean of {len(runs)} seeds (+- sd)", color, **axes)]


def training_curves(series) -> dict:
    """``series``: (label, color, [metrics rows of each run], objective in words). Losses of different
    objectives are different quantities: each objective gets an axis of its own, stacked over one step axis."""
    series = [(label, color, [r for r in runs if r], objective) for label, color, runs, objective in series]
    series = [s for s in series if s[2]]
    objectives = list(dict.fromkeys(s[3] for s in series)) or [""]
    data = []
    for label, color, runs, objective in series:
        i = objectives.index(objective)
        ax = str(i + 1) if i else ""
        data += _curve_traces(label, color, runs, {"xaxis": f"x{ax}", "yaxis": f"y{ax}"})
    if len(objectives) == 1:
        return {"data": data, "layout": layout(f"training loss (metrics.csv): {objectives[0]}", "step",
                                               f"{objectives[0]} loss")}
    k = len(objectives)
    lay = layout(f"training loss (metrics.csv): {k} objectives, one axis each (their values are not comparable)",
                 height=60 + 230 * k)
    for i, objective in enumerate(objectives):
        ax = str(i + 1) if i else ""
        top = 1 - i / k
        lay[f"yaxis{ax}"] = {"domain": [top - 1 / k + 0.09, top - 0.02], "anchor": f"x{ax}",
                             "title": {"text": f"{objective} loss"}}
        lay[f"xaxis{ax}"] = {"anchor": f"y{ax}", "title": {"text": "step" if i == k - 1 else ""},
                             **({"matches": "x"} if i else {})}
    return {"data": data, "layout": lay}


def _hist(x, edges) -> np.ndarray:
    """Density over ``edges`` as a fraction of every point of ``x``: what falls outside is missing mass."""
    x = np.asarray(x).reshape(-1)
    h, _ = np.histogram(x, bins=edges)
    return h / (max(1, len(x)) * np.diff(edges))


def value_range(*arrays, q: float = 0.5, pad: float = 0.08):
    pts = np.concatenate([np.asarray(a, dtype=np.float64).reshape(-1) for a in arrays])
    pts = pts[np.isfinite(pts)]
    lo, hi = np.percentile(pts, [q, 100 - q]) if len(pts) else (-1.0, 1.0)
    p = pad * (hi - lo) + 1e-6
    return float(lo - p), float(hi + p)


def density_1d(view, grid) -> np.ndarray | None:
    """The true density of the data on ``grid`` (data units) where it is known exactly."""
    if view.dist is None or not hasattr(view.dist, "log_prob"):
        return None
    x = torch.as_tensor(np.asarray(grid), dtype=torch.float64).reshape(-1, 1)
    return view.dist.log_prob(x).exp().numpy()


def mosaic(images, nrow: int) -> np.ndarray:
    """(n, 1, H, W) images -> one (rows (H + 1) - 1, nrow (W + 1) - 1) array, NaN gaps, image rows from
    the top (plotly draws row 0 at the bottom, so the caller reverses the y axis)."""
    x = np.asarray(images, dtype=np.float64)
    n, _, H, W = x.shape
    rows = math.ceil(n / nrow)
    out = np.full((rows * (H + 1) - 1, nrow * (W + 1) - 1), np.nan)
    for i in range(n):
        r, c = divmod(i, nrow)
        out[r * (H + 1):r * (H + 1) + H, c * (W + 1):c * (W + 1) + W] = x[i, 0]
    return out


def heatmap(z, xaxis: str = "x", yaxis: str = "y", zmin=-1.0, zmax=1.0, name: str = "") -> dict:
    return {"type": "heatmap", "z": num(z, 3), "xaxis": xaxis, "yaxis": yaxis, "zmin": zmin, "zmax": zmax,
            "colorscale": "Greys", "reversescale": True, "showscale": False, "name": name, "hoverongaps": False}


def two_panels(left_title: str, right_title: str, height: int = 380, square: bool = False, images: bool = False):
    """A layout of two side-by-side panels sharing their axes' ranges."""
    lay = layout("", height=height)
    lay.pop("title")
    lay.update(xaxis={"domain": [0, 0.47]}, xaxis2={"domain": [0.53, 1], "matches": "x"},
               yaxis={}, yaxis2={"anchor": "x2", "matches": "y"},
               annotations=[{"text": t, "x": x, "y": 1.07, "xref": "paper", "yref": "paper", "showarrow": False,
                             "xanchor": "center", "font": {"size": 13}} for t, x in ((left_title, 0.235),
                                                                                    (right_title, 0.765))])
    lay["margin"]["t"] = 35
    if square:
        lay["yaxis"].update(scaleanchor="x", constrain="domain")
        lay["xaxis"]["constrain"] = "domain"
    if images:
        for ax in ("xaxis", "xaxis2", "yaxis", "yaxis2"):
            lay[ax].update(showticklabels=False, showgrid=False, zeroline=False)
        lay["yaxis"]["autorange"] = "reversed"
        lay["yaxis"]["scaleanchor"] = "x"
    return lay


def plotted_window(view) -> list[tuple[float, float]]:
    """The range of each coordinate that ``samples_vs_data`` draws (data units): the training data's, so that
    samples far off stay off the picture and are counted (``off_plot``), not squeezed into it."""
    d = view.data.reshape(len(view.data), -1)[:, :2]
    return [value_range(d[:, i]) for i in range(d.shape[1])]


def outside(points, window) -> int:
    """How many of ``points`` (n, ...) lie outside ``window`` in one of its first coordinates (NaN: outside)."""
    p = np.asarray(points, dtype=np.float64).reshape(len(points), -1)
    inside = np.ones(len(p), dtype=bool)
    for i, (lo, hi) in enumerate(window):
        inside &= (p[:, i] >= lo) & (p[:, i] <= hi)
    return int((~inside).sum())


def off_plot(view) -> dict | None:
    """{"samples", "n", "data", "n_data"}: the samples and training points outside ``plotted_window``
    (None for images, which are drawn whole)."""
    if len(view.data_shape) == 3:
        return None
    w = plotted_window(view)
    return {"samples": outside(view.samples, w), "n": len(view.samples), "data": outside(view.data, w),
            "n_data": len(view.data)}


def off_plot_text(counts: dict) -> str:
    return (f"{counts['samples']} of {counts['n']} samples outside the plotted range "
            f"({counts['data']} of {counts['n_data']} training points)")


def samples_vs_data(view) -> dict:
    """Samples (the run's colour, ``view.color``) beside training data, in data units: histograms over the
    true density (1-D), two scatter panels (points), or two image grids (images)."""
    s, d = view.samples, view.data
    shape = view.data_shape
    if len(shape) == 3:
        lay = two_panels(f"training images ({min(len(d), 64)})", f"samples ({min(len(s), 64)})", height=420,
                         images=True)
        return {"data": [heatmap(mosaic(d[:64], 8)), heatmap(mosaic(s[:64], 8), "x2", "y2")], "layout": lay}
    window, off = plotted_window(view), off_plot(view)
    if math.prod(shape) == 1:
        (lo, hi), = window
        edges = np.linspace(lo, hi, 61)
        mids = (edges[1:] + edges[:-1]) / 2
        data = [{"type": "bar", "x": num(mids), "y": num(_hist(d, edges)), "name": f"data (n={len(d)})",
                 "marker": {"color": DATA_COLOR}, "opacity": 0.5},
                {"type": "bar", "x": num(mids), "y": num(_hist(s, edges)), "name": f"samples (n={len(s)})",
                 "marker": {"color": view.color}, "opacity": 0.5}]
        grid = np.linspace(lo, hi, 400)
        dens = density_1d(view, grid)
        if dens is not None:
            data.append(line(grid, dens, "true density", "black", width=1.5))
        lay = layout(f"samples: {off['samples']} of {off['n']} off the plot", f"x ({DATA_UNITS})", "density",
                     barmode="overlay", bargap=0)
        lay["xaxis"]["range"] = [lo, hi]
        return {"data": data, "layout": lay}
    d2, s2 = d.reshape(len(d), -1)[:, :2], s.reshape(len(s), -1)[:, :2]
    lay = two_panels(f"training data (n={len(d2)})",
                     f"samples: {off['samples']} of {len(s2)} off the plot", height=420, square=True)
    (lo_x, hi_x), (lo_y, hi_y) = window
    lay["xaxis"]["range"], lay["yaxis"]["range"] = [lo_x, hi_x], [lo_y, hi_y]
    for ax, text in (("xaxis", "x1"), ("xaxis2", "x1"), ("yaxis", "x2")):
        lay[ax]["title"] = {"text": f"{text} ({DATA_UNITS})"}
    pts = lambda p, name, color, ax="x", ay="y": {  # noqa: E731
        "type": "scattergl" if len(p) > 4000 else "scatter", "mode": "markers", "x": num(p[:, 0]),
        "y": num(p[:, 1]), "xaxis": ax, "yaxis": ay, "name": name, "marker": {"size": 3, "color": color,
                                                                             "opacity": 0.5}}
    return {"data": [pts(d2, "data", DATA_COLOR), pts(s2, "samples", view.color, "x2", "y2")], "layout": lay}


def class_histogram(view) -> dict | None:
    """Digits: the fraction of samples the classifier puts in each class, beside the held-out images'."""
    s = view.evaluation["model"]["samples"]
    if "class_histogram" not in s:
        return None
    classes = list(range(len(s["class_histogram"])))
    frac = lambda c: (np.asarray(c, dtype=np.float64) / max(1, sum(c)))  # noqa: E731
    data = [{"type": "bar", "x": classes, "y": num(frac(s["class_histogram"])), "name": "samples",
             "marker": {"color": view.color}}]
    if "heldout_class_histogram" in s:
        data.insert(0, {"type": "bar", "x": classes, "y": num(frac(s["heldout_class_histogram"])),
                        "name": "held-out images", "marker": {"color": DATA_COLOR}})
    return {"data": data, "layout": layout("classes of the samples (the digit classifier)", "digit", "fraction",
                                           xaxis={"dtick": 1, "title": {"text": "digit"}})}

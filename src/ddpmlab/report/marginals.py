"""The slider over t: the model's marginal at step t, from its own ancestral reverse chain, against q(x_t).

q(x_t) is exact for mixture data (each component diffused by eq. 4, ``GaussianMixture.diffused``); for
other data it is the forward process applied to training points (x_t = sqrt(abar_t) x_0 + sqrt(1 -
abar_t) eps), which is q(x_t) up to sampling noise. Everything is in the model's units (standardised
columns for a user's file; ``RunView.model_units``), and the axes say so; the chain is drawn in the run's
colour, and each frame's legend counts the chain's points outside the plotted range.

- 1-D: the chain's histogram over the density of q(x_t);
- points: the chain's points over the contours of q(x_t) (first two features);
- images: a grid of the chain's x_t beside forward-noised training images.

``marginal_slider`` returns the figure at t = 0, one list of traces per step (``frames``) and the labels.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from ddpmlab.report.plots import DATA_COLOR, heatmap, layout, line, mosaic, num, outside, two_panels, value_range

GRID = 50  # contour grid per axis (2-D)
BINS = 60  # histogram bins (1-D)


def _exact(view, k: int):
    """q(x_t) at the k-th slider step as a GaussianMixture, or None where it is not known exactly."""
    if view.kind != "mixture":
        return None
    return view.dist.on_path(*view.run.model.marginal_coefficients(view.chain_steps[k]))


def _label(view, k: int) -> str:
    return view.run.model.time_label(view.chain_steps[k])


def _chain_name(points, window) -> str:
    return f"model's chain (n={len(points)}; {outside(points, window)} outside the plotted range)"


def _frames_1d(view):
    chain = view.chain.reshape(len(view.chain), -1)
    extra = [view.reference] if view.reference is not None else [view.data, np.array([-3.5, 3.5])]
    lo, hi = value_range(chain, *extra)
    edges = np.linspace(lo, hi, BINS + 1)
    mids, grid = (edges[1:] + edges[:-1]) / 2, np.linspace(lo, hi, 300)
    frames = []
    for k in range(len(chain)):
        h, _ = np.histogram(chain[k], bins=edges, density=True)
        traces = [{"type": "bar", "x": num(mids), "y": num(h), "name": _chain_name(chain[k], [(lo, hi)]),
                   "marker": {"color": view.color}, "opacity": 0.55}]
        q = _exact(view, k)
        if q is not None:
            dens = q.log_prob(torch.as_tensor(grid, dtype=torch.float64)[:, None]).exp().numpy()
            traces.append(line(grid, dens, "exact q(x_t)", "black", width=1.5))
        else:
            r, _ = np.histogram(view.reference[k].reshape(-1), bins=edges, density=True)
            traces.append(line(mids, r, "q(x_t): training data, forward-noised", DATA_COLOR, width=1.5,
                               shape="hvh"))
        frames.append(traces)
    lay = layout("", f"x_t ({view.model_units})", "density", height=380, barmode="overlay", bargap=0)
    lay["xaxis"]["range"] = [lo, hi]
    return frames, lay


def _frames_points(view):
    chain = view.chain.reshape(view.chain.shape[0], view.chain.shape[1], -1)[..., :2][:, :600]
    ref = None if view.reference is None else view.reference.reshape(*view.reference.shape[:2], -1)[..., :2]
    other = ref if ref is not None else view.data.reshape(len(view.data), -1)[:, :2]
    unit = np.array([-3.5, 3.5])  # q(x_T) is about N(0, I)
    (x0, x1), (y0, y1) = (value_range(chain[..., i], other[..., i], unit) for i in (0, 1))
    xs, ys = np.linspace(x0, x1, GRID), np.linspace(y0, y1, GRID)
    mesh = torch.as_tensor(np.stack(np.meshgrid(xs, ys, indexing="xy"), -1).reshape(-1, 2), dtype=torch.float64)
    frames = []
    for k in range(len(chain)):
        q = _exact(view, k)
        if q is not None:
            z = q.log_prob(mesh).exp().numpy().reshape(GRID, GRID)  # rows: y, columns: x
            name = "exact q(x_t)"
        else:
            xe, ye = np.linspace(x0, x1, GRID + 1), np.linspace(y0, y1, GRID + 1)
            z = np.histogram2d(ref[k][:, 0], ref[k][:, 1], bins=[xe, ye], density=True)[0].T
            name = "q(x_t): training data, forward-noised"
        z = np.where(z < 1e-3 * z.max(), 0.0, z)  # below the lowest contour: written as 0, a smaller page
        frames.append([
            {"type": "contour", "x": num(xs), "y": num(ys), "z": num(z, 2), "name": name, "showscale": False,
             "colorscale": [[0, "#ffffff"], [1, "#2b5fa8"]], "ncontours": 12,
             "contours": {"coloring": "fill", "showlines": False},
             "opacity": 0.75, "hoverinfo": "skip", "showlegend": True},
            {"type": "scatter", "mode": "markers", "x": num(chain[k][:, 0]), "y": num(chain[k][:, 1]),
             "name": _chain_name(chain[k], [(x0, x1), (y0, y1)]), "marker": {"size": 3, "color": view.color,
                                                                               "opacity": 0.6}}])
    lay = layout("", f"x1 ({view.model_units})", f"x2 ({view.model_units})", height=460)
    lay["xaxis"]["range"], lay["yaxis"]["range"] = [x0, x1], [y0, y1]
    lay["yaxis"].update(scaleanchor="x", constrain="domain")
    lay["xaxis"]["constrain"] = "domain"
    return frames, lay


def _frames_images(view):
    frames = []
    for k in range(len(view.chain)):
        frames.append([heatmap(mosaic(view.reference[k][:16], 4), name="q(x_t)"),
                       heatmap(mosaic(view.chain[k][:16], 4), "x2", "y2", name="model")])
    lay = two_panels("q(x_t): training images, forward-noised", "the model's reverse chain at t", height=400,
                     images=True)
    return frames, lay


def marginal_slider(view) -> dict:
    """{"figure", "frames", "labels", "initial"}: the figure shows the frame ``initial`` (t = 0)."""
    shape = view.data_shape
    if len(shape) == 3:
        frames, lay = _frames_images(view)
    elif math.prod(shape) == 1:
        frames, lay = _frames_1d(view)
    else:
        frames, lay = _frames_points(view)
    lay["uirevision"] = "keep"  # zoom and legend state survive moving the slider
    return {"figure": {"data": frames[0], "layout": lay}, "frames": frames,
            "labels": [_label(view, k) for k in range(len(frames))], "initial": 0}

"""Per-class figures of guided sampling (issue 14): one row per class, one column per guidance weight.

- ``class_panels``: for 1-D data, histograms of the model's and the exact guided oracle's samples over
  the true conditional density N(mu_c, S_c); for 2-D (first two features), the samples as points over the
  true conditional's component (its mean marked) and the other classes' means;
- ``class_image_rows``: images, one row per class, the columns' blocks at increasing weight.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ddpmlab.figures.plots2d import _save, image_grid  # noqa: E402


def _np(x) -> np.ndarray:
    x = torch.as_tensor(x).detach().double().cpu()
    return x.reshape(x.shape[0], -1).numpy()


def class_panels(samples: dict, dist, path, title: str = "") -> None:
    """``samples`` {w: {c: (model samples, oracle samples or None)}}: a grid of rows = classes, columns =
    weights, against the true conditional of class c (component c of ``dist``)."""
    weights = list(samples)
    classes = list(samples[weights[0]])
    fig, axes = plt.subplots(len(classes), len(weights), figsize=(3.2 * len(weights), 2.6 * len(classes)),
                             squeeze=False)
    for j, w in enumerate(weights):
        for i, c in enumerate(classes):
            ax = axes[i, j]
            x, xo = samples[w][c]
            comp = dist.component(c)
            if dist.dim == 1:
                m, s = float(comp.means[0, 0]), float(comp.covariances[0, 0, 0].sqrt())
                grid = np.linspace(m - 5 * s, m + 5 * s, 400)
                ax.hist(_np(x)[:, 0], bins=60, density=True, alpha=0.6, color="tab:blue", label="model")
                if xo is not None:
                    ax.hist(_np(xo)[:, 0], bins=60, density=True, histtype="step", color="tab:red", label="oracle")
                ax.plot(grid, np.exp(-(grid - m) ** 2 / (2 * s * s)) / (s * np.sqrt(2 * np.pi)), color="black",
                        lw=1.2, label="true q(x | c)")
            else:
                p = _np(x)
                ax.scatter(p[:, 0], p[:, 1], s=2, alpha=0.3, color="tab:blue", label="model")
                if xo is not None:
                    q = _np(xo)
                    ax.scatter(q[:, 0], q[:, 1], s=2, alpha=0.3, color="tab:red", label="oracle")
                means = dist.means.numpy()
                ax.scatter(means[:, 0], means[:, 1], marker="x", color="grey", s=30)
                ax.scatter(means[c, 0], means[c, 1], marker="x", color="black", s=60, label="mean of c")
                ax.set_aspect("equal")
            ax.set_title(f"class {c}, w = {w:g}", fontsize=9)
            if i == 0 and j == 0:
                ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    _save(fig, path)


def class_image_rows(samples: dict, path, title: str = "") -> None:
    """``samples`` {w: {c: images (n, C, H, W)}}: one row per class, the weights' samples side by side."""
    weights = list(samples)
    classes = list(samples[weights[0]])
    per = min(int(samples[weights[0]][classes[0]].shape[0]), 8)
    rows = [torch.cat([torch.as_tensor(samples[w][c][:per]) for w in weights]) for c in classes]
    label = ", ".join(f"w = {w:g}" for w in weights)
    image_grid(torch.cat(rows), path, nrow=per * len(weights), title=title or f"one row per class; {label}")

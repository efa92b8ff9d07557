"""The seed's five figures, for 1-D data (the first feature is shown for higher dimensions)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ddpmlab.core.fileio import atomic_savefig  # noqa: E402


def _first_feature(x, lead: int = 1) -> np.ndarray:
    """Keep the ``lead`` leading axes and the first data feature: (n, *dims) -> (n,)."""
    x = torch.as_tensor(x).detach().float()
    return x.reshape(*x.shape[:lead], -1)[..., 0].numpy()


def _density_curve(ax, dist, lo, hi):
    grid = torch.linspace(lo, hi, 600, dtype=torch.float64)[:, None]
    ax.plot(grid[:, 0].numpy(), dist.log_prob(grid).exp().numpy(), color="black", lw=1.5, label="true density")


def _save(fig, path):
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def data_hist(data, path, dist=None) -> None:
    """(a) Histogram of the training data."""
    x = _first_feature(data)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(x, bins=60, density=True, color="tab:blue", alpha=0.7, label=f"data (n={len(x)})")
    if dist is not None and dist.dim == 1:
        _density_curve(ax, dist, x.min() - 1, x.max() + 1)
    ax.set_xlabel("x"), ax.set_ylabel("density"), ax.legend(), ax.set_title("Training data")
    _save(fig, path)


def forward_trajectories(traj, path, count: int = 100) -> None:
    """(b) Forward diffusion: x_t against diffusion time t for ``count`` samples; traj (T + 1, n, ...)."""
    x = _first_feature(traj[:, :count], lead=2)  # (T + 1, count)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(np.arange(x.shape[0]), x, lw=0.6, alpha=0.6)
    ax.set_xlabel("diffusion step t"), ax.set_ylabel("x_t"), ax.set_title("Forward diffusion trajectories")
    _save(fig, path)


def loss_curve(history, path) -> None:
    """(c) Training loss on a log scale (the bound per step is positive for the seed's data)."""
    h = np.asarray(history, dtype=float)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(np.arange(1, len(h) + 1), h, lw=1)
    if np.all(h > 0):
        ax.set_yscale("log")
    ax.set_xlabel("iteration"), ax.set_ylabel("loss"), ax.set_title("Training loss")
    _save(fig, path)


def reverse_trajectories(traj, path, count: int = 200) -> None:
    """(d) Generation: x_t against t from T down to 0, coloured by the sign of the final value."""
    x = _first_feature(traj[:, :count], lead=2)  # (T + 1, count), index = paper step
    fig, ax = plt.subplots(figsize=(7, 4))
    steps = np.arange(x.shape[0])
    right = x[0] > 0
    for side, color in ((right, "tab:red"), (~right, "tab:blue")):  # one call per colour: 200 lines in two
        if side.any():
            ax.plot(steps, x[:, side], lw=0.5, alpha=0.6, color=color)
    ax.invert_xaxis()
    ax.set_xlabel("diffusion step t (generation runs from T down to 0)")
    ax.set_ylabel("x_t"), ax.set_title("Reverse (generation) trajectories, coloured by sign of x_0")
    _save(fig, path)


def generated_hist(samples, path, dist=None) -> None:
    """(e) Histogram of generated samples with the true density overlaid."""
    x = _first_feature(samples)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(x, bins=80, density=True, color="tab:orange", alpha=0.7, label=f"generated (n={len(x)})")
    if dist is not None and dist.dim == 1:
        _density_curve(ax, dist, min(x.min(), -8) - 1, max(x.max(), 8) + 1)
    ax.set_xlabel("x"), ax.set_ylabel("density"), ax.legend(), ax.set_title("Generated samples")
    _save(fig, path)


def side_by_side(rows, path, dist=None, title: str | None = None) -> None:
    """Histograms in a grid on one x-axis, each over the true density: ``rows`` is a list of rows, each a
    list of (title, samples) pairs, e.g. [[seed's recipe, exact reverse process on its schedule],
    [recommended recipe, exact reverse process on its schedule]]."""
    xs = [[_first_feature(s) for _, s in row] for row in rows]
    flat = [x for row in xs for x in row]
    both = np.concatenate(flat)  # the x-range of 99.8% of the samples: a few far-off points don't squash it
    lo, hi = min(np.quantile(both, 0.001), -8.0) - 1, max(np.quantile(both, 0.999), 8.0) + 1
    bins = np.linspace(lo, hi, 81)
    ncols = max(len(row) for row in rows)
    fig, axes = plt.subplots(len(rows), ncols, figsize=(4.6 * ncols, 3.2 * len(rows)), sharex=True, sharey=True,
                             squeeze=False)
    for i, row in enumerate(rows):
        for j, (name, _) in enumerate(row):
            ax, x = axes[i][j], xs[i][j]
            color = "tab:gray" if j == len(row) - 1 and len(row) > 1 else ("tab:orange", "tab:green")[i % 2]
            ax.hist(x, bins=bins, density=True, color=color, alpha=0.7, label=f"samples (n={len(x)})")
            if dist is not None and dist.dim == 1:
                _density_curve(ax, dist, lo, hi)
            ax.set_title(name, fontsize=10)
        for ax in axes[i][len(row):]:
            ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("x")
    for row in axes:
        row[0].set_ylabel("density")
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=11)
    _save(fig, path)


def excess_per_step(diagnosis: dict, path, label: str = "model") -> None:
    """Nats the model loses at each step t against the exact reverse process, split into the reverse
    mean's part and the variance's (``ddpmlab.evaluation.diagnosis.diagnose``), the range named shaded."""
    per = diagnosis["per_step"]
    t = np.arange(1, len(per["excess_nats"]) + 1)
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(t, per["mean_nats"], lw=1, color="tab:red", label="reverse mean's part")
    ax.plot(t, per["variance_nats"], lw=1, color="tab:blue", label="variance's part")
    a, b = diagnosis["range"]
    ax.axvspan(a - 0.5, b + 0.5, color="0.85", zorder=0,
               label=f"{100 * diagnosis['share']:.0f}% of the excess: t = {a}..{b}")
    if min(per["mean_nats"] + per["variance_nats"]) > 0:
        ax.set_yscale("log")
    ax.set_xlabel("diffusion step t"), ax.set_ylabel("nats per data point")
    ax.set_title(f"{label}: {diagnosis['excess_nats']:.3f} nats above the exact reverse process, by step")
    ax.legend(fontsize=8)
    _save(fig, path)

"""Figures for data beyond 1-D: points in the plane (the first two features for more columns) and small
images. Every file is written atomically.

- ``scatter_compare``: training data beside samples, on the same axes;
- ``density_compare``: the true density (where known) or the data's 2-D histogram beside the samples';
- ``reverse_gif``: an animated GIF of the reverse process, x_T (noise) to x_0;
- ``image_grid``: a grid of images (n, C, H, W) with values in [-1, 1].
"""
from __future__ import annotations

import io
import math
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ddpmlab.core.fileio import atomic_savefig, atomic_write_bytes  # noqa: E402
from ddpmlab.core.utils import DDPMLabError  # noqa: E402


def _xy(x, lead: int = 1) -> np.ndarray:
    """Keep ``lead`` leading axes and the first two features: (..., *dims) -> (..., 2)."""
    x = torch.as_tensor(x).detach().float().cpu()
    flat = x.reshape(*x.shape[:lead], -1)
    if flat.shape[-1] < 2:
        raise DDPMLabError("2-D figures need at least 2 features per sample (use the 1-D figures)")
    return flat[..., :2].numpy()


def _limits(*arrays, q: float = 0.5, margin: float = 0.1) -> tuple:
    """Axis limits covering the central 99 % of every array's points, plus a margin: ((x0, x1), (y0, y1)).
    Never narrower than a millionth of the values' size: a constant feature (a column of 5s, in float32)
    still gets bins of distinct edges."""
    pts = np.concatenate([a.reshape(-1, 2) for a in arrays])
    pts = pts[np.isfinite(pts).all(1)]
    lo, hi = np.percentile(pts, q, axis=0), np.percentile(pts, 100 - q, axis=0)
    pad = margin * (hi - lo) + 1e-6 * np.maximum(1.0, np.maximum(abs(lo), abs(hi)))
    return (float(lo[0] - pad[0]), float(hi[0] + pad[0])), (float(lo[1] - pad[1]), float(hi[1] + pad[1]))


def _density_2d(pts: np.ndarray, xe: np.ndarray, ye: np.ndarray) -> np.ndarray:
    """The 2-D histogram of ``pts`` as a density over the points inside the edges: zero everywhere when
    none is (numpy's ``density=True`` divides 0 by 0 there, with a warning)."""
    h, _, _ = np.histogram2d(pts[:, 0], pts[:, 1], bins=[xe, ye])
    inside = h.sum()
    return h / (inside * np.outer(np.diff(xe), np.diff(ye))) if inside else h


def _save(fig, path) -> None:
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def scatter_compare(data, samples, path, title: str = "", max_points: int = 5000) -> None:
    """Training data (left) beside generated samples (right), same axes."""
    d, s = _xy(data)[:max_points], _xy(samples)[:max_points]
    xlim, ylim = _limits(d)
    fig, axes = plt.subplots(1, 2, figsize=(9, 4.5), sharex=True, sharey=True)
    for ax, pts, label, color in ((axes[0], d, "data", "tab:blue"), (axes[1], s, "samples", "tab:orange")):
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, color=color, linewidths=0)
        ax.set_title(f"{label} (n={len(pts)})"), ax.set_xlim(*xlim), ax.set_ylim(*ylim)
        ax.set_xlabel("x1"), ax.set_aspect("equal", adjustable="box")
    axes[0].set_ylabel("x2")
    if title:
        fig.suptitle(title, parse_math=False)  # a title names the data (a file's path may hold '$')
    _save(fig, path)


def density_compare(data, samples, path, dist=None, bins: int = 60, title: str = "") -> None:
    """Left: the true density exp(log q) on a grid where ``dist`` has ``log_prob`` (2-D data), else the
    data's 2-D histogram; right: the samples' 2-D histogram; same axes and colour scale."""
    d, s = _xy(data), _xy(samples)
    xlim, ylim = _limits(d)
    xe, ye = np.linspace(*xlim, bins + 1), np.linspace(*ylim, bins + 1)
    h_s = _density_2d(s, xe, ye)
    if dist is not None and hasattr(dist, "log_prob") and math.prod(getattr(dist, "event_shape", (0,))) == 2:
        xc, yc = (xe[1:] + xe[:-1]) / 2, (ye[1:] + ye[:-1]) / 2
        grid = torch.tensor(np.stack(np.meshgrid(xc, yc, indexing="ij"), -1).reshape(-1, 2), dtype=torch.float64)
        left, left_title = dist.log_prob(grid).exp().reshape(bins, bins).numpy(), "true density"
    else:
        left = _density_2d(d, xe, ye)
        left_title = f"data histogram (n={len(d)})"
    vmax = max(float(left.max()), 1e-12)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), sharex=True, sharey=True, layout="constrained")
    for ax, img, label in ((axes[0], left, left_title), (axes[1], h_s, f"samples histogram (n={len(s)})")):
        im = ax.imshow(img.T, origin="lower", extent=(*xlim, *ylim), cmap="viridis", vmin=0, vmax=vmax,
                       aspect="equal", interpolation="nearest")
        ax.set_title(label), ax.set_xlabel("x1")
    axes[0].set_ylabel("x2")
    fig.colorbar(im, ax=axes, shrink=0.8, label="density")
    if title:
        fig.suptitle(title, parse_math=False)
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)


def _grid_array(images, nrow: int) -> np.ndarray:
    """(n, C, H, W) in [-1, 1] -> one (rows (H + 1) - 1, nrow (W + 1) - 1, C) array in [0, 1], the images
    separated by one-pixel gaps."""
    x = ((torch.as_tensor(images).detach().float().cpu().clamp(-1, 1) + 1) / 2).numpy()
    if x.ndim != 4:
        raise DDPMLabError(f"an image grid needs images (n, C, H, W), got shape {x.shape}")
    n, C, H, W = x.shape
    rows = math.ceil(n / nrow)
    out = np.full((rows * (H + 1) - 1, nrow * (W + 1) - 1, C), 0.2, dtype=np.float32)  # light grey gaps
    for i in range(n):
        r, c = divmod(i, nrow)
        out[r * (H + 1):r * (H + 1) + H, c * (W + 1):c * (W + 1) + W] = x[i].transpose(1, 2, 0)
    return out


def _show_grid(ax, grid: np.ndarray) -> None:
    if grid.shape[-1] == 1:
        ax.imshow(grid[..., 0], cmap="gray_r", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(grid[..., :3], interpolation="nearest")
    ax.set_axis_off()


def image_grid(images, path, nrow: int = 10, title: str = "") -> None:
    """A grid of images (n, C, H, W) with values in [-1, 1] (clipped); one channel is drawn in grey."""
    grid = _grid_array(images, nrow)
    fig, ax = plt.subplots(figsize=(0.6 * nrow + 0.4, 0.6 * grid.shape[0] / grid.shape[1] * nrow + 0.6))
    _show_grid(ax, grid)
    if title:
        ax.set_title(title, parse_math=False)
    _save(fig, path)


def _frame(fig) -> "Image.Image":  # noqa: F821
    from PIL import Image

    fig.canvas.draw()
    return Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3].copy())


def reverse_gif(traj, path, frames: int = 40, fps: int = 10, max_points: int = 2000, nrow: int = 8,
                title: str = "reverse process") -> None:
    """Animated GIF of generation from a trajectory (T + 1, n, *dims) indexed by paper step
    (``traj[T]`` = x_T noise, ``traj[0]`` = x_0 samples): ``frames`` steps from T down to 0, spaced
    quadratically (denser near 0), the last held for a second. Points (the first two features) for flat
    data; for (C, H, W) data a grid of ``nrow`` x ``nrow`` images, scaled up six times, one channel drawn
    dark on light."""
    traj = torch.as_tensor(traj).detach().float().cpu()
    T = traj.shape[0] - 1
    # quadratic spacing: most frames where the structure forms, at small t
    steps = sorted({round(T * (1 - i / max(frames - 1, 1)) ** 2) for i in range(frames)}, reverse=True)
    pil_frames = []
    if traj.dim() == 5:  # images: each frame is the grid itself, scaled up (no axes, fast)
        from PIL import Image

        for t in steps:
            grid = _grid_array(traj[t, :nrow * nrow], nrow)
            pixels = (255 * (1 - grid) if grid.shape[-1] == 1 else 255 * grid).round().astype(np.uint8)
            img = Image.fromarray(pixels[..., 0] if grid.shape[-1] == 1 else pixels[..., :3])
            pil_frames.append(img.resize((img.width * 6, img.height * 6), Image.NEAREST))
    else:
        fig, ax = plt.subplots(figsize=(5, 5))
        pts = _xy(traj[:, :max_points], lead=2)  # (T + 1, n, 2)
        xlim, ylim = _limits(pts[0], pts[T])
        scat = ax.scatter(pts[T, :, 0], pts[T, :, 1], s=3, alpha=0.6, color="tab:orange", linewidths=0)
        ax.set_xlim(*xlim), ax.set_ylim(*ylim), ax.set_aspect("equal", adjustable="box")
        ax.set_xlabel("x1"), ax.set_ylabel("x2")
        for t in steps:
            scat.set_offsets(pts[t])
            ax.set_title(f"{title}: t = {t}", parse_math=False)
            pil_frames.append(_frame(fig))
        plt.close(fig)
    buf = io.BytesIO()
    durations = [1000 // fps] * (len(pil_frames) - 1) + [1000]
    pil_frames[0].save(buf, format="GIF", save_all=True, append_images=pil_frames[1:], duration=durations, loop=0)
    atomic_write_bytes(path, buf.getvalue())


def write_figures(out, data, traj, dist=None, title: str = "") -> list[str]:
    """The figures for one model, in data units: ``traj`` (T + 1, n, *dims) from x_0 (index 0) to x_T
    and training ``data`` (N, *dims). Images: samples.png and reverse.gif; other data with at least two
    features: scatter.png, density.png and reverse.gif. Returns the file names written into ``out``."""
    from pathlib import Path

    out = Path(out)
    samples = traj[0]
    with warnings.catch_warnings():
        # the title names the data, and a file's path may hold characters no installed font has (CJK, emoji):
        # matplotlib draws a box for each and warns on every draw; the box is enough
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .*missing from font", category=UserWarning)
        if samples.dim() == 4:
            image_grid(samples[:100], out / "samples.png", nrow=10, title=title)
            reverse_gif(traj, out / "reverse.gif", title=title or "reverse process")
            return ["samples.png", "reverse.gif"]
        scatter_compare(data, samples, out / "scatter.png", title=title)
        density_compare(data, samples, out / "density.png", dist=dist, title=title)
        reverse_gif(traj, out / "reverse.gif", title=title or "reverse process")
    return ["scatter.png", "density.png", "reverse.gif"]

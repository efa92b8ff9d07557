"""Per-class evaluation of a class-conditional model under classifier-free guidance, against the exact
conditional of labelled mixture data (issue 14).

For class c and weight w: the model's samples, and the exact guided oracle's sampled the same way,
each against the true conditional q(x_0 | c) = N(mu_c, S_c) by W1 (sliced W1 in more than one
dimension), beside the floor (the W1 of a true sample of the same size); the fraction of samples whose
exact class posterior q(c' | x) picks c (``accuracy``); in 1-D the mean and standard deviation of each.
At w = 0 the oracle is the true conditional itself; at w > 0 the oracle's distance is the distortion
guidance causes with a perfect network, the model's the distortion plus the network's error. Beside
them, each one's W1 to the tilted target p(x | c)^g p(x)^(1 - g) the method aims at (g = 1 + w for CFG,
interval CFG and autoguidance; ddpmlab's eps_w = (1 + w) eps(x, c) - w eps(x)), with its own floor: what
the method itself misses with exact scores (the oracle's) and what the network adds (the model's).
"""
from __future__ import annotations

import torch

from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.evaluation.metrics import w1
from ddpmlab.evaluation.metrics_nd import sliced_w1
from ddpmlab.models.conditional_oracle import class_posterior
from ddpmlab.models.family import family_of
from ddpmlab.evaluation.tilted import TiltedTarget
from ddpmlab.models.guidance_methods import guide, method_named
from ddpmlab.sampling.api import draw_samples


def _distance(dist: GaussianMixture, x: torch.Tensor, ref: torch.Tensor, generator) -> float:
    if dist.dim == 1:
        return w1(x.reshape(-1), ref.reshape(-1))
    return float(sliced_w1(x.reshape(x.shape[0], -1), ref.reshape(ref.shape[0], -1), generator=generator))


def _summary(dist, c, x, ref, generator) -> dict:
    x = x.reshape(x.shape[0], -1).double()
    out = {"w1": _distance(dist, x, ref, generator),
           "accuracy": float((class_posterior(dist, x).argmax(1) == c).double().mean())}
    if dist.dim == 1:
        out["mean"], out["std"] = float(x.mean()), float(x.std())
    return out


def evaluate_classes(model, dist: GaussianMixture, classes, w: float, n: int, generator: torch.Generator,
                     sampler: str = "ancestral", steps: int = 0, eta: float = 0.0, ode_solver: str = "dpm_solver",
                     oracle: bool = True, n_ref: int = 100_000, keep: dict | None = None,
                     grid: str = "uniform", method: str = "cfg", interval=None, weak=None) -> dict:
    """{class c: {"model": {w1, w1_tilted, accuracy[, mean, std]}, "oracle": {...}, "floor": W1 of a true
    sample, "tilted_floor", "method", "g", "true": {mean, std} (1-D)}} for ``n`` samples per class at
    guidance weight ``w`` of the guidance ``method`` (``ddpmlab.models.guidance_methods``; ``interval``
    and ``weak`` go to it), each sampled by ``sampler``; class c of the model is component c of ``dist``.
    The oracle is the same method on the exact scores (``Family.labelled_oracle``; for autoguidance the
    exact model guided away from ``weak``). Distances are to ``n_ref`` true draws of the conditional and
    of the tilted target p(x | c)^g p(x)^(1 - g) at the method's g (``ddpmlab.evaluation.tilted``; 1-D and
    2-D), the floors those of ``n`` true draws (what a perfect sampler would score). ``keep``, a dict,
    receives the samples {c: (model's, oracle's or None)} for figures."""
    K = dist.num_components
    bad = [c for c in classes if not 0 <= int(c) < K]
    if bad:
        raise DDPMLabError(f"class {bad[0]} out of range: the data have classes 0..{K - 1}")
    name, spec = method_named(method)
    spec.check_sampler(name, sampler)
    guided = guide(model, w, name, interval, weak)
    exact = guide(family_of(model).labelled_oracle(model, dist), w, name, interval, weak) if oracle else None
    report = {}
    for c in classes:
        c = int(c)
        cond = torch.full((n,), c, dtype=torch.long)
        comp = dist.component(c)
        ref = comp.sample(n_ref, generator, dtype=torch.float64)
        row = {"floor": _distance(dist, comp.sample(n, generator, dtype=torch.float64), ref, generator)}
        x = draw_samples(guided, n, sampler, steps, eta, generator, ode_solver=ode_solver, cond=cond, grid=grid)
        row["model"] = _summary(dist, c, x, ref, generator)
        xo = None
        if oracle:
            xo = draw_samples(exact, n, sampler, steps, eta, generator, ode_solver=ode_solver, cond=cond, grid=grid)
            row["oracle"] = _summary(dist, c, xo, ref, generator)
        if keep is not None:
            keep[c] = (x, xo)
        if dist.dim == 1:
            row["true"] = {"mean": float(comp.means[0, 0]), "std": float(comp.covariances[0, 0, 0].sqrt())}
        row.update(method=name, g=spec.tilt(w))
        if dist.dim <= 2:
            _tilted(row, dist, c, x, xo, n, min(n_ref, N_REF_TILTED[dist.dim]), generator)
        report[c] = row
    return report


N_REF_TILTED = {1: 100_000, 2: 20_000}  # reference draws of the tilted target (2-D: importance resampling)


def _tilted(row: dict, dist, c: int, x, xo, n: int, n_ref: int, generator) -> None:
    """The W1 of the model's (and oracle's) samples to the tilted target at ``row["g"]``, and its floor."""
    target = TiltedTarget(dist, c, row["g"])
    ref = target.sample(n_ref, generator)
    row["tilted_floor"] = _distance(dist, target.sample(n, generator), ref, generator)
    for key, samples in (("model", x), ("oracle", xo)):
        if samples is not None:
            row[key]["w1_tilted"] = _distance(dist, samples.reshape(n, -1).double(), ref, generator)


def format_classes(report: dict, w: float) -> str:
    """The per-class report as a table (mixtures: ``evaluate_classes``; digits: ``digit_classes``)."""
    if report and "fd" in next(iter(report.values())):
        return "\n".join([f"guidance w = {w:g}", f"{'class':>5}  {'classifier agrees':>17}  {'FD':>8}  {'floor':>8}"]
                         + [f"{c:>5}  {r['accuracy']:17.4f}  {r['fd']:8.2f}  {r['fd_floor']:8.2f}"
                            for c, r in report.items()])
    first = next(iter(report.values()), {})
    lines = [f"guidance w = {w:g}" + (f" ({first['method']}; tilted target p(x|c)^g p(x)^(1-g), g = {first['g']:g})"
                                      if "method" in first else ""),
             f"{'class':>5}  {'W1 model':>9}  {'W1 oracle':>9}  {'floor':>7}  {'tilt model':>10}  {'tilt oracle':>11}  "
             f"{'tilt floor':>10}  {'acc model':>9}  {'acc oracle':>10}"]
    nan = float("nan")
    for c, r in report.items():
        o = r.get("oracle", {})
        lines.append(f"{c:>5}  {r['model']['w1']:9.4f}  {o.get('w1', nan):9.4f}  {r['floor']:7.4f}  "
                     f"{r['model'].get('w1_tilted', nan):10.4f}  {o.get('w1_tilted', nan):11.4f}  "
                     f"{r.get('tilted_floor', nan):10.4f}  {r['model']['accuracy']:9.4f}  "
                     f"{o.get('accuracy', nan):10.4f}")
        if "true" in r:
            lines.append(f"{'':>5}  mean/std: model {r['model']['mean']:.3f}/{r['model']['std']:.3f}, oracle "
                         f"{o.get('mean', nan):.3f}/{o.get('std', nan):.3f}, true "
                         f"{r['true']['mean']:.3f}/{r['true']['std']:.3f}")
    return "\n".join(lines)


@torch.no_grad()
def digit_classes(samples: dict, classifier) -> dict:
    """Per requested digit c, for ``samples`` {c: images (n, 1, 8, 8)}: the fraction the project's digit
    classifier calls c, and the Frechet distance in its features to the held-out images of digit c beside
    the floor (the training images of digit c to the same held-out images)."""
    from ddpmlab.data.digits import digits_split
    from ddpmlab.evaluation.fid import frechet_distance_features

    classifier.eval()
    train, train_y = digits_split("train")
    held, held_y = digits_split("heldout")
    out = {}
    for c, x in samples.items():
        x = torch.as_tensor(x, dtype=torch.float32).reshape(-1, 1, 8, 8).clamp(-1.0, 1.0)
        f = classifier.features(x)
        f_held, f_train = classifier.features(held[held_y == c]), classifier.features(train[train_y == c])
        out[c] = {"accuracy": float((classifier.head(f).argmax(1) == c).float().mean()),
                  "fd": frechet_distance_features(f, f_held), "fd_floor": frechet_distance_features(f_train, f_held)}
    return out

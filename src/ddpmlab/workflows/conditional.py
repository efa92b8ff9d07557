"""Class-conditional runs from the command line: ``--class C[,C...]`` resolved against the run's classes,
samples per class under classifier-free guidance, and the per-class exact evaluation (issue 14)."""
from __future__ import annotations

import torch

from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.evaluation.guidance import digit_classes, evaluate_classes
from ddpmlab.figures.guidance import class_image_rows, class_panels
from ddpmlab.models.guidance import Guided, num_classes_of
from ddpmlab.models.guidance_methods import guide
from ddpmlab.runs.format import Run
from ddpmlab.sampling.api import draw_samples


def resolve_classes(text: str, run: Run) -> list[int]:
    """``0,1,2`` or the label values a file's run recorded (``cat,dog``) as class indices of ``run``."""
    k = num_classes_of(run.model)
    if k < 1:
        raise DDPMLabError("--class: this run's network is unconditional (trained without class labels)")
    names = list(run.info.get("data", {}).get("classes") or [str(i) for i in range(k)])
    out = []
    for token in (s.strip() for s in str(text).split(",")):
        if token in names:
            out.append(names.index(token))
            continue
        try:
            c = int(token)
        except ValueError:
            raise DDPMLabError(f"--class {token!r} is not a class of this run (classes: {', '.join(names)})") from None
        if not 0 <= c < k:
            raise DDPMLabError(f"--class {c} out of range: this run has classes 0..{k - 1} ({', '.join(names)})")
        out.append(c)
    return out


def guided_model(run: Run, classes: list[int] | None, guidance: float):
    """The model to sample, and the condition for ``n`` samples per class (None without classes)."""
    if not classes:
        if guidance:
            raise DDPMLabError("--guidance needs --class (the classes to guide towards)")
        return run.model
    return Guided(run.model, guidance)


def class_labels(classes: list[int] | None, n: int) -> torch.Tensor | None:
    """n labels per class, classes in the order given: (n * len(classes),)."""
    if not classes:
        return None
    return torch.tensor(classes, dtype=torch.long).repeat_interleave(n)


def evaluate_run_classes(run: Run, classes: list[int], weights: list[float], n: int, generator: torch.Generator,
                         sampler: str | None = None, steps: int | None = None, figure=None, method: str = "cfg",
                         interval=None, weak: Run | None = None) -> dict:
    """{w: per-class report} for every guidance weight of the guidance ``method`` (``interval``: its noise
    levels; ``weak``: the run to guide with, for autoguidance): the model's and the same method's on the
    exact scores, each one's W1 to the true conditional and to the tilted target, the floors, the exact
    posterior's accuracy (``evaluation.guidance``). ``figure``: a path for the per-class panels (rows =
    classes, columns = weights)."""
    s = run.cfg.sample
    weak_model = None if weak is None else weak.model
    if run.info.get("data", {}).get("name") == "digits":
        return _digit_classes(run, classes, weights, n, generator, sampler or s.sampler,
                              s.steps if steps is None else steps, figure,
                              lambda m, w: guide(m, w, method, interval, weak_model))
    if not isinstance(run.dist, GaussianMixture):
        raise DDPMLabError("per-class evaluation needs labelled Gaussian-mixture data or digits (data.labels = true)")
    kept = {w: {} for w in weights}
    report = {w: evaluate_classes(run.model, run.dist, classes, w, n, generator, sampler or s.sampler,
                                  s.steps if steps is None else steps, s.eta, s.ode_solver, keep=kept[w], grid=s.grid,
                                  method=method, interval=interval, weak=weak_model)
              for w in weights}
    if figure is not None and run.dist.dim <= 2:
        class_panels(kept, run.dist, figure, title="per class: model, exact guided oracle, true conditional")
    return report


def _digit_classes(run: Run, classes, weights, n, generator, sampler, steps, figure, guided) -> dict:
    """Digits: per requested class, the digit classifier's agreement and the per-class Frechet distance."""
    from ddpmlab.evaluation.digit_classifier import load_classifier

    classifier, _ = load_classifier()
    cond = class_labels(classes, n)
    report, images = {}, {}
    for w in weights:
        x = draw_samples(guided(run.model, w), cond.numel(), sampler, steps, run.cfg.sample.eta, generator,
                         ode_solver=run.cfg.sample.ode_solver, cond=cond, grid=run.cfg.sample.grid)
        images[w] = {c: x[cond == c] for c in classes}
        report[w] = digit_classes(images[w], classifier)
    if figure is not None:
        class_image_rows(images, figure)
    return report

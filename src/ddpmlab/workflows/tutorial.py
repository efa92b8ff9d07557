"""``ddpmlab tutorial``: the seed's whole system end to end, then what went wrong and what does better.

1. The seed's recipe, faithfully (the packaged ``tutorial`` config): train, sample, the five figures, the
   whole-trajectory bound, the exact evaluation, and the exact per-step diagnosis of where it loses nats
   against the exact reverse process (``ddpmlab.workflows.tutorial_recipes.seed_recipe``).
2. The recommended recipe (the packaged ``default`` config) on the same mixture: its generated histogram
   and reverse trajectories, written as a run of its own in ``DIR/recommended``.
3. Each beside the exact reverse process on its own schedule (``MixtureOracle``, sampled like a model) over
   the true density (``comparison.png``), ``metrics.json`` for both, and three lines of verdict.

Layout of ``DIR``: the seed's run and figures at the top (as before the recommended recipe was added),
``recommended/`` (a run: ``ddpmlab evaluate DIR/recommended`` works), ``comparison.png``, ``metrics.json``.
"""
from __future__ import annotations

from pathlib import Path

from ddpmlab.core.fileio import atomic_write_json, ensure_writable_dir
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.figures import plots
from ddpmlab.report.build import build_report
from ddpmlab.workflows.tutorial_background import recommended_beside
from ddpmlab.workflows.tutorial_recipes import recommended_recipe, seed_recipe

RECIPES = ("seed", "recommended", "both")
RECOMMENDED_DIR = "recommended"
RECOMMENDED_FIGURES = ("generated_hist.png", "reverse_trajectories.png")  # in DIR/recommended
COMPARISON = "comparison.png"
REPORT = "report.html"  # the interactive page of the tutorial's runs
NOTEBOOK = "docs/tutorial.ipynb"  # in the repository: the same story, step by step, with the library's API


def run_tutorial(out, overrides=(), progress: bool = True, recipe: str = "both", recommended_overrides=()) -> dict:
    """Run the tutorial into ``out``. ``recipe``: "seed", "recommended" or "both". ``overrides`` are
    ``--set``-style overrides of the seed's ``tutorial`` config, ``recommended_overrides`` of the ``default``
    config. Returns ``seed`` (its metrics with the ``evaluation``) and ``recommended`` (its metrics), each
    None when not run (each holds the exact reverse process's sample metrics on its schedule under
    ``oracle``), ``report`` (the report page's path or None) and ``out``."""
    if recipe not in RECIPES:
        raise DDPMLabError(f"recipe must be one of {', '.join(RECIPES)}, got {recipe!r}")
    out = ensure_writable_dir(out)
    seed = rec = None
    if recipe == "both":  # the recommended recipe trains beside the seed's, on a core it leaves idle
        with recommended_beside(out / RECOMMENDED_DIR, recommended_overrides, progress) as recommended:
            seed = seed_recipe(out, overrides, progress)
            rec = recommended()
    elif recipe == "seed":
        seed = seed_recipe(out, overrides, progress)
    else:
        rec = recommended_recipe(out / RECOMMENDED_DIR, recommended_overrides, progress)

    grid = [[(f"{name} (W1 {part['metrics']['w1']:.2f})", part["samples"]),
             (f"exact reverse process, its schedule (W1 {part['metrics']['oracle']['w1']:.2f})",
              part["oracle_samples"])]
            for name, part in (("the seed's recipe", seed), ("recommended recipe", rec)) if part is not None]
    first = seed or rec
    plots.side_by_side(grid, out / COMPARISON, first["dist"], title="generated samples over the true density "
                       f"(a true sample scores W1 {first['metrics']['w1_noise_floor']:.2f})")
    metrics = dict(seed["metrics"]) if seed is not None else {}
    if rec is not None:
        metrics["recommended"] = rec["metrics"]
    atomic_write_json(out / "metrics.json", metrics)
    result = {"out": out, "seed": None if seed is None else {**seed["metrics"], "evaluation": seed["evaluation"]},
              "recommended": None if rec is None else rec["metrics"]}
    result["report"] = report_page(out, result)
    return result


def report_page(out: Path, result: dict) -> Path | None:
    """The report page (``ddpmlab report``) of the tutorial's runs, side by side, written to
    ``out/report.html``: the seed's run is ``out`` itself, the recommended one ``out / RECOMMENDED_DIR``;
    ``result`` is what ``run_tutorial`` returns. Returns the page's path."""
    runs = [d for d, part in ((out, result["seed"]), (out / RECOMMENDED_DIR, result["recommended"]))
            if part is not None]
    page = out / REPORT
    build_report(runs, page, force=True)
    return page


def pointer_lines(result: dict) -> list[str]:
    """Where the learner goes next: the files, the report page (when written) and the notebook."""
    out = result["out"]
    lines = [f"figures, metrics.json and evaluation.json written to {out}" if result["seed"] is not None
             else f"metrics.json written to {out}"]
    if result["recommended"] is not None:
        lines.append(f"the recommended recipe's run and figures: {out / RECOMMENDED_DIR}")
    lines.append(f"side by side with the exact reverse process: {out / COMPARISON}")
    if result.get("report") is not None:
        lines.append(f"report: {result['report']}")
    lines.append(f"step by step, with the library's API: the notebook {NOTEBOOK} (in the repository)")
    return lines

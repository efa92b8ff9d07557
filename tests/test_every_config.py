"""Every shipped config, at a tiny budget, goes through train -> sample (every sampler and ODE solver its
family serves) -> evaluate -> report with exit 0, and its evaluation puts at least one metric beside its
floor (issue 22: every command on every run, whatever its family and data)."""
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest

import ddpmlab as dl
from ddpmlab.cli import main
from ddpmlab.config.schema import resolve_config_path
from ddpmlab.config.sections import ModelConfig
from ddpmlab.evaluation.summary import metric_rows

CONFIGS = sorted(p.stem for p in (Path(dl.__file__).parent / "configs").glob("*.toml"))
TINY = ["train.iters=3", "train.batch_size=32", "model.width=8", "model.depth=1", "model.hidden=2",
        "train.checkpoint_every=0"]


def _written(name: str) -> dict:
    """The config's tables as written (one that needs a teacher does not validate without one)."""
    return tomllib.loads(resolve_config_path(name).read_text())


def _family(name: str):
    """The config's family as written, or the schema's default when it names none."""
    return dl.FAMILIES.get(_written(name).get("model", {}).get("family", ModelConfig().family))


def _teacher_data(name: str) -> str | None:
    """The data a config's teacher must share when its objective distils one (``needs_teacher``), else None."""
    written = _written(name)
    objective = dl.OBJECTIVES.get(written.get("train", {}).get("objective", "simple"))
    return written.get("data", {}).get("name", "seed_mixture") if getattr(objective, "needs_teacher", False) else None


@pytest.fixture(scope="module")
def teachers(tmp_path_factory):
    """data name -> a tiny finished flow run on it, trained the first time a config asks."""
    made = {}

    def teacher(data: str) -> str:
        if data not in made:
            out = tmp_path_factory.mktemp("teacher") / data
            sets = TINY + [f"data.name={data}", "sample.steps=2"]
            assert main(["train", "--config", "flow", *[a for s in sets for a in ("--set", s)], "--out", str(out)]) == 0
            made[data] = str(out)
        return made[data]

    return teacher


def _sets(name: str) -> list[str]:
    steps = _family(name).default_steps  # all of a DDPM's 12 steps (the seed's cannot be respaced)
    sets = TINY + [f"sample.steps={steps}", "schedule.steps=12"]
    return [a for s in sets for a in ("--set", s)]


def _samplers(name: str) -> list[list[str]]:
    """Every registered sampler the run's family serves, and for ``ode`` every solver it serves."""
    family = _family(name)
    out = []
    for sampler in dl.SAMPLERS:
        if not family.serves(dl.SAMPLERS.get(sampler)):
            continue
        if sampler == "ode":
            out += [["--sampler", "ode", "--ode-solver", s, "--steps", "4"] for s in dl.ODE_SOLVERS
                    if family.serves(dl.ODE_SOLVERS.get(s))]
        else:  # the family's default steps: all of a DDPM's (the seed's networks cannot be respaced)
            out.append(["--sampler", sampler, "--steps", str(family.default_steps)])
    return out


def test_every_shipped_config_is_covered():
    assert {"default", "flow", "moons_flow", "eight_gaussians_flow", "digits", "tutorial"} <= set(CONFIGS)


@pytest.mark.parametrize("name", CONFIGS)
def test_config_trains_samples_evaluates_and_reports(tmp_path, name, capsys, teachers):
    run = tmp_path / "run"
    data = _teacher_data(name)  # a config that distils a teacher gets a tiny one on its data
    teacher = ["--set", f"train.teacher={teachers(data)}"] if data is not None else []
    assert main(["train", "--config", name, *_sets(name), *teacher, "--out", str(run)]) == 0
    for i, args in enumerate(_samplers(name)):
        out = tmp_path / f"x{i}.npy"
        assert main(["sample", str(run), "-n", "8", *args, "--out", str(out)]) == 0, args
        x = np.load(out)
        assert x.shape[0] == 8 and np.isfinite(x).all(), args
    few = ["--samples", "64", "--n-bound", "16", "--n-ode", "0"]
    assert main(["evaluate", str(run), *few]) == 0
    ev = json.loads((run / "evaluation.json").read_text())
    beside = [r for r in metric_rows(ev) if r["model"] is not None and r["floor"] is not None]
    assert beside, f"{name}: no metric beside its floor"
    assert main(["report", str(run), "--out", str(tmp_path / "report.html"), *few]) == 0
    page = (tmp_path / "report.html").read_text()
    assert beside[0]["label"].split(" (")[0] in page
    capsys.readouterr()

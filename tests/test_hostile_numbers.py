"""Hostile numbers (issue 21, class 8): every number a flag or a config key takes is checked where its range
is defined (``config.schema`` for config keys and the flags that set them, ``sampling.options`` for the
samplers' options, ``models.guidance`` for the guidance weight, ``config.checks`` for the schedule, the
data's reader for the data's magnitude), so NaN, infinities and absurd sizes end in one line and exit 2
with nothing written; a NaN that training itself produces is exit 3, saying what is left; finite data of
any float32 magnitude trains when standardised.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

import numpy as np
import pytest

import ddpmlab as dl
from hostile_support import TINY, fixed_memory, run_main, tree


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A DDPM run, a flow run, a class-conditional mixture run, and data files of huge and tiny values."""
    root = tmp_path_factory.mktemp("numbers")
    rng = np.random.default_rng(0)
    np.save(root / "huge.npy", rng.choice([-1e38, 1e38], (300, 2)) * rng.uniform(0.5, 1.0, (300, 2)))
    np.save(root / "tiny.npy", rng.normal(0.0, 1e-40, (300, 2)))
    for name, args in (("ddpm", []), ("flow", ["--config", "flow"]), ("cond", ["--set", "data.labels=true"])):
        code, _, err = run_main("train", "--out", root / name, *TINY, *args)
        assert code == 0, err
    return root


@dataclass
class Case:
    id: str
    argv: list  # "{ddpm}", "{flow}", "{cond}", "{root}" filled in with the module's runs
    needle: str
    code: int = 2


def _flags(prefix: list, option: str, values, needle: str, run: str = "{ddpm}") -> list:
    return [Case(f"{run.strip('{}')}:{option}={v}", ["sample", run, *prefix, f"{option}={v}", "-n", "5", "--out",
                                                     "{ws}/s.npy"], needle) for v in values]


def _train(key_values: list, needle: str, extra=()) -> Case:
    sets = [a for kv in key_values for a in ("--set", kv)]
    return Case(",".join(key_values), ["train", "--out", "{ws}/run", *TINY, *extra, *sets], needle)


CASES = [
    # DDIM's eta: [0, 1] (sampling.options.ETA_RANGE), finite
    *_flags(["--sampler", "ddim"], "--eta", ["1e30", "1e308", "1.5"], "sample.eta must be <= 1"),
    *_flags(["--sampler", "ddim"], "--eta", ["nan", "inf", "-inf"], "sample.eta must be finite"),
    # a flow's time shift: [0.01, 100], finite; a DDPM's: none
    *_flags([], "--time-shift", ["1e300", "101"], "sample.time_shift must be <= 100", run="{flow}"),
    *_flags([], "--time-shift", ["inf", "-inf", "nan"], "sample.time_shift must be finite", run="{flow}"),
    *_flags([], "--time-shift", ["0", "1e-300", "-3"], "sample.time_shift must be >= 0.01", run="{flow}"),
    *_flags([], "--time-shift", ["3"], "sample.time_shift is a flow option"),
    # steps: a flow's at most sampling.options.MAX_ODE_STEPS, a DDPM's at most its T
    *_flags([], "--steps", ["1e15", "10001"], "a flow's ODE takes at most 10000 steps", run="{flow}"),
    *_flags([], "--steps", ["1e15"], "steps must lie in 1.."),
    *_flags([], "--steps", ["1e30", "-1"], "is outside 0.."),
    *_flags([], "--steps", ["nan", "inf", "2.5"], "invalid int value"),
    # the guidance weight: [0, 100] (models.guidance.MAX_GUIDANCE), finite
    *_flags(["--class", "0"], "--guidance", ["1e308", "1e30", "101", "nan", "inf", "-1"],
            "the guidance weight must be a finite number >= 0 and <= 100", run="{cond}"),
    Case("evaluate-guidance-huge", ["evaluate", "{cond}", "--class", "0", "--guidance", "0,1e308", "--samples", "50"],
         "the guidance weight must be a finite number >= 0 and <= 100"),
    Case("evaluate-guidance-nan", ["evaluate", "{cond}", "--class", "0", "--guidance", "nan", "--samples", "50"],
         "the guidance weight must be a finite number >= 0 and <= 100"),
    Case("sample-n-huge", ["sample", "{ddpm}", "-n", "1e18", "--out", "{ws}/s.npy"], "-n 1000000000000000000"),
    # config floats: finite everywhere (config.schema._coerce), then each key's range
    *[_train([f"{k}={v}"], f"{k} must be finite") for k in ("train.lr", "train.weight_decay", "train.grad_clip",
                                                            "train.ema_decay", "train.hybrid_weight",
                                                            "train.label_dropout", "schedule.beta_end")
      for v in ("nan", "inf", "-inf")],
    _train(["sample.eta=1e30"], "sample.eta must be <= 1"),
    _train(["sample.time_shift=1e300"], "sample.time_shift must be <= 100", extra=["--config", "flow"]),
    _train(["sample.steps=1e15"], "sample.steps must be an integer"),
    _train(["sample.steps=100000"], "at most 10000 steps", extra=["--config", "flow"]),
    _train(["train.lr=-1e308"], "train.lr must be > 0"),
    # the schedule's betas: in (0, 1), none so small that 1 - beta rounds it away (config.checks.MIN_BETA)
    _train(["schedule.kind=constant", "schedule.beta=1e-300"], "below 2.2e-14"),
    _train(["schedule.kind=constant", "schedule.beta=1e-17"], "below 2.2e-14"),
    _train(["schedule.kind=linear", "schedule.beta_start=1e-300"], "below 2.2e-14"),
    _train(["schedule.kind=constant", "schedule.beta=1e308"], "schedule.beta must be < 1"),
    _train(["schedule.kind=constant", "schedule.beta=1"], "schedule.beta must be < 1"),
    _train(["schedule.kind=constant", "schedule.beta=0.9999999"], "underflows float32"),
    _train(["schedule.kind=linear", "schedule.beta_end=0"], "schedule.beta_end must be > 0"),
    Case("tutorial-beta-nan", ["tutorial", "--beta", "nan", "--out", "{ws}/t"], "schedule.beta must be finite"),
    Case("tutorial-beta-huge", ["tutorial", "--beta", "1e308", "--out", "{ws}/t"], "schedule.beta must be < 1"),
    Case("tutorial-beta-tiny", ["tutorial", "--beta", "1e-300", "--out", "{ws}/t"], "below 2.2e-14"),
    # data too large for float32 training unless standardised: one line naming the file and the magnitude
    Case("data-huge-unstandardised", ["train", "--out", "{ws}/run", "--data", "{root}/huge.npy", *TINY, "--set",
                                      "data.standardize=false"], "huge.npy: values up to 1e+38 are too large"),
]


def _fill(argv, root, ws):
    return [str(a).format(ddpm=root / "ddpm", flow=root / "flow", cond=root / "cond", root=root, ws=ws)
            for a in argv]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_number(case, runs, tmp_path, monkeypatch):
    """One line naming the number, the exit code, no traceback; nothing written, in the workspace or in
    the runs the command read."""
    ws = tmp_path / "ws"
    ws.mkdir()
    monkeypatch.chdir(ws)
    fixed_memory(monkeypatch)
    before = (tree(ws), tree(runs))
    code, _, err = run_main(*_fill(case.argv, runs, ws))
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert case.needle in lines[0], lines[0]
    assert code == case.code, lines[0]
    assert (tree(ws), tree(runs)) == before


def test_the_matrix_covers_every_number_option():
    ids = " ".join(c.id for c in CASES)
    for option in ("--eta", "--time-shift", "--steps", "--guidance", "train.lr", "schedule.beta", "data-huge"):
        assert option in ids
    assert len({c.id for c in CASES}) == len(CASES) >= 60


@pytest.mark.parametrize("option, value", [("--eta", "1"), ("--eta", "0"), ("--time-shift", "100"),
                                           ("--time-shift", "0.01")])
def test_the_range_ends_are_allowed(runs, tmp_path, option, value):
    run = runs / ("flow" if option == "--time-shift" else "ddpm")
    extra = ["--sampler", "ddim"] if option == "--eta" else []
    code, _, err = run_main("sample", run, *extra, option, value, "-n", "5", "--out", tmp_path / "s.npy")
    assert code == 0, err
    assert np.isfinite(np.load(tmp_path / "s.npy")).all()


def test_a_diverging_learning_rate_says_the_run_holds_nothing_usable(tmp_path):
    code, _, err = run_main("train", "--out", tmp_path / "run", *TINY, "--set", "train.lr=1e9")
    lines = err.strip().splitlines()
    assert code == 3 and len(lines) == 1 and "Traceback" not in err, err
    assert "non-finite loss" in lines[0] and "holds nothing usable" in lines[0]
    assert not (tmp_path / "run" / "model.safetensors").exists()
    assert not (tmp_path / "run" / "checkpoints").exists() or not any((tmp_path / "run" / "checkpoints").iterdir())


@pytest.mark.parametrize("name", ["huge", "tiny"])
def test_finite_data_of_any_float32_magnitude_trains_standardised(runs, tmp_path, name):
    """+-1e38 (whose float32 sums overflow) and 1e-40 (subnormal): the moments are taken in float64."""
    code, _, err = run_main("train", "--out", tmp_path / "run", "--data", runs / f"{name}.npy", *TINY)
    assert code == 0, err
    data = json.loads((tmp_path / "run" / "run.json").read_text())["data"]
    shift, scale = np.array(data["shift"]), np.array(data["scale"])
    assert np.isfinite(shift).all() and np.isfinite(scale).all() and (scale > 0).all()
    x = np.load(runs / f"{name}.npy")
    held = np.zeros(len(x), bool)
    from ddpmlab.data.base import heldout_mask

    held[heldout_mask(len(x)).numpy()] = True
    np.testing.assert_allclose(scale, x[~held].std(0, ddof=1), rtol=1e-4)  # in units of the data


@pytest.fixture(scope="module")
def models(runs):
    return dl.load_run(runs / "ddpm").model, dl.load_run(runs / "flow").model, dl.load_run(runs / "cond").model


@pytest.mark.parametrize("call, needle", [
    (lambda m: dl.sample(m[0], 5, "ddim", eta=1e30), "DDIM's eta must be in [0, 1]"),
    (lambda m: dl.sample(m[0], 5, "ddim", eta=float("nan")), "DDIM's eta must be in [0, 1]"),
    (lambda m: dl.sample(m[0], 5, "ddim", eta=-0.1), "DDIM's eta must be in [0, 1]"),
    (lambda m: dl.sample(m[0], 5, "ddim", eta="x"), "DDIM's eta must be a number"),
    (lambda m: dl.sample(m[1], 5, "ode", steps=10, shift=float("inf")), "the time shift must be in [0.01, 100]"),
    (lambda m: dl.sample(m[1], 5, "ode", steps=10, shift=1e-300), "the time shift must be in [0.01, 100]"),
    (lambda m: dl.sample(m[1], 5, "ode", steps=10 ** 9), "at most 10000 steps"),
    (lambda m: dl.Guided(m[2], 1e30), "the guidance weight must be a finite number >= 0 and <= 100"),
    (lambda m: dl.Guided(m[2], float("nan")), "the guidance weight must be a finite number >= 0 and <= 100"),
])
def test_the_api_checks_the_same_ranges(models, call, needle):
    with pytest.raises(dl.DDPMLabError, match=re.escape(needle)):
        call(models)


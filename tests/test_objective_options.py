"""Objectives describe their own options (issue 22, item 6; issue 23, item 1): each registered objective's
keyword arguments round-trip through a config and a run, an option that does not apply is refused in one
line (config, CLI and API), ``[train.objective_options]`` reaches the constructor, and a conditional flow
run keeps its classes."""
import dataclasses
import sys

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

import pytest
import torch

import ddpmlab as dl
from conftest import gen
from ddpmlab.config.build import build_model
from ddpmlab.config.objective_keys import objective_fields, objective_kwargs
from ddpmlab.config.schema import from_dict, load_config
from ddpmlab.config.sections import TrainConfig
from ddpmlab.config.toml_writer import to_toml
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.objectives.losses import (OBJECTIVES, REQUIRED, Simple, describe_objective, make_objective,
                                       objective_options)
from ddpmlab.models.mlp import MLPDenoiser
from ddpmlab.runs.format import load_run
from ddpmlab.training.inputs import objective_of
from ddpmlab.training.trainer import Trainer
from hostile_support import run_main

# a value other than the default for every option a built-in objective takes (a new option must be added)
OTHER = {"weight": 0.25, "importance_sampling": True, "time_sampling": "logit_normal", "loc": 0.5, "scale": 2.0,
         "target": "stable", "reference_batch": 7}
BUILT_IN = ("trajectory_bound", "vlb", "simple", "hybrid", "flow_matching")
TINY = dict(batch_size=32)


def base_config(name: str):
    return load_config("flow" if name == "flow_matching" else "default", [f"train.objective={name}"])


class ScaledSimple(Simple):
    """A user's objective with an option of its own: gamma times the simple loss."""

    def __init__(self, gamma: float = 1.0):
        super().__init__()
        self.gamma = gamma

    def __call__(self, model, x0, generator=None, cond=None):
        return self.gamma * super().__call__(model, x0, generator, cond)


class Forgetful(Simple):
    """Takes an option but keeps it under another name: a run cannot record it."""

    def __init__(self, gamma: float = 1.0):
        super().__init__()
        self._g = gamma


@pytest.fixture
def scaled(monkeypatch):
    monkeypatch.setitem(OBJECTIVES._items, "scaled_simple", ScaledSimple)
    monkeypatch.setitem(OBJECTIVES._items, "forgetful", Forgetful)


def ddpm():
    torch.manual_seed(0)
    return dl.DiffusionModel(MLPDenoiser(2, width=16, depth=1), dl.make_schedule("linear", 20), data_shape=(2,))


X = torch.randn(64, 2, generator=gen(0))


class TestDeclaredOptions:
    @pytest.mark.parametrize("name", BUILT_IN)
    def test_options_round_trip_through_a_config(self, name):
        declared = objective_options(OBJECTIVES.get(name))
        assert set(declared) <= set(OTHER), f"add a non-default value of {set(declared) - set(OTHER)} to OTHER"
        options = {k: OTHER[k] for k in declared}
        made = make_objective(name, options)
        assert describe_objective(made) == (name, options)
        base = base_config(name)
        cfg = dataclasses.replace(base, train=dataclasses.replace(base.train, **objective_fields(name, options)))
        back = from_dict(tomllib.loads(to_toml(cfg)))  # written and read as a run's config.toml
        rebuilt = objective_of(back.train.objective, back.train)
        assert type(rebuilt) is type(made) and describe_objective(rebuilt) == (name, options)

    @pytest.mark.parametrize("name", BUILT_IN)
    def test_defaults_build_the_default_objective(self, name):
        declared = objective_options(OBJECTIVES.get(name))
        assert REQUIRED not in declared.values()
        made = objective_of(name, TrainConfig())  # the flat keys' defaults
        assert describe_objective(made) == (name, declared)

    def test_simple_takes_no_importance_sampling(self):
        assert objective_options(Simple) == {}

    def test_an_unregistered_objective_is_custom(self):
        assert describe_objective(lambda model, x0, generator=None, cond=None: x0.sum(1)) == ("custom", {})


class TestRefused:
    @pytest.mark.parametrize("overrides, needle", [
        (["train.importance_sampling=true"], "train.importance_sampling = true does not apply to train.objective = "
                                             "'simple' (its options: none)"),
        (["train.objective=trajectory_bound", "train.hybrid_weight=0.5"], "train.hybrid_weight = 0.5 does not apply"),
        (["train.objective=vlb", "train.objective_options={weight=0.5}"], "takes no option 'weight'"),
        (["train.objective=hybrid", "train.objective_options={weight=0.5}"], "set train.hybrid_weight instead"),
        (["train.objective_options={gamma=5.0}"], "objective 'simple' takes no option 'gamma'"),
        (["train.objective_options=3"], "must be a table"),
    ])
    def test_config(self, overrides, needle):
        with pytest.raises(DDPMLabError) as exc:
            load_config("default", overrides)
        assert needle in str(exc.value) and "\n" not in str(exc.value)

    @pytest.mark.parametrize("overrides, needle", [
        (["train.importance_sampling=true"], "train.importance_sampling = true does not apply"),
        (["train.objective_options={target='stable'}"], "set train.flow_target instead"),
        (["train.objective_options={loc='x'}"], "train.objective_options: objective 'flow_matching': option loc"),
        (["train.objective_options={foo=1}"], "takes no option 'foo'"),
    ])
    def test_flow_config(self, overrides, needle):
        with pytest.raises(DDPMLabError) as exc:
            load_config("flow", overrides)
        assert needle in str(exc.value)

    def test_cli_dry_run_is_one_line(self):
        code, out, err = run_main("train", "--dry-run", "--set", "train.importance_sampling=true")
        assert code == 2 and out == "" and len(err.strip().splitlines()) == 1
        assert err.startswith("ddpmlab train: error:") and "importance_sampling" in err and "'simple'" in err

    @pytest.mark.parametrize("name, options, needle", [
        ("simple", {"importance_sampling": True}, "objective 'simple' takes no option 'importance_sampling'"),
        ("hybrid", {"weight": "big"}, "option weight = 'big' must be a float"),
        ("vlb", {"importance_sampling": 1}, "must be a bool"),
        ("flow_matching", {"target": "exact"}, "conditional, stable"),
    ])
    def test_api(self, name, options, needle):
        with pytest.raises(DDPMLabError) as exc:
            make_objective(name, options)
        assert needle in str(exc.value)

    def test_trainer_by_name(self):
        with pytest.raises(DDPMLabError, match="importance_sampling = true does not apply to train.objective = 'simple'"):
            Trainer(ddpm(), "simple", X, importance_sampling=True, **TINY)
        trainer = Trainer(ddpm(), "vlb", X, importance_sampling=True, **TINY)
        assert trainer.objective.importance_sampling and trainer.cfg.train.importance_sampling

    def test_trainer_with_an_instance(self):
        with pytest.raises(DDPMLabError, match="does not apply to train.objective = 'simple'"):
            Trainer(ddpm(), Simple(), X, importance_sampling=True, **TINY)


class TestObjectiveOptions:
    def test_config_reaches_the_constructor_and_the_run(self, scaled, tmp_path):
        cfg = load_config("default", ["train.objective=scaled_simple", "train.objective_options={gamma=3.0}",
                                      "train.iters=2", "train.batch_size=32", "model.width=16", "schedule.steps=20",
                                      "data.n_train=64"])
        trainer = Trainer.from_config(cfg, out=tmp_path / "run")
        assert type(trainer.objective) is ScaledSimple and trainer.objective.gamma == 3.0
        trainer.run(2, progress=False)
        trainer.save()
        run = load_run(tmp_path / "run")
        assert run.cfg.train.objective_options == {"gamma": 3.0}
        assert objective_of(run.cfg.train.objective, run.cfg.train).gamma == 3.0

    def test_api_instance_is_recorded_and_rebuilt(self, scaled, tmp_path):
        trainer = Trainer(ddpm(), ScaledSimple(gamma=2.0), X, out=tmp_path / "run", **TINY)
        trainer.run(1, progress=False)
        trainer.save()
        t = load_run(tmp_path / "run", net=MLPDenoiser(2, width=16, depth=1)).cfg.train
        assert (t.objective, t.objective_options) == ("scaled_simple", {"gamma": 2.0})
        assert objective_of(t.objective, t).gamma == 2.0

    def test_api_by_name_with_options(self, scaled):
        trainer = Trainer(ddpm(), "scaled_simple", X, objective_options={"gamma": 4.0}, **TINY)
        assert trainer.objective.gamma == 4.0 and trainer.cfg.train.objective_options == {"gamma": 4.0}
        assert objective_kwargs("scaled_simple", trainer.cfg.train) == {"gamma": 4.0}

    def test_a_default_is_not_recorded(self, scaled):
        assert Trainer(ddpm(), ScaledSimple(), X, **TINY).cfg.train.objective_options == {}

    def test_an_option_without_its_attribute_is_refused(self, scaled):
        with pytest.raises(DDPMLabError, match="keeps no attribute 'gamma'"):
            Trainer(ddpm(), Forgetful(gamma=2.0), X, **TINY)


def test_old_run_has_no_objective_options():
    from test_compat import DATA

    t = load_run(DATA / "run_v0").cfg.train
    assert t.objective_options == {} and describe_objective(objective_of(t.objective, t))[0] == t.objective


def test_conditional_flow_run_keeps_its_classes(tmp_path):
    g = gen(1)
    labels = torch.randint(0, 2, (256,), generator=g)
    x = torch.stack([4.0 * labels - 2.0, torch.zeros(256)], 1) + 0.3 * torch.randn(256, 2, generator=g)
    cfg = load_config("moons_flow", ["model.num_classes=2", "model.width=16", "model.depth=1"])
    torch.manual_seed(0)
    trainer = Trainer(build_model(cfg, (2,)), "flow_matching", x, labels=labels, out=tmp_path / "run",
                      label_dropout=0.1, **TINY)
    trainer.run(2, progress=False)
    trainer.save()
    run = load_run(tmp_path / "run")
    assert run.cfg.model.num_classes == 2 and run.model.net.num_classes == 2
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(run.model.state_dict()[k].cpu(), v.cpu()), k

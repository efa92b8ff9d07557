"""Every run opens everywhere (issue 23, item 2): a tiny run of every kind the trainer writes (a registered
network, your own network module, your own tensor through the API, your own file with and without
labels, a flow, a Gaussian mixture declared in a config) is sampled, evaluated, reported and drawn by
the plain commands; what no other process could rebuild is refused when saved, not when loaded."""
from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

import ddpmlab as dl
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.data.base import HELDOUT_FRACTION
from ddpmlab.models.mlp import MLPDenoiser
from hostile_support import run_main

TINY = ["--no-progress", "--set", "train.iters=5", "--set", "train.batch_size=32", "--set", "schedule.steps=20",
        "--set", "model.width=8", "--set", "model.depth=1"]
CHEAP = {"sample": ["-n", "16"], "evaluate": ["--samples", "64", "--n-bound", "16", "--n-ode", "0"],
         "report": ["--samples", "64", "--n-bound", "16", "--n-ode", "0", "--force"], "figures": ["-n", "64"]}
NET_MODULE = "every_run_net"  # your own network module, written into the test's directory
NET_SOURCE = '''
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, dim, width=8):
        super().__init__()
        self.inp, self.out = nn.Linear(dim + 1, width), nn.Linear(width, dim)

    def forward(self, x, tau, cond=None):
        return self.out(torch.tanh(self.inp(torch.cat([x, tau[:, None].to(x.dtype)], 1))))
'''
N_ROWS = 120  # of your own data (a tensor, a file)
MIXTURE = {"weights": [0.25, 0.75], "means": [[-2.0, 0.0], [2.0, 1.0]],
           "covariances": [[[0.5, 0.1], [0.1, 0.3]], [[0.4, 0.0], [0.0, 0.4]]]}


def mixture_toml(spec: dict) -> str:
    rows = "\n".join(f"{k} = {json.dumps(v)}" for k, v in spec.items())
    return f'[data]\nname = "mixture"\nn_train = 0\n\n[data.mixture]\n{rows}\n'


def api_run(out, net, data, **model_options):
    """A run trained through the Python API on an in-memory tensor, saved."""
    model = dl.DiffusionModel(net, dl.make_schedule("linear", 20), data_shape=(2,), **model_options)
    trainer = dl.Trainer(model, "simple", data, out=out, iters=5, batch_size=32)
    trainer.run(progress=False)
    trainer.save()
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every kind of run, trained once: name -> (run directory, the extra flags its commands need)."""
    root = tmp_path_factory.mktemp("every_run")
    (root / f"{NET_MODULE}.py").write_text(NET_SOURCE)
    sys.path.insert(0, str(root))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(N_ROWS, 2)).astype(np.float32)
    np.savetxt(root / "mine.csv", x, delimiter=",", header="a,b", comments="")
    np.savetxt(root / "labelled.csv", np.c_[x, rng.integers(0, 3, len(x))], delimiter=",", header="a,b,c",
               comments="")
    (root / "mixture.toml").write_text(mixture_toml(MIXTURE))
    cli = {"registered": ["--config", "eight_gaussians"],
           "own_network": ["--config", "eight_gaussians", "--set", f"model.arch='{NET_MODULE}:Net'",
                           "--set", "model.net_kwargs={dim = 2}", "--trust-code"],
           "file": ["--data", root / "mine.csv"],
           "labelled_file": ["--data", root / "labelled.csv", "--label-column", "c"],
           "flow": ["--config", "eight_gaussians_flow"],
           "declared_mixture": ["--config", root / "mixture.toml"]}
    made = {}
    for name, args in cli.items():
        code, _, err = run_main("train", "--out", root / name, *TINY, *args)
        assert code == 0, f"{name}: {err}"
        made[name] = (root / name, ["--trust-code"] if "--trust-code" in args else [])
    data = torch.from_numpy(x)
    made["api_tensor"] = (api_run(root / "api_tensor", MLPDenoiser(2, width=8, depth=1), data), [])
    own = __import__(NET_MODULE).Net(2)
    made["api_own_network"] = (api_run(root / "api_own_network", own, data, net_kwargs={"dim": 2}), ["--trust-code"])
    yield made
    sys.path.remove(str(root))
    sys.modules.pop(NET_MODULE, None)


KINDS = ["registered", "own_network", "file", "labelled_file", "flow", "declared_mixture", "api_tensor",
         "api_own_network"]


class TestEveryCommandOpensEveryRun:
    @pytest.mark.parametrize("command", ["sample", "evaluate", "report", "figures"])
    @pytest.mark.parametrize("kind", KINDS)
    def test_command_exits_0(self, runs, kind, command, tmp_path):
        run_dir, flags = runs[kind]
        out = {"sample": ["--out", tmp_path / "s.npy"], "report": ["--out", tmp_path / "r.html"],
               "figures": ["--out", tmp_path / "figures"]}.get(command, [])
        code, _, err = run_main(command, run_dir, *CHEAP[command], *out, *flags)
        assert code == 0, f"{kind} {command}: {err}"


def evaluation(run_dir) -> dict:
    """``ddpmlab evaluate RUN``'s evaluation.json."""
    code, _, err = run_main("evaluate", run_dir, *CHEAP["evaluate"])
    assert code == 0, err
    return json.loads((run_dir / "evaluation.json").read_text())


class TestApiTensorRun:
    def test_holds_out_rows_and_keeps_them_for_evaluation(self, runs):
        run_dir = runs["api_tensor"][0]
        info = json.loads((run_dir / "run.json").read_text())
        held = info["data"]["heldout"]
        assert info["config"]["data"]["name"] == "tensor" and held["n"] == round(HELDOUT_FRACTION * N_ROWS)
        assert info["data"]["n_train"] == N_ROWS - held["n"]  # held out of training, as a file's rows
        ev = evaluation(run_dir)
        assert ev["data"]["n_heldout"] == held["n"] and ev["data"]["n_train"] == info["data"]["n_train"]

    def test_own_mlp_is_recorded_as_the_registered_mlp(self, runs):
        model = json.loads((runs["api_tensor"][0] / "run.json").read_text())["config"]["model"]
        assert (model["arch"], model["width"], model["depth"]) == ("mlp", 8, 1)
        assert isinstance(dl.load_run(runs["api_tensor"][0]).model.net, MLPDenoiser)  # no trust needed

    @pytest.mark.parametrize("spoil", ["remove", "other_rows"])
    def test_missing_or_changed_rows_are_one_line(self, runs, tmp_path, spoil):
        run_dir = tmp_path / "copy"
        shutil.copytree(runs["api_tensor"][0], run_dir)
        kept = run_dir / "data.safetensors"
        if spoil == "remove":
            kept.unlink()
        else:
            rows = load_file(kept)
            save_file({**rows, "heldout": rows["heldout"] + 1}, kept)
        code, _, err = run_main("evaluate", run_dir, *CHEAP["evaluate"])
        assert code == 2 and err.count("\n") == 1 and "data.safetensors" in err, err


class TestDeclaredMixture:
    def test_evaluation_is_exact(self, runs):
        run_dir = runs["declared_mixture"][0]
        info = json.loads((run_dir / "run.json").read_text())
        assert info["data"]["mixture"]["weights"] == MIXTURE["weights"]
        ev = evaluation(run_dir)
        assert ev["kind"] == "mixture" and "bound" in ev["oracle"]  # the exact oracle, beside the model

    @pytest.mark.parametrize("change, needle", [
        ({"weights": [0.5, 0.6]}, "summing to 1"),
        ({"weights": [1.5, -0.5]}, "positive"),
        ({"covariances": [[[0.5, 0.3], [0.1, 0.3]], [[0.4, 0.0], [0.0, 0.4]]]}, "symmetric"),
        ({"covariances": [[[1.0, 2.0], [2.0, 1.0]], [[0.4, 0.0], [0.0, 0.4]]]}, "positive definite"),
        ({"means": [[-2.0, 0.0, 1.0], [2.0, 1.0, 0.0]]}, "shapes disagree"),
        ({"means": [[-2.0, 0.0], [2.0]]}, "rectangular"),
    ])
    def test_bad_mixture_is_one_line(self, tmp_path, change, needle):
        cfg = tmp_path / "bad.toml"
        cfg.write_text(mixture_toml({**MIXTURE, **change}))
        code, _, err = run_main("train", "--config", cfg, "--out", tmp_path / "run", "--dry-run")
        assert code == 2 and err.count("\n") == 1 and needle in err and "data.mixture" in err, err

    def test_name_and_table_go_together(self, tmp_path):
        code, _, err = run_main("train", "--set", "data.name=mixture", "--out", tmp_path / "run", "--dry-run")
        assert code == 2 and "[data.mixture]" in err, err


class TestRefusedAtSave:
    """A network class no other process could rebuild is refused by Trainer.save, before it writes."""

    def _save(self, tmp_path, net, **model_options):
        with pytest.raises(DDPMLabError) as info:
            api_run(tmp_path / "run", net, torch.randn(40, 2), **model_options)
        assert not (tmp_path / "run" / "run.json").exists() and not (tmp_path / "run" / "model.safetensors").exists()
        return str(info.value)

    def test_a_script_class(self, runs, tmp_path):
        cls = type("Net", (__import__(NET_MODULE).Net,), {"__module__": "__main__"})
        assert "script or notebook" in self._save(tmp_path, cls(2), net_kwargs={"dim": 2})

    def test_unrecorded_constructor_arguments(self, runs, tmp_path):
        msg = self._save(tmp_path, __import__(NET_MODULE).Net(2))
        assert "missing 1 required positional argument" in msg and "net_kwargs" in msg

    def test_arguments_that_build_another_network(self, runs, tmp_path):
        msg = self._save(tmp_path, __import__(NET_MODULE).Net(2), net_kwargs={"dim": 2, "width": 16})
        assert "another network" in msg

    def test_a_refused_save_keeps_the_run_it_would_replace(self, runs, tmp_path):
        api_run(tmp_path / "run", MLPDenoiser(2, width=8, depth=1), torch.randn(40, 2))
        before = (tmp_path / "run" / "run.json").read_bytes()
        model = dl.DiffusionModel(__import__(NET_MODULE).Net(2), dl.make_schedule("linear", 20), data_shape=(2,))
        trainer = dl.Trainer(model, "simple", torch.randn(40, 2), out=tmp_path / "run", overwrite=True)
        with pytest.raises(DDPMLabError, match="net_kwargs"):
            trainer.save()
        assert (tmp_path / "run" / "run.json").read_bytes() == before

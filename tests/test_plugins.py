"""Your code in every command (issue 23, deliver 1): a plugin module registering a Min-SNR-gamma objective
(its gamma from ``[train.objective_options]``) and an Euler-ancestral sampler, named in ``[plugins] modules``
or by ``--import``, used by plain ``ddpmlab train`` / ``sample`` / ``evaluate`` / ``report`` and
``dl.load_run`` in fresh processes; ``package.module:name`` objectives and samplers; all behind the trust gate
of networks (``ddpmlab.models.registry.check_trust``), whose refusal imports nothing.

Every command that imports the plugin runs in a fresh ``python -m ddpmlab`` process (that is the point, and
it keeps this process's registries clean); the refusals run in this process, which never imports the plugin,
so a refusal that imported it would leave its marker file.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from hostile_support import run_main

OWN_CODE = '''\
"""Plain functions of a researcher's own: nothing registered, no side effect."""
import torch

import ddpmlab as dl


class MinSNR:
    """Min-SNR-gamma weighting (Hang et al. 2023): the epsilon loss weighted by min(SNR(t), gamma) / SNR(t)."""

    def __init__(self, gamma: float = 5.0):
        if not gamma > 0:
            raise ValueError(f"gamma must be > 0, got {gamma}")
        self.gamma = gamma

    def __call__(self, model, x0, generator=None, cond=None):
        sched = model.schedule
        t = torch.randint(1, sched.T + 1, (x0.shape[0],), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        abar = sched.alphas_cumprod[t].to(x0.dtype)
        snr = abar / (1 - abar)
        weight = snr.clamp(max=self.gamma) / snr
        return weight * ((model(dl.q_sample(sched, x0, t, noise), t, cond) - noise) ** 2).mean(dim=1)


def euler_ancestral(model, x, grid, generator=None, cond=None, callback=None):
    """Euler ancestral (k-diffusion) on sigma = sqrt((1 - abar) / abar) with z = x / sqrt(abar)."""
    abar = model.schedule.alphas_cumprod
    steps = grid.tolist()
    sigma = [((1 - abar[t]) / abar[t]).sqrt().item() for t in steps]
    z = x * (1 + sigma[0] ** 2) ** 0.5
    for i, (t, s) in enumerate(zip(steps[:-1], steps[1:])):
        x0 = model.p_mean_variance(z / (1 + sigma[i] ** 2) ** 0.5, torch.full((x.shape[0],), t), cond).pred_x0
        up = min(sigma[i + 1], (sigma[i + 1] ** 2 * (sigma[i] ** 2 - sigma[i + 1] ** 2) / sigma[i] ** 2) ** 0.5)
        down = (sigma[i + 1] ** 2 - up ** 2) ** 0.5
        z = z + (z - x0) / sigma[i] * (down - sigma[i]) + up * torch.randn(x.shape, generator=generator)
        if callback is not None:
            callback(i, s, z / (1 + sigma[i + 1] ** 2) ** 0.5)
    return z
'''
PLUGIN = '''\
"""The plugin: registers own_code's objective and sampler by name; its import leaves a marker file."""
import pathlib

import ddpmlab as dl
from own_code import MinSNR, euler_ancestral

pathlib.Path("imported.txt").open("a").write("my_plugins\\n")  # proof that this module ran
dl.OBJECTIVES.register("min_snr", MinSNR)
dl.SAMPLERS.register("euler_a", euler_ancestral)
'''
CONFIG = '''\
[plugins]
modules = ["my_plugins"]

[data]
name = "eight_gaussians"
n_train = 512

[schedule]
kind = "linear"
steps = 50

[model]
width = 16
depth = 1

[train]
objective = "min_snr"
iters = 20
batch_size = 128
checkpoint_every = 10

[train.objective_options]
gamma = 3.0

[sample]
sampler = "euler_a"
steps = 10
n = 100
'''
TARGETS = ["--set", "train.objective='own_code:MinSNR'", "--set", "train.objective_options={gamma=2.0}",
           "--set", "sample.sampler='own_code:euler_ancestral'"]
SMALL_EVAL = ["--n-bound", "200", "--n-ode", "0", "--samples", "200"]


def write_plugin(root: Path) -> Path:
    """The plugin, its functions and the config in ``root`` (the working directory of the commands)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "own_code.py").write_text(OWN_CODE)
    (root / "my_plugins.py").write_text(PLUGIN)
    (root / "plug.toml").write_text(CONFIG)
    return root


def fresh(cwd: Path, *argv, check: bool = True, python: bool = False) -> subprocess.CompletedProcess:
    """``python -m ddpmlab ARGV`` (or ``python -c ARGV[0]``) in a new process in ``cwd``."""
    cmd = [sys.executable, "-c", argv[0]] if python else [sys.executable, "-m", "ddpmlab", *map(str, argv)]
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=300,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    if check:
        assert r.returncode == 0, r.stderr
    return r


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A run of the plugin's objective and sampler ([plugins] in its config), one of ``module:name`` targets
    (the module given by --import), each trained by plain ``ddpmlab train`` in a fresh process."""
    root = write_plugin(tmp_path_factory.mktemp("plugins"))
    trainings = [("train", "--config", "plug.toml", "--out", "run", "--no-progress", "--trust-code"),
                 ("train", "--config", "plug.toml", "--out", "targets", "--no-progress", "--trust-code",
                  "--set", "plugins.modules=[]", "--import", "own_code", *TARGETS)]
    with ThreadPoolExecutor(len(trainings)) as pool:  # two fresh processes at once: they share nothing
        list(pool.map(lambda argv: fresh(root, *argv), trainings))  # a failed one raises here
    return root


@pytest.fixture
def untrusted(work, tmp_path, monkeypatch):
    """A working directory beside the runs where the plugin could be imported (it is on the path), and
    has not been: the refusals run here, in this process."""
    write_plugin(tmp_path)
    for name in ("run", "targets"):
        shutil.copytree(work / name, tmp_path / name)
    np.save(tmp_path / "x.npy", np.zeros((4, 2), np.float32))
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert "my_plugins" not in sys.modules and "own_code" not in sys.modules
    return tmp_path


def config_of(run: Path) -> dict:
    return json.loads((run / "run.json").read_text())["config"]


class TestPluginRun:
    def test_the_run_records_its_plugin_objective_options_and_sampler(self, work):
        cfg = config_of(work / "run")
        assert cfg["plugins"]["modules"] == ["my_plugins"]
        assert (cfg["train"]["objective"], cfg["train"]["objective_options"]) == ("min_snr", {"gamma": 3.0})
        assert cfg["sample"]["sampler"] == "euler_a"
        assert "[plugins]" in (work / "run" / "config.toml").read_text()

    def test_plain_sample_in_a_fresh_process_uses_the_run_s_sampler(self, work):
        r = fresh(work, "sample", "run", "-n", "64", "--out", "s.npy", "--force", "--trust-code")
        x = np.load(work / "s.npy")
        assert x.shape == (64, 2) and np.isfinite(x).all(), r.stdout

    def test_evaluate_and_report_open_the_run(self, work):
        fresh(work, "evaluate", "run", *SMALL_EVAL, "--trust-code")
        settings = json.loads((work / "run" / "evaluation.json").read_text())["settings"]
        assert settings["sampler"] == "euler_a"
        fresh(work, "report", "run", "--out", "report.html", "--force", "--n-bound", "50", "--n-ode", "0",
              "--samples", "100", "--trust-code")
        assert (work / "report.html").stat().st_size > 0

    def test_resume_continues_with_the_plugin(self, work, tmp_path):
        run = shutil.copytree(work / "run", tmp_path / "run")
        fresh(work, "train", "--resume", run, "--set", "train.iters=25", "--no-progress", "--trust-code")
        assert json.loads((run / "metrics.json").read_text())["iters"] == 25

    def test_load_run_imports_the_code_and_rebuilds_gamma(self, work):
        """``dl.load_run(..., trust_code=True)`` in a fresh process: the registered objective with its gamma,
        the recorded sampler (registered or a target); a gamma the objective refuses is one error."""
        code = ("import ddpmlab as dl\n"
                "for name in ('run', 'targets'):\n"
                "    r = dl.load_run(name, trust_code=True)\n"
                "    t = r.cfg.train\n"
                "    obj = dl.OBJECTIVES.get(t.objective)(**t.objective_options)\n"
                "    x = dl.sample(r.model, 16, sampler=r.cfg.sample.sampler, steps=5)\n"
                "    print(obj.gamma, tuple(x.shape), bool(x.isfinite().all()))\n"
                "try:\n"
                "    dl.load_config('plug.toml', ['train.objective_options={gamma=-1.0}'], trust_code=True)\n"
                "except dl.DDPMLabError as exc:\n"
                "    print(exc)\n")
        lines = fresh(work, code, python=True).stdout.splitlines()
        assert lines[:2] == ["3.0 (16, 2) True", "2.0 (16, 2) True"], lines
        assert "gamma must be > 0" in lines[2]

    def test_a_sweep_passes_import_and_trust_to_its_jobs(self, tmp_path, monkeypatch):
        (tmp_path / "harmless_plugin.py").write_text("")
        monkeypatch.chdir(tmp_path)
        code, out, err = run_main("sweep", "--config", "default", "--seeds", "0-1", "--out", "sweep", "--evaluate",
                                  "--import", "harmless_plugin", "--trust-code", "--print-commands")
        lines = out.splitlines()
        assert code == 0 and len(lines) == 2, err
        assert all(ln.count("--trust-code --import harmless_plugin") == 2 for ln in lines), lines


class TestTargets:
    def test_the_run_records_module_name_targets(self, work):
        cfg = config_of(work / "targets")
        assert cfg["plugins"]["modules"] == ["own_code"]  # --import, recorded
        assert cfg["train"]["objective"] == "own_code:MinSNR"
        assert cfg["train"]["objective_options"] == {"gamma": 2.0}
        assert cfg["sample"]["sampler"] == "own_code:euler_ancestral"

    def test_plain_sample_takes_a_sampler_flag_naming_a_function(self, work):
        fresh(work, "sample", "targets", "-n", "32", "--out", "t.npy", "--force", "--trust-code",
              "--sampler", "my_plugins:euler_ancestral")  # the name my_plugins imported, a new target
        x = np.load(work / "t.npy")
        assert x.shape == (32, 2) and np.isfinite(x).all()

    @pytest.mark.parametrize("target", ["os:system", "builtins:exec", "json:JSONDecoder"])
    def test_what_is_not_a_function_is_refused_before_it_is_called(self, untrusted, target):
        for key in ("sample.sampler", "train.objective"):
            code, _, err = run_main("train", "--config", "default", "--dry-run", "--trust-code",
                                    "--set", f"{key}={target!r}")
            assert code == 2 and len(err.splitlines()) == 1 and f"{key} names {target!r}" in err, err

    def test_a_missing_function_is_one_line(self, untrusted):
        code, _, err = run_main("train", "--config", "default", "--dry-run", "--trust-code",
                                "--set", "sample.sampler='os:nothing_here'")
        assert code == 2 and len(err.splitlines()) == 1 and "AttributeError" in err, err


def refused(root: Path, *argv) -> str:
    """``ddpmlab ARGV`` without --trust-code in this process: exit 2, one line, and the plugin not imported."""
    code, _, err = run_main(*argv)
    assert code == 2 and len(err.splitlines()) == 1 and "--trust-code" in err, err
    assert not (root / "imported.txt").exists() and "my_plugins" not in sys.modules and "own_code" not in sys.modules
    return err


class TestTrustGate:
    @pytest.mark.parametrize("argv", [
        ["train", "--config", "plug.toml", "--out", "new"],
        ["train", "--config", "default", "--out", "new", "--import", "my_plugins"],
        ["train", "--config", "default", "--out", "new", *TARGETS],
        ["train", "--resume", "run", "--set", "train.iters=30"],
        ["sample", "run", "-n", "4", "--out", "s.npy"],
        ["sample", "targets", "-n", "4", "--out", "s.npy"],
        ["evaluate", "run", *SMALL_EVAL],
        ["logprob", "run", "--data", "x.npy", "--out", "lp.npy"],
        ["report", "run", "--out", "r.html"],
        ["figures", "run", "--out", "figs"],
        ["sweep", "--config", "plug.toml", "--out", "sweep", "--print-commands"],
    ], ids=lambda a: " ".join(a[:2]))
    def test_every_command_refuses_the_plugin_without_trust_code(self, untrusted, argv):
        before = sorted(p.name for p in untrusted.iterdir())
        err = refused(untrusted, *argv)
        assert "my_plugins" in err or "own_code" in err
        assert sorted(p.name for p in untrusted.iterdir()) == before  # nothing written

    def test_load_run_refuses_without_trust_code(self, untrusted):
        import ddpmlab as dl

        with pytest.raises(dl.DDPMLabError, match="plugin module 'my_plugins'.*trust_code=True"):
            dl.load_run(untrusted / "run")
        assert not (untrusted / "imported.txt").exists()

    @pytest.mark.parametrize("name", ["../evil", "os;rm", "a b", "", "x.", "__main__", "import", "a.1b"])
    def test_a_hostile_module_name_is_refused_even_with_trust(self, untrusted, name):
        for argv in (["sample", "run", "-n", "4", "--out", "x.npy", "--import", name, "--trust-code"],
                     ["train", "--config", "default", "--dry-run", "--trust-code",
                      "--set", f"plugins.modules={json.dumps([name])}"]):
            code, _, err = run_main(*argv)
            assert code == 2 and len(err.splitlines()) == 1 and "is not a module name" in err, err

    @pytest.mark.parametrize("source, error", [
        ("raise RuntimeError('boom\\nsecond line')", "RuntimeError: boom second"),
        ("import sys; sys.exit(3)", "SystemExit: 3"),
        ("def f(:", "SyntaxError")])
    def test_a_failing_plugin_is_one_line(self, untrusted, source, error):
        (untrusted / "broken_plugin.py").write_text(source + "\n")
        code, _, err = run_main("train", "--config", "default", "--dry-run", "--import", "broken_plugin",
                                "--trust-code")
        assert code == 2 and len(err.splitlines()) == 1, err
        assert "cannot import the plugin module 'broken_plugin'" in err and error in err, err

    def test_a_missing_plugin_and_an_unknown_name_are_one_line_with_the_way_out(self, untrusted):
        code, _, err = run_main("sample", "run", "-n", "4", "--out", "x.npy", "--import", "no_such_plugin_mod",
                                "--trust-code")
        assert code == 2 and "ModuleNotFoundError" in err and len(err.splitlines()) == 1, err
        code, _, err = run_main("train", "--config", "default", "--dry-run", "--set", "train.objective='min_snr'")
        assert code == 2 and "--import MODULE" in err and len(err.splitlines()) == 1, err


class TestImportOnOtherCommands:
    def test_a_run_whose_plugin_is_not_recorded_opens_with_import(self, work, untrusted):
        """An API run using a name its notebook registered records no plugin module: plain ``sample`` names
        the way out, and ``--import`` opens it."""
        script = ("import my_plugins, ddpmlab as dl\n"
                  "cfg = dl.load_config('plug.toml', ['plugins.modules=[]', 'train.checkpoint_every=0'])\n"
                  f"t = dl.Trainer.from_config(cfg, out={str(untrusted / 'api')!r})\n"
                  "t.run(progress=False); t.save()\n")
        fresh(work, script, python=True)
        assert config_of(untrusted / "api")["plugins"]["modules"] == []
        code, _, err = run_main("sample", "api", "-n", "8", "--out", "a.npy", "--trust-code")
        assert code == 2 and "'min_snr' is not one of" in err and "--import MODULE" in err, err
        fresh(untrusted, "sample", "api", "-n", "8", "--out", "a.npy", "--trust-code", "--import", "my_plugins")
        assert np.load(untrusted / "a.npy").shape == (8, 2)

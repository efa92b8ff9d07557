"""No code runs without trust (issue 21, class 1): a config or a run directory that names a module
(``package.module:Class``, ``os:system``) gets nothing imported by any command or API function unless
``--trust-code`` / ``trust_code=True`` is given; the refusal is one line (exit 2) or one ``DDPMLabError``.

The oracle is a sentinel module whose import writes a marker file. It sits where an import would find
it (the working directory, ``sys.path``, the run directory itself), so only the trust gate
(``ddpmlab.models.registry.import_target``) stands between the command and the import; each refused case
is paired with the same command given the trust flag, which does import it (the setup is live).
"""
from __future__ import annotations

import importlib
import json
import shlex
import sys
from pathlib import Path

import pytest

import ddpmlab as dl
from ddpmlab.config.schema import load_config
from ddpmlab.runs.checkpoint import META_FILE, _json_checksum, checkpoint_dirs
from faults import injected
from hostile_support import TINY, Workspace, run_main, tree

SENTINEL = """\
import pathlib
import torch
from torch import nn

pathlib.Path({marker!r}).open("a").write(__name__ + "\\n")  # proof that this module was imported


class Net(nn.Module):  # a network for data of any shape: x * a + tau * b
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Parameter(torch.ones(1)), nn.Parameter(torch.zeros(1))

    def forward(self, x, tau):
        return x * self.a + tau.reshape(-1, *[1] * (x.dim() - 1)).to(x.dtype) * self.b
"""
MODULES = ("sentinel_mod", "sentinel_run")  # beside the command (cwd, sys.path) / inside the run directory
TINY_SETS = [a for a in TINY if a != "--no-progress"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A finished tiny run (checkpoints 2, 4, 6) and an interrupted one (checkpoints 2, 4, 5 of 8)."""
    root = tmp_path_factory.mktemp("trust") / "runs"
    code, _, err = run_main("train", "--out", root / "train", *TINY, "--set", "train.iters=6",
                            "--checkpoint-every", "2")
    assert code == 0, err
    with injected(signal_at=5):
        code, _, err = run_main("train", "--out", root / "unfinished", *TINY, "--set", "train.iters=8",
                                "--checkpoint-every", "2")
    assert code == 143, err
    return {"root": root, "train": root / "train", "unfinished": root / "unfinished"}


@pytest.fixture
def ws(runs, tmp_path, monkeypatch):
    """A workspace (the working directory, also on ``sys.path``) holding ``sentinel_mod.py``; the marker
    lies outside it. Sentinel modules are forgotten before and after each case."""
    def forget():
        for name in MODULES:
            sys.modules.pop(name, None)
        importlib.invalidate_caches()

    w = Workspace(tmp_path / "ws", runs, monkeypatch)
    w.root.mkdir()
    w.marker = tmp_path / "IMPORTED"
    w.sentinel = SENTINEL.format(marker=str(w.marker))
    w.write("sentinel_mod.py", w.sentinel)
    monkeypatch.chdir(w.root)
    monkeypatch.syspath_prepend(str(w.root))
    forget()
    yield w
    forget()
    w.close()


def name_module(run: Path, arch: str, net_kwargs: dict | None = None) -> Path:
    """Edit a copied run so that run.json, config.toml and every checkpoint name ``arch`` (each
    checkpoint's checksum recomputed, as an attacker would)."""
    def edit(cfg: dict) -> None:
        cfg["model"]["arch"] = arch
        cfg["model"]["net_kwargs"] = dict(net_kwargs or {})

    if (run / "run.json").exists():
        info = json.loads((run / "run.json").read_text())
        edit(info["config"])
        (run / "run.json").write_text(json.dumps(info))
    if (run / "config.toml").exists():
        text = (run / "config.toml").read_text().replace('arch = "mlp"', f'arch = "{arch}"')
        (run / "config.toml").write_text(text)
    for _, path in checkpoint_dirs(run):
        meta = json.loads((path / META_FILE).read_text())
        edit(meta["config"])
        meta["checksum"] = _json_checksum(meta)
        (path / META_FILE).write_text(json.dumps(meta))
    return run


def hostile_run(ws, name: str = "train", arch: str = "sentinel_mod:Net", net_kwargs=None) -> Path:
    return name_module(ws.copy(name, "received"), arch, net_kwargs)


def in_run_dir(ws) -> Path:
    """The module sits inside the received run directory, which is the working directory."""
    run = hostile_run(ws, arch="sentinel_run:Net")
    (run / "sentinel_run.py").write_text(ws.sentinel)
    ws.mp.chdir(run)
    ws.mp.syspath_prepend(str(run))
    return run


def config_file(ws, arch: str = "sentinel_mod:Net") -> Path:
    return ws.write("hostile.toml", f'[model]\narch = "{arch}"\nprecondition = false\n')


def os_system_run(ws) -> Path:
    return hostile_run(ws, arch="os:system", net_kwargs={"command": f"touch {ws.marker}"})


# id -> setup(ws) -> argv of a command that must import nothing without --trust-code
CASES = {
    "train-new-config-file": lambda ws: ["train", "--config", config_file(ws), "--out", ws.path("o"), *TINY],
    "train-new-set-arch": lambda ws: ["train", "--out", ws.path("o"), *TINY, "--set", "model.arch='sentinel_mod:Net'"],
    "train-resume-finished": lambda ws: ["train", "--resume", hostile_run(ws), "--set", "train.iters=9",
                                         "--no-progress"],
    "train-resume-unfinished": lambda ws: ["train", "--resume", hostile_run(ws, "unfinished"), "--no-progress"],
    "train-resume-module-in-run-dir": lambda ws: ["train", "--resume", in_run_dir(ws), "--set", "train.iters=9",
                                                  "--no-progress"],
    "train-resume-os-system": lambda ws: ["train", "--resume", os_system_run(ws), "--set", "train.iters=9",
                                          "--no-progress"],
    "sample": lambda ws: ["sample", hostile_run(ws), "-n", "5", "--out", ws.path("s.npy")],
    "sample-module-in-run-dir": lambda ws: ["sample", in_run_dir(ws), "-n", "5", "--out", ws.path("s.npy")],
    "sample-os-system": lambda ws: ["sample", os_system_run(ws), "-n", "5", "--out", ws.path("s.npy")],
    "evaluate": lambda ws: ["evaluate", hostile_run(ws), "--samples", "50"],
    "figures": lambda ws: ["figures", hostile_run(ws), "-n", "20"],
    "report": lambda ws: ["report", hostile_run(ws), "--out", ws.path("r.html")],
    "report-os-system": lambda ws: ["report", os_system_run(ws), "--out", ws.path("r.html")],
    "sweep-new-config": lambda ws: ["sweep", "--config", config_file(ws), "--out", ws.path("sw"), "--no-progress",
                                    *TINY_SETS],
    "sweep-print-commands": lambda ws: ["sweep", "--config", config_file(ws), "--out", ws.path("sw"),
                                        "--print-commands"],
}


def _refused(code: int, err: str, command: str) -> str:
    lines = err.strip().splitlines()
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    assert code == 2, err
    assert lines[0].startswith(f"ddpmlab {command}: error: "), lines[0]
    return lines[0]


@pytest.mark.parametrize("case", CASES, ids=list(CASES))
def test_nothing_is_imported_without_trust(case, ws):
    argv = [str(a) for a in CASES[case](ws)]
    before = tree(ws.root)
    code, _, err = run_main(*argv)
    line = _refused(code, err, argv[0])
    assert "--trust-code" in line and "names the network class" in line, line
    assert not ws.marker.exists(), "the module was imported without --trust-code"
    assert tree(ws.root) == before  # a refusal changes nothing and leaves nothing behind
    assert not any(name in sys.modules for name in MODULES)


TRUSTED = [c for c in CASES if "os-system" not in c and c != "sweep-print-commands"]


@pytest.mark.parametrize("case", TRUSTED, ids=TRUSTED)
def test_the_same_command_with_trust_imports_it(case, ws):
    """The control: given --trust-code, each command does import the module the refused case named, so
    the refusal above is the gate's doing, not a missing file. Whatever follows (the received run's
    weights are an MLP's, not ``Net``'s) ends in one line at most, without a traceback."""
    argv = [str(a) for a in CASES[case](ws)]
    if argv[0] == "sweep":
        argv += ["--set", "train.iters=2"]  # the jobs run for real, in their own processes
    code, out, err = run_main(*argv, "--trust-code")
    assert "Traceback" not in err, err
    assert ws.marker.exists(), err


def test_os_system_is_refused_before_it_is_called_even_with_trust(ws):
    for argv in (["train", "--resume", os_system_run(ws), "--set", "train.iters=9", "--no-progress"],
                 ["sample", ws.path("received"), "-n", "5", "--out", ws.path("s.npy")]):
        code, _, err = run_main(*[str(a) for a in argv], "--trust-code")
        line = _refused(code, err, argv[0])
        assert "'os:system', a builtin_function_or_method, not a torch.nn.Module class" in line, line
    assert not ws.marker.exists()
    for arch in ("subprocess:Popen", "builtins:print", "os:path.join"):
        with pytest.raises(dl.DDPMLabError, match="not a torch.nn.Module class"):
            dl.load_run(name_module(ws.copy("train", arch.replace(":", "_")), arch, {"args": ["true"]}),
                        trust_code=True)


def test_resume_dry_run_reads_the_config_and_imports_nothing(ws):
    code, out, err = run_main("train", "--resume", hostile_run(ws), "--dry-run")
    assert code == 0 and 'arch = "sentinel_mod:Net"' in out, err
    assert not ws.marker.exists()


def test_tutorial_imports_no_module(ws):
    before = tree(ws.root)
    code, _, err = run_main("tutorial", "--out", ws.path("t"), "--iters", "2", "--no-progress",
                            "--set", "model.arch='sentinel_mod:Net'")
    line = _refused(code, err, "tutorial")
    assert "names a network class of your own" in line, line
    assert not ws.marker.exists() and tree(ws.root) == before
    code, _, err = run_main("tutorial", "--out", ws.path("t"), "--trust-code")
    assert code == 2 and "unrecognized arguments: --trust-code" in err  # the tutorial has no such flag


def test_sweep_resuming_an_interrupted_job_passes_trust_on_only_when_given(ws):
    """The sweep continues an interrupted job by itself (``train --resume`` in a worker process, where
    ``python -m`` puts the working directory, holding the sentinel, on ``sys.path``): without --trust-code
    the job refuses in one line and the sweep reports it; with it, the resumed job imports the module."""
    args = ["sweep", "--out", ws.path("sw"), "--no-progress", *TINY_SETS, "--set", "train.iters=4",
            "--set", "train.checkpoint_every=2"]
    code, printed, err = run_main(*args, "--print-commands")  # a sweep of one job, its command run here
    assert code == 0 and len(printed.splitlines()) == 1, err
    code, _, err = run_main(*shlex.split(printed)[3:])  # `python -m ddpmlab ...`: main() in this process
    assert code == 0, err
    job = ws.path("sw", "default", "seed_0")
    for name in ("metrics.json", "run.json"):  # now it looks interrupted after its last checkpoint
        job.joinpath(name).unlink()
    name_module(job, "sentinel_mod:Net")  # and its checkpoints name the module
    code, _, err = run_main(*args)
    assert code == 1 and "Traceback" not in err, err
    assert "failed (exit 2): ddpmlab train: error: " in err and "--trust-code" in err, err
    jobs_csv = ws.path("sw", "jobs.csv").read_text()
    assert "--resume" in jobs_csv and "--trust-code" not in jobs_csv, jobs_csv
    log = job.with_name("seed_0.log").read_text()
    assert len(log.strip().splitlines()) == 1 and "Traceback" not in log, log
    assert not ws.marker.exists()
    code, _, err = run_main(*args, "--trust-code")
    assert ws.marker.exists(), err
    assert "--trust-code" in ws.path("sw", "jobs.csv").read_text()


def test_sweep_passes_trust_to_every_command_of_a_job(tmp_path):
    from ddpmlab.workflows.sweep_plan import plan_sweep

    for trust in (False, True):
        jobs = plan_sweep(["default"], [], [0], [], tmp_path, evaluate=True, trust_code=trust)
        for argv in (jobs[0].train_argv(), jobs[0].train_argv(resume=True), jobs[0].evaluate_argv()):
            assert ("--trust-code" in argv) is trust


# ---- the Python API: the default is no trust, the refusal one DDPMLabError


def test_load_run_imports_nothing_without_trust(ws):
    run = hostile_run(ws)
    with pytest.raises(dl.DDPMLabError, match="names the network class 'sentinel_mod:Net'") as exc:
        dl.load_run(run)
    assert "\n" not in str(exc.value) and exc.value.__cause__ is None and exc.value.__suppress_context__
    assert not ws.marker.exists()
    with pytest.raises(dl.DDPMLabError, match="weights do not match"):  # an MLP's weights for Net
        dl.load_run(run, trust_code=True)
    assert ws.marker.exists()


def test_trainer_from_config_defaults_to_no_trust(ws):
    cfg = load_config("default", [a for a in TINY_SETS if a != "--set"] + ["model.arch='sentinel_mod:Net'"])
    with pytest.raises(dl.DDPMLabError, match="names the network class 'sentinel_mod:Net'"):
        dl.Trainer.from_config(cfg)
    assert not ws.marker.exists()
    os_cfg = load_config("default", ["model.arch='os:system'", f"model.net_kwargs={{command = 'touch {ws.marker}'}}"])
    for trust in (False, True):
        with pytest.raises(dl.DDPMLabError, match="os:system"):
            dl.Trainer.from_config(os_cfg, trust_code=trust)
    assert not ws.marker.exists()
    trainer = dl.Trainer.from_config(cfg, trust_code=True)
    assert ws.marker.exists() and type(trainer.model.net).__name__ == "Net"


@pytest.mark.parametrize("arch, net_kwargs, needle", [
    (123, {}, "model.arch must be a string"),
    (["sentinel_mod:Net"], {}, "model.arch must be a string"),
    ("sentinel_mod:Net\n", {}, "is not one of"),
    ("sentinel_mod:Net", "not a table", "net_kwargs must be a table"),
    ("sentinel_mod:Net", [1, 2], "net_kwargs must be a table"),
    ("__main__:Net", {}, "defined in a script or notebook"),
    ("os:system", {"command": "true"}, "names the network class 'os:system'"),
])
def test_load_run_hostile_run_json_values_are_one_ddpmlab_error(ws, arch, net_kwargs, needle):
    run = ws.copy("train", "received")
    info = json.loads((run / "run.json").read_text())
    info["config"]["model"].update(arch=arch, net_kwargs=net_kwargs)
    (run / "run.json").write_text(json.dumps(info))
    with pytest.raises(dl.DDPMLabError, match="run.json: ") as exc:
        dl.load_run(run)
    assert needle in str(exc.value) and "\n" not in str(exc.value)
    assert not ws.marker.exists()


# ---- with trust, your own network trains, resumes and samples


def test_a_trusted_network_of_your_own_trains_resumes_and_samples(ws):
    new = ["train", "--out", ws.path("mine"), *TINY, "--set", "model.arch='sentinel_mod:Net'",
           "--checkpoint-every", "2"]
    code, _, err = run_main(*new, "--trust-code")
    assert code == 0, err
    assert json.loads(ws.path("mine", "run.json").read_text())["config"]["model"]["arch"] == "sentinel_mod:Net"
    code, _, err = run_main("train", "--resume", ws.path("mine"), "--set", "train.iters=7", "--no-progress",
                            "--trust-code")
    assert code == 0, err
    code, _, err = run_main("sample", ws.path("mine"), "-n", "7", "--out", ws.path("s.npy"), "--trust-code")
    assert code == 0 and ws.path("s.npy").is_file(), err
    sys.modules.pop("sentinel_mod", None)
    ws.marker.unlink()
    line = _refused(*run_main("sample", ws.path("mine"), "-n", "7", "--out", ws.path("t.npy"))[::2], "sample")
    assert "--trust-code" in line and not ws.marker.exists()

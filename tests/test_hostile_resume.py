"""Hostile use that ends well: a damaged newest checkpoint is skipped with one line and training goes on
from the newest intact one; metrics rows survive resumes; paths of any spelling work from any directory;
JSON stays strict; writes that fail half-way leave whole files only."""
from __future__ import annotations

import json
import math
import os
import tomllib

import numpy as np
import pytest

from ddpmlab.config.checks import log_alpha_bar_T, prior_mismatch
from ddpmlab.config.schema import load_config
from ddpmlab.config.toml_writer import to_toml
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.runs.checkpoint import checkpoint_dirs, read_checkpoint
from ddpmlab.runs.format import load_run
from ddpmlab.runs.metrics_log import read_metrics
from ddpmlab.runs.ownership import LOCK_FILE, MARKER_FILE, DirectoryClaim
from faults import injected
from hostile_support import ENOSPC, TINY, Workspace, run_main, tree

RUN = TINY + ["--set", "train.iters=8", "--checkpoint-every", "2"]


def interrupted(tmp_path, at=5, name="run", *extra):
    """A run stopped by SIGTERM during step ``at``: checkpoints every 2 steps and at step ``at``."""
    with injected(signal_at=at):
        code, _, err = run_main("train", "--out", tmp_path / name, *RUN, *extra)
    assert code == 143, err
    return tmp_path / name


def test_damaged_newest_checkpoint_falls_back_with_one_line(tmp_path):
    run = interrupted(tmp_path)  # checkpoints 2, 4, 5
    reference = tmp_path / "reference"
    assert run_main("train", "--out", reference, *RUN)[0] == 0  # the same run, never interrupted
    damaged = run / "checkpoints" / "step_000005" / "state.safetensors"
    blob = damaged.read_bytes()
    damaged.write_bytes(blob[: len(blob) // 2])
    code, _, err = run_main("train", "--resume", run, "--no-progress")
    lines = err.strip().splitlines()
    assert code == 0 and len(lines) == 1, err
    assert "warning: step_000005 unreadable" in lines[0] and "resuming from step_000004" in lines[0], lines[0]
    kept = run / "checkpoints" / "step_000005.unreadable" / "state.safetensors"
    assert kept.read_bytes() == blob[: len(blob) // 2]  # set aside, byte for byte, never pruned
    assert [s for s, _ in checkpoint_dirs(run)] == [4, 6, 8]
    # the resumed run is the uninterrupted one: same final checkpoint, every metrics row exactly once
    a, b = read_checkpoint(run / "checkpoints" / "step_000008"), read_checkpoint(reference / "checkpoints" /
                                                                                 "step_000008")
    assert a.meta["loss_history"] == b.meta["loss_history"]
    assert [r["step"] for r in read_metrics(run / "metrics.csv")] == list(range(1, 9))
    assert load_run(run).info["summary"]["resumed_from_step"] == 4


def test_a_row_cut_short_after_the_checkpoint_is_recomputed(tmp_path):
    run = interrupted(tmp_path, at=5)  # checkpoints 2, 4, 5; rows 1..5
    with open(run / "metrics.csv", "ab") as f:
        f.write(b"6,0.12\xff")  # a crash during the next row
    assert run_main("train", "--resume", run, "--no-progress")[0] == 0
    rows = read_metrics(run / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, 9))


def test_metrics_rows_before_the_checkpoint_are_never_dropped(tmp_path):
    run = interrupted(tmp_path)
    text = (run / "metrics.csv").read_text().splitlines()
    text[3] = "3,zero,0.002,0.1"  # an edit in the row of step 3 (before checkpoint 5)
    (run / "metrics.csv").write_text("\n".join(text) + "\n")
    before = tree(run)
    code, _, err = run_main("train", "--resume", run, "--no-progress")
    assert code == 2 and "line 4 cannot be read" in err and len(err.strip().splitlines()) == 1
    assert tree(run) == before
    text[3] = "3,0.5,0.002,0.1"  # repaired by hand: the resume goes on and keeps the row
    (run / "metrics.csv").write_text("\n".join(text) + "\n")
    assert run_main("train", "--resume", run, "--no-progress")[0] == 0
    rows = read_metrics(run / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, 9)) and rows[2]["loss"] == 0.5


@pytest.mark.parametrize("name", ["back\\slash.npy", "tab\there.npy", "quotes\"'both.npy", "all\\\t\"'.npy",
                                  "new\nline.npy"])
def test_data_paths_pass_through_verbatim_and_absolute(tmp_path, monkeypatch, name):
    data = tmp_path / name
    np.save(data, np.random.default_rng(0).normal(size=(200, 2)))
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main("train", "--out", "run", "--data", name, *TINY, "--set", "train.iters=4",
                            "--checkpoint-every", "2")
    assert code == 0 and err == "", err
    cfg = load_run(tmp_path / "run").cfg
    assert cfg.data.path == str(data)  # absolute, every character kept
    assert tomllib.loads((tmp_path / "run" / "config.toml").read_text())["data"]["path"] == str(data)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # resuming and drawing figures work from another directory
    assert run_main("train", "--resume", tmp_path / "run", "--no-progress", "--set", "train.iters=6")[0] == 0
    if name.startswith("all"):  # figures read the data file again (once is enough: they are slow)
        code, _, err = run_main("figures", tmp_path / "run", "-n", "20", "--out", "figs")
        assert code == 0 and err == "", err
        assert (elsewhere / "figs" / "scatter.png").is_file()


def test_no_step_writes_strict_json(tmp_path):
    code, _, err = run_main("train", "--out", tmp_path / "run", *TINY, "--set", "train.iters=0")
    assert code == 0, err

    def refuse(constant):
        raise AssertionError(f"bare {constant} in JSON")

    for name in ("metrics.json", "run.json"):
        doc = json.loads((tmp_path / "run" / name).read_text(), parse_constant=refuse)
        summary = doc.get("summary", doc)
        assert summary["final_loss"] is None and summary["iters"] == 0


def _in_checkpoints(fd, *args) -> bool:
    return "/checkpoints/" in os.readlink(f"/proc/self/fd/{fd}")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc/self/fd to tell which file an fsync is for")
def test_enospc_in_a_checkpoint_leaves_whole_files_only(tmp_path, monkeypatch):
    """A full disk while a checkpoint is written: one line, exit 2, no temporary or partial checkpoint;
    the earlier checkpoint and rows are intact and the run resumes once there is room."""
    run = interrupted(tmp_path, at=3)  # checkpoints 2, 3
    before = tree(run)
    ws = Workspace(tmp_path, {"root": tmp_path}, monkeypatch)
    ws.fail_os(os, "fsync", ENOSPC, when=_in_checkpoints)  # checkpoint 4's first file cannot be written
    code, _, err = run_main("train", "--resume", run, "--no-progress")
    monkeypatch.undo()
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert "cannot write" in lines[0] and "step_000004: No space left on device" in lines[0], lines[0]
    assert not [p for p in run.rglob("*") if p.name.startswith((".tmp-", ".old-")) or p.name.endswith(".tmp")]
    after = tree(run)
    assert all(after[k] == v for k, v in before.items() if k.startswith("checkpoints"))
    assert [s for s, _ in checkpoint_dirs(run)] == [2, 3]
    assert run_main("train", "--resume", run, "--no-progress")[0] == 0
    assert [r["step"] for r in read_metrics(run / "metrics.csv")] == list(range(1, 9))


def test_sample_force_replaces_and_a_new_parent_is_created(tmp_path):
    assert run_main("train", "--out", tmp_path / "run", *TINY)[0] == 0
    out = tmp_path / "new" / "s.npy"
    assert run_main("sample", tmp_path / "run", "-n", "7", "--out", out)[0] == 0
    first = out.read_bytes()
    assert run_main("sample", tmp_path / "run", "-n", "9", "--out", out)[0] == 2 and out.read_bytes() == first
    assert run_main("sample", tmp_path / "run", "-n", "9", "--out", out, "--force")[0] == 0
    assert np.load(out).shape == (9, 1)


def test_directory_claim_reuse_and_cleanup(tmp_path):
    """A new directory gets its kind's marker; a command writing nothing leaves nothing (not even the
    directories it created); the same kind may come back (a tutorial replaces its own files), another
    kind may not; the lock file is gone after every command."""
    target = tmp_path / "a" / "b"
    with pytest.raises(DDPMLabError, match="boom"), DirectoryClaim(target, "tutorial"):
        raise DDPMLabError("boom")  # failed before writing: a, a/b, marker and lock all removed
    assert not (tmp_path / "a").exists()
    with DirectoryClaim(target, "tutorial"):
        (target / "run.json").write_text("{}")
    assert json.loads((target / MARKER_FILE).read_text())["kind"] == "tutorial"
    with DirectoryClaim(target, "tutorial", accept=(None, "tutorial")):  # the same kind: allowed
        (target / "run.json").write_text("{}")
    with pytest.raises(DDPMLabError, match="holds a tutorial run; ddpmlab train would overwrite"):
        with DirectoryClaim(target, "train", accept=(None, "train")):
            pass
    assert sorted(p.name for p in target.iterdir()) == [MARKER_FILE, "run.json"]  # no lock file left
    with DirectoryClaim(target, "tutorial", accept=("tutorial",)):
        with pytest.raises(DDPMLabError, match="in use by another ddpmlab command"):
            with DirectoryClaim(target, "tutorial", accept=("tutorial",)):
                pass
    assert not (target / LOCK_FILE).exists()


def test_toml_escapes_every_control_character():
    cfg = load_config(None)
    cfg.data.name, cfg.data.path = "file", "".join(chr(c) for c in range(0x20)) + "\x7f\\\"'é"
    assert tomllib.loads(to_toml(cfg))["data"]["path"] == cfg.data.path


@pytest.mark.parametrize("name", ["tutorial", "default", "hybrid", "vlb", "moons", "eight_gaussians", "digits"])
def test_packaged_configs_pass_the_new_checks(name):
    """No false alarm: every packaged recipe passes the precision and memory checks, with room to spare."""
    cfg = load_config(name)
    assert log_alpha_bar_T(cfg) > 2 * math.log(np.finfo(np.float32).eps) + 5


def test_prior_mismatch_is_the_prior_term_of_a_gaussian_fit():
    """The warning's KL against a Monte-Carlo estimate of KL(q(x_T) || N(0, 1)) for Gaussian data."""
    cfg = load_config(None, ["data.name='file'", "data.path='x.npy'", "data.standardize=false"])
    log_abar = log_alpha_bar_T(cfg)
    abar, mean, std = math.exp(log_abar), 3.0, 20_000.0
    rng = np.random.default_rng(0)
    v = abar * std ** 2 + 1 - abar
    x = rng.normal(math.sqrt(abar) * mean, math.sqrt(v), 400_000)
    log_q = -0.5 * ((x - math.sqrt(abar) * mean) ** 2 / v + math.log(2 * math.pi * v))
    log_p = -0.5 * (x ** 2 + math.log(2 * math.pi))
    kl_mc = float(np.mean(log_q - log_p))
    text = prior_mismatch(cfg, mean, std, log_abar)
    kl = float(text.split("KL ")[1].split(" ")[0])
    assert abs(kl - kl_mc) < 0.02 * kl_mc + 0.01, (kl, kl_mc)
    assert prior_mismatch(cfg, 0.0, 1.0, log_abar) is None  # unit-scale data: no warning
    cfg.data.standardize = True
    assert prior_mismatch(cfg, mean, std, log_abar) is None  # standardised: the setting that fixes it

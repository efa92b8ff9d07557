"""Exact resume and reproducibility: an interrupted run, resumed, ends bit-identical to an uninterrupted one.

Bit-identity on CPU assumes one machine, one PyTorch build and one thread count (the subprocess test
pins OMP_NUM_THREADS=1 and trains its reference under ``torch.set_num_threads(1)``).
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from ddpmlab.cli import main
from ddpmlab.config.schema import load_config
from ddpmlab.config.toml_writer import to_toml
from ddpmlab.runs.checkpoint import checkpoint_dirs, read_checkpoint
from ddpmlab.runs.metrics_log import read_metrics
from ddpmlab.training.signals import TrainingInterrupted
from ddpmlab.workflows.pipeline import fit, train_run
from faults import Faults

TINY = ["schedule.kind='linear'", "schedule.steps=10", "schedule.beta_start=1e-3", "schedule.beta_end=0.2",
        "model.width=16", "model.depth=1", "model.time_dim=8", "data.n_train=0", "train.iters=12",
        "train.batch_size=16", "train.lr=1e-3"]
CONFIGS = {
    # EMA, warm-up, cosine decay, gradient clipping, weight decay: every piece of optimiser state
    "simple": TINY + ["train.ema_decay=0.9", "train.warmup=3", "train.lr_decay='cosine'", "train.grad_clip=0.5",
                      "train.weight_decay=0.01"],
    # importance sampling of t: the sampler's loss history must travel (T = 10 x 10 losses fill it by step ~7)
    "hybrid_importance": TINY + ["model.var_type='learned_range'", "train.objective='hybrid'",
                                 "train.importance_sampling=true", "train.iters=16"],
    # class labels with classifier-free label dropout: the dropout's draws come from the trainer's generator
    "labelled_dropout": TINY + ["data.labels=true", "train.label_dropout=0.3"],
    # the seed's networks and fused whole-trajectory bound on a fixed training set
    "seed_bound": TINY + ["model.arch='seed'", "model.mean_type='previous_x'", "model.var_type='learned'",
                          "train.objective='trajectory_bound'", "data.n_train=64", "train.batch_size=0"],
}




def tiny_cfg(name="simple", *extra):
    return load_config(None, CONFIGS[name] + list(extra))


def weights(run_dir):
    return load_file(str(run_dir / "model.safetensors"))


def last_checkpoint(run_dir):
    return read_checkpoint(checkpoint_dirs(run_dir)[-1][1])


def assert_same_tensors(a: dict, b: dict):
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_resume_is_bit_identical(tmp_path, name):
    cfg = tiny_cfg(name, "train.checkpoint_every=4")
    full = train_run(cfg, tmp_path / "full", progress=False)

    with pytest.raises(TrainingInterrupted) as info:  # SIGTERM to ourselves during step 6
        train_run(cfg, tmp_path / "cut", progress=False, callbacks=[Faults(signal_at=6)])
    assert info.value.step == 6 and info.value.exit_code == 143
    assert [s for s, _ in checkpoint_dirs(tmp_path / "cut")] == [4, 6]
    assert not (tmp_path / "cut" / "run.json").exists()
    resumed = train_run(cfg, tmp_path / "cut", progress=False, resume=True)

    assert_same_tensors(weights(tmp_path / "full"), weights(tmp_path / "cut"))  # model.* and ema.*
    a, b = last_checkpoint(tmp_path / "full"), last_checkpoint(tmp_path / "cut")
    assert_same_tensors(a.tensors, b.tensors)  # optimiser moments and steps, RNG states, sampler history
    assert a.meta["loss_history"] == b.meta["loss_history"]
    assert resumed["final_loss"] == full["final_loss"] and resumed["resumed_from_step"] == 6
    rows_full = read_metrics(tmp_path / "full" / "metrics.csv")
    rows_cut = read_metrics(tmp_path / "cut" / "metrics.csv")
    assert [r["step"] for r in rows_cut] == list(range(1, cfg.train.iters + 1))  # no duplicated rows
    assert [(r["loss"], r["lr"]) for r in rows_cut] == [(r["loss"], r["lr"]) for r in rows_full]


def test_same_seed_same_run_and_seed_recorded(tmp_path):
    cfg = tiny_cfg("simple")
    a = train_run(cfg, tmp_path / "a", progress=False)
    b = train_run(cfg, tmp_path / "b", progress=False)
    assert_same_tensors(weights(tmp_path / "a"), weights(tmp_path / "b"))
    assert a["final_loss"] == b["final_loss"]
    assert fit(cfg, progress=False).loss_history == last_checkpoint(tmp_path / "a").meta["loss_history"]
    train_run(tiny_cfg("simple", "train.seed=1"), tmp_path / "c", progress=False)
    wa, wc = weights(tmp_path / "a"), weights(tmp_path / "c")
    assert not all(torch.equal(wa[k], wc[k]) for k in wa)
    run = json.loads((tmp_path / "a" / "run.json").read_text())
    assert run["config"]["train"]["seed"] == 0 and run["summary"]["seed"] == 0
    assert last_checkpoint(tmp_path / "c").meta["seed"] == 1


def test_resume_can_train_a_finished_run_further(tmp_path):
    cfg = load_config(None, TINY + ["train.ema_decay=0.9"])  # constant lr: steps 1..6 do not depend on iters
    train_run(load_config(None, TINY + ["train.ema_decay=0.9", "train.iters=6"]), tmp_path / "short", progress=False)
    train_run(cfg, tmp_path / "short", progress=False, resume=True)
    train_run(cfg, tmp_path / "long", progress=False)
    assert_same_tensors(weights(tmp_path / "short"), weights(tmp_path / "long"))


def test_sigterm_mid_run_then_resume(tmp_path):
    """A real SIGTERM from outside: exit 143 with a checkpoint; ``ddpmlab train --resume`` (here in this
    process, one thread like the child) ends where an uninterrupted run of the same length ends, bit for bit."""
    cfg_file = tmp_path / "tiny.toml"
    # constant learning rate, so the resumed run may stop at any step: iters only ends the loop
    cfg_file.write_text(to_toml(load_config(None, TINY + ["train.iters=100000", "train.ema_decay=0.9"])))
    run_dir = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ddpmlab", "train", "--config", str(cfg_file), "--out", str(run_dir),
           "--checkpoint-every", "5", "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.monotonic() + 60
        while not checkpoint_dirs(run_dir) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        assert checkpoint_dirs(run_dir), "no checkpoint appeared"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 143, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted by SIGTERM" in lines[0] and "--resume" in lines[0], err
    k = checkpoint_dirs(run_dir)[-1][0]
    assert f"after step {k};" in lines[0] and not (run_dir / "run.json").exists()

    iters = k + 5
    assert main(["train", "--resume", str(run_dir), "--set", f"train.iters={iters}", "--no-progress"]) == 0
    reference = fit(load_config(None, TINY + [f"train.iters={iters}", "train.ema_decay=0.9"]), progress=False)
    got = weights(run_dir)
    for name, v in reference.model.state_dict().items():
        assert torch.equal(got[f"model.{name}"], v), name
    for name, v in reference.ema.state_dict().items():
        assert torch.equal(got[f"ema.{name}"], v), name
    assert [row["step"] for row in read_metrics(run_dir / "metrics.csv")] == list(range(1, iters + 1))

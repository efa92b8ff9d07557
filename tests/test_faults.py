"""Faults during training: a non-finite loss, SIGINT, gradient clipping, signal handlers put back."""
import hashlib
import signal

import pytest
import torch

from ddpmlab.cli import main
from ddpmlab.config.schema import load_config
from ddpmlab.config.toml_writer import to_toml
from ddpmlab.runs.checkpoint import checkpoint_dirs, read_checkpoint
from ddpmlab.runs.metrics_log import read_metrics
from ddpmlab.training.signals import NonFiniteLoss, TrainingInterrupted
from ddpmlab.training.trainer import Trainer
from ddpmlab.workflows.pipeline import train_run
from faults import Faults, injected

TINY = ["schedule.kind='linear'", "schedule.steps=10", "schedule.beta_start=1e-3", "schedule.beta_end=0.2",
        "model.width=16", "model.depth=1", "model.time_dim=8", "data.n_train=0", "train.iters=10",
        "train.batch_size=16", "train.lr=1e-3"]


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_cfg(*extra):
    return load_config(None, TINY + list(extra))


def snapshot(root):
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def train_cli(tmp_path, capsys, run_dir, *args):
    """``ddpmlab train`` in this process (the CLI's exit code and stderr, without a new interpreter)."""
    cfg_file = tmp_path / "tiny.toml"
    cfg_file.write_text(to_toml(tiny_cfg()))
    capsys.readouterr()
    code = main(["train", "--config", str(cfg_file), "--out", str(run_dir), "--no-progress", *args])
    return code, capsys.readouterr().err


def test_nan_loss_stops_with_message_and_keeps_last_good_checkpoint(tmp_path, capsys):
    run = tmp_path / "run"
    with injected(nan_at=7):
        code, err = train_cli(tmp_path, capsys, run, "--checkpoint-every", "3")
    assert code == 3
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "non-finite loss (nan) at step 7" in lines[0] and "step_000006" in lines[0], lines[0]
    assert [s for s, _ in checkpoint_dirs(run)] == [3, 6]
    assert read_checkpoint(run / "checkpoints" / "step_000006").step == 6  # intact: checksums pass
    for name in ("run.json", "model.safetensors", "config.toml", "metrics.json"):
        assert not (run / name).exists(), name
    assert [row["step"] for row in read_metrics(run / "metrics.csv")] == list(range(1, 7))


def test_nan_after_resume_leaves_the_checkpoints_untouched(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingInterrupted):
        train_run(tiny_cfg("train.checkpoint_every=2"), run, progress=False, callbacks=[Faults(signal_at=4)])
    checkpoints = snapshot(run / "checkpoints")
    with pytest.raises(NonFiniteLoss, match="at step 5.*step_000004"):
        train_run(tiny_cfg("train.checkpoint_every=2"), run, progress=False, resume=True,
                  callbacks=[Faults(nan_at=5)])
    assert snapshot(run / "checkpoints") == checkpoints
    assert not (run / "run.json").exists()


def test_nan_before_any_checkpoint_writes_no_run(tmp_path):
    with pytest.raises(NonFiniteLoss, match="at step 1; .*no checkpoint had been written"):
        train_run(tiny_cfg(), tmp_path, progress=False, callbacks=[Faults(nan_at=1)])
    assert not list(tmp_path.iterdir())  # no checkpoint, no run files, no metrics.csv


def test_sigint_checkpoints_and_exits_130(tmp_path, capsys):
    run = tmp_path / "run"
    with injected(signal_at=4, sigint=True):  # a real SIGINT to this process during step 4
        code, err = train_cli(tmp_path, capsys, run)
    assert code == 130, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted by SIGINT after step 4" in lines[0], err
    assert [s for s, _ in checkpoint_dirs(run)] == [4] and not (run / "run.json").exists()


def test_signal_handlers_are_put_back(tmp_path):
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    train_run(tiny_cfg("train.iters=2"), tmp_path, progress=False)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_gradient_norm_clipping():
    clip = 1e-3
    trainer = Trainer.from_config(tiny_cfg(f"train.grad_clip={clip}"))
    trainer.train_step()
    norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in trainer.model.parameters()]))
    assert norm <= clip * (1 + 1e-5)
    unclipped = Trainer.from_config(tiny_cfg())
    unclipped.train_step()
    assert torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in unclipped.model.parameters()])) > 10 * clip


def test_interrupted_exit_codes():
    assert TrainingInterrupted(signal.SIGINT, 3, None).exit_code == 130
    assert TrainingInterrupted(signal.SIGTERM, 3, None).exit_code == 143

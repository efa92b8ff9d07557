"""Checkpoint files: layout, last-K pruning, atomic writes, and refusal of damaged or mismatched ones."""
import hashlib
import inspect
import json
import shutil

import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

import ddpmlab.runs.checkpoint as checkpoint_module
import ddpmlab.training.trainer as training_module
from ddpmlab.cli import main
from ddpmlab.config.schema import load_config
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.runs.checkpoint import META_FILE, TENSORS_FILE, _json_checksum, checkpoint_dirs, read_checkpoint
from ddpmlab.runs.format import load_run
from ddpmlab.runs.metrics_log import read_metrics
from ddpmlab.runs.resume import resume_config
from ddpmlab.training.signals import TrainingInterrupted
from ddpmlab.workflows.pipeline import train_run
from faults import Faults

TINY = ["schedule.kind='linear'", "schedule.steps=10", "schedule.beta_start=1e-3", "schedule.beta_end=0.2",
        "model.width=16", "model.depth=1", "model.time_dim=8", "data.n_train=0", "train.iters=10",
        "train.batch_size=16", "train.lr=1e-3", "train.ema_decay=0.9"]




def tiny_cfg(*extra):
    return load_config(None, TINY + list(extra))


def snapshot(root):
    """Every file under ``root`` with its sha256: to show that a refused run changed nothing."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    """A run stopped by SIGTERM after step 6 (checkpoints at 4 and 6), to copy and damage."""
    root = tmp_path_factory.mktemp("interrupted") / "run"
    with pytest.raises(TrainingInterrupted):
        train_run(tiny_cfg("train.checkpoint_every=4"), root, progress=False, callbacks=[Faults(signal_at=6)])
    return root


def test_layout_keep_last_k_and_no_temporaries(tmp_path):
    cfg = tiny_cfg("train.checkpoint_every=2", "train.keep_checkpoints=3")
    train_run(cfg, tmp_path, progress=False)
    assert [s for s, _ in checkpoint_dirs(tmp_path)] == [6, 8, 10]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step_000006", "step_000008",
                                                                          "step_000010"]
    # no temporary files or directories left behind (the directory's marker says who wrote it)
    assert not [p for p in tmp_path.rglob(".*") if p.name != ".ddpmlab.json"]
    ckpt = read_checkpoint(tmp_path / "checkpoints" / "step_000010")
    meta = json.loads((tmp_path / "checkpoints" / "step_000010" / META_FILE).read_text())
    assert meta["format"] == "ddpmlab-checkpoint" and meta["version"] == 1 and meta["step"] == 10
    assert meta["seed"] == 0 and meta["world_size"] == 1 and len(meta["loss_history"]) == 10
    assert meta["tensors_sha256"] == hashlib.sha256((ckpt.path / TENSORS_FILE).read_bytes()).hexdigest()
    names = set(ckpt.tensors)
    assert {n.split(".")[0] for n in names} == {"model", "ema", "optimizer", "rank0"}
    assert {"rank0.generator", "rank0.torch_rng"} <= names and ckpt.tensors["rank0.generator"].dtype == torch.uint8
    assert {n.split(".")[-1] for n in names if n.startswith("optimizer.")} == {"exp_avg", "exp_avg_sq", "step"}
    run = load_run(tmp_path)  # the finished run still loads for `ddpmlab sample` / `evaluate`
    for k, v in run.model.state_dict().items():
        assert torch.equal(v, ckpt.tensors[f"ema.{k}"])
    rows = read_metrics(tmp_path / "metrics.csv")
    assert [r["step"] for r in rows] == list(range(1, 11)) and rows[-1]["loss"] == meta["loss_history"][-1]
    assert rows[-1]["lr"] == 1e-3 and rows[-1]["elapsed_s"] > 0


def test_no_pickle_anywhere_in_checkpoints():
    for module in (checkpoint_module, training_module):
        src = inspect.getsource(module)
        assert "torch.load" not in src and "import pickle" not in src


def _truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _flip_tensor_byte(path):
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x40
    path.write_bytes(bytes(data))


def _edit_step(path):
    meta = json.loads(path.read_text())
    meta["step"] = 5
    path.write_text(json.dumps(meta))


def _wrong_shape_with_valid_checksums(ckpt_dir):
    """A consistent checkpoint of a different model: only the tensor check can catch it."""
    tensors = st_load((ckpt_dir / TENSORS_FILE).read_bytes())
    name = next(k for k in tensors if k.startswith("model.") and tensors[k].dim() == 2)
    tensors[name] = torch.zeros(tensors[name].shape[0] + 1, tensors[name].shape[1])
    blob = st_save(tensors)
    (ckpt_dir / TENSORS_FILE).write_bytes(blob)
    meta = json.loads((ckpt_dir / META_FILE).read_text())
    meta["tensors_sha256"] = hashlib.sha256(blob).hexdigest()
    meta["checksum"] = _json_checksum(meta)
    (ckpt_dir / META_FILE).write_text(json.dumps(meta))


DAMAGE = {
    "truncated tensors": (lambda d: _truncate(d / TENSORS_FILE), TENSORS_FILE, "sha256"),
    "truncated json": (lambda d: _truncate(d / META_FILE), META_FILE, "not valid JSON"),
    "tampered tensors": (lambda d: _flip_tensor_byte(d / TENSORS_FILE), TENSORS_FILE, "sha256"),
    "tampered json": (lambda d: _edit_step(d / META_FILE), META_FILE, "checksum"),
    "missing tensors": (lambda d: (d / TENSORS_FILE).unlink(), TENSORS_FILE, "cannot read"),
    "mismatched tensor shapes": (_wrong_shape_with_valid_checksums, TENSORS_FILE, "this run needs"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_checkpoint_is_refused_and_nothing_changes(tmp_path, interrupted, damage):
    """The only checkpoint damaged: nothing to fall back to (``test_hostile`` covers the fallback)."""
    run = tmp_path / "run"
    shutil.copytree(interrupted, run)
    shutil.rmtree(run / "checkpoints" / "step_000004")
    spoil, filename, needle = DAMAGE[damage]
    spoil(run / "checkpoints" / "step_000006")
    before = snapshot(run)
    with pytest.raises(DDPMLabError) as info:
        train_run(tiny_cfg("train.checkpoint_every=4"), run, progress=False, resume=True)
    msg = str(info.value)
    assert "\n" not in msg and filename in msg and "step_000006" in msg and needle in msg, msg
    assert snapshot(run) == before


def test_mismatched_config_is_refused(tmp_path, interrupted):
    run = tmp_path / "run"
    shutil.copytree(interrupted, run)
    before = snapshot(run)
    with pytest.raises(DDPMLabError, match="model.width cannot change"):
        resume_config(run, ["model.width=32"])  # what `--resume DIR --set model.width=32` does
    assert resume_config(run, ["train.iters=20", "train.device='cpu'"]).train.iters == 20
    with pytest.raises(DDPMLabError, match=r"different config \(train.lr differ"):
        train_run(tiny_cfg("train.checkpoint_every=4", "train.lr=0.01"), run, progress=False, resume=True)
    # a checkpoint copied in from another run (a wider model), self-consistent: refused by its config
    other = tmp_path / "other"
    train_run(tiny_cfg("model.width=32", "train.iters=2"), other, progress=False)
    shutil.copytree(other / "checkpoints" / "step_000002", run / "checkpoints" / "step_000007")
    before = snapshot(run)
    with pytest.raises(DDPMLabError, match="step_000007.*model.width"):
        train_run(tiny_cfg("train.checkpoint_every=4"), run, progress=False, resume=True)
    assert snapshot(run) == before


def test_a_new_run_never_overwrites_an_old_one(tmp_path, interrupted):
    run = tmp_path / "run"
    shutil.copytree(interrupted, run)
    before = snapshot(run)
    with pytest.raises(DDPMLabError, match="unfinished run; continue it with --resume"):
        train_run(tiny_cfg(), run, progress=False)
    assert snapshot(run) == before
    with pytest.raises(DDPMLabError, match="no checkpoint to resume"):
        train_run(tiny_cfg(), tmp_path / "empty", progress=False, resume=True)


def test_cli_refuses_a_corrupt_checkpoint_in_one_line(tmp_path, interrupted, capsys):
    run = tmp_path / "run"
    shutil.copytree(interrupted, run)
    _truncate(run / "checkpoints" / "step_000006" / TENSORS_FILE)
    _truncate(run / "checkpoints" / "step_000004" / TENSORS_FILE)  # no intact one to fall back to
    before = snapshot(run)
    capsys.readouterr()
    assert main(["train", "--resume", str(run), "--no-progress"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "step_000006" in lines[0] and "sha256" in lines[0], lines
    assert snapshot(run) == before

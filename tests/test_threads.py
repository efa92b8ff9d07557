"""The thread policy: its choices as a pure function of the work and the cores, the multiply-add count it
is fed, and that ``--threads`` / ``train.threads`` (or the policy's choice) is what the work runs with
and what the run records."""
import json

import pytest
import torch
from torch import nn

from ddpmlab.cli import main
from ddpmlab.config.schema import load_config
from ddpmlab.core import threads as policy
from ddpmlab.core.threads import MACS_PER_THREAD, choose_threads, cores_from, count_macs, env_thread_limit
from ddpmlab.workflows import pipeline, threads as wthreads

TINY = ["schedule.steps=10", "model.width=16", "model.depth=1", "train.iters=3", "train.batch_size=32"]


@pytest.mark.parametrize("macs, cores, requested, env, expected", [
    (23e6, 2, 0, None, 1),                     # the default recipe's step: small, one thread
    (MACS_PER_THREAD - 1, 16, 0, None, 1),
    (2 * MACS_PER_THREAD, 16, 0, None, 2),     # one thread per MACS_PER_THREAD multiply-adds
    (3.5 * MACS_PER_THREAD, 16, 0, None, 3),
    (1e12, 2, 0, None, 2),                     # never more than the usable cores
    (1e12, 16, 0, 4, 4),                       # nor than OMP_NUM_THREADS / MKL_NUM_THREADS
    (1e12, 1, 0, None, 1),
    (0, 0, 0, None, 1),                        # at least one
    (1e3, 2, 3, None, 3),                      # an explicit count is used as given
    (1e12, 16, 5, 1, 5),                       # ... also beyond the environment's cap
])
def test_choose_threads(macs, cores, requested, env, expected):
    assert choose_threads(macs, cores, requested, env) == expected


@pytest.mark.parametrize("affinity, quota, local, expected", [
    (8, None, 1, 8), (8, 2.5, 1, 3), (8, 16.0, 1, 8), (8, None, 2, 4), (8, None, 3, 2), (2, None, 4, 1),
    (4, 0.5, 1, 1)])
def test_cores_from(affinity, quota, local, expected):
    assert cores_from(affinity, quota, local) == expected


def test_env_thread_limit():
    assert env_thread_limit({}) is None
    assert env_thread_limit({"OMP_NUM_THREADS": "4"}) == 4
    assert env_thread_limit({"OMP_NUM_THREADS": "4", "MKL_NUM_THREADS": "2"}) == 2
    assert env_thread_limit({"OMP_NUM_THREADS": "abc", "MKL_NUM_THREADS": "0"}) is None


def test_count_macs_matches_the_layers_by_hand():
    mlp = nn.Sequential(nn.Linear(3, 7), nn.ReLU(), nn.Linear(7, 5))
    x = torch.zeros(4, 3)
    assert count_macs(mlp, lambda: mlp(x)) == 4 * (3 * 7 + 7 * 5)
    conv = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2))
    img = torch.zeros(2, 3, 6, 6)
    # each output number: in_channels / groups x kernel multiply-adds
    assert count_macs(conv, lambda: conv(img)) == 2 * 8 * 36 * (3 * 9) + 2 * 8 * 9 * (4 * 9)
    assert not conv[0]._forward_hooks  # hooks removed


def _model(overrides):
    from ddpmlab.training.trainer import Trainer

    return Trainer.from_config(load_config("default", overrides)).model


def test_policy_on_models(monkeypatch):
    """The default recipe trains single-threaded on any machine; a large network gets the cores."""
    monkeypatch.setattr(wthreads, "usable_cores", lambda: 4)
    monkeypatch.setattr(wthreads, "env_thread_limit", lambda: None)
    default = _model([])
    per_row = wthreads.macs_per_row(default)
    m = load_config("default").model  # an MLP of width w and depth d: 2 d w x w in the blocks, w x w in the
    w, d = m.width, m.depth  # time MLP, and the input, output and time-embedding layers (at most 2 w x w more)
    assert 2 * d * w * w < per_row < (2 * d + 3) * w * w + m.time_dim * w
    assert wthreads.thread_count(0, default, 1024) == 1
    big = _model(["model.width=512", "model.depth=4"])
    assert wthreads.thread_count(0, big, 10_000) == 4
    assert wthreads.thread_count(2, big, 10_000) == 2
    monkeypatch.setattr(wthreads, "env_thread_limit", lambda: 3)
    assert wthreads.thread_count(0, big, 10_000) == 3


def test_using_threads_restores():
    before = torch.get_num_threads()
    with policy.using_threads(3) as n:
        assert n == 3 and torch.get_num_threads() == 3
    assert torch.get_num_threads() == before


def test_intra_op_threads_sets_restores_and_none_leaves_alone():
    before = torch.get_num_threads()
    with policy.intra_op_threads(before + 1):
        assert torch.get_num_threads() == before + 1
        with policy.intra_op_threads(None):
            assert torch.get_num_threads() == before + 1
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), policy.intra_op_threads(before + 2):
        raise RuntimeError("the count is restored on the way out of an error too")
    assert torch.get_num_threads() == before


def _checkpoint_threads(out):
    (meta,) = [json.loads(p.read_text()) for p in out.glob("checkpoints/*/state.json")]
    return meta["num_threads"]


def test_train_threads_flag_is_applied_and_recorded(tmp_path):
    """--threads 3 (neither the machine's default nor the policy's 1): the checkpoint, written while
    training, saw 3 threads; metrics.json and run.json record 3; the config keeps train.threads."""
    out = tmp_path / "run"
    sets = [a for s in TINY for a in ("--set", s)]
    assert main(["train", "--config", "default", "--out", str(out), "--no-progress", "--threads", "3", *sets]) == 0
    assert _checkpoint_threads(out) == 3
    assert json.loads((out / "metrics.json").read_text())["threads"] == 3
    assert json.loads((out / "run.json").read_text())["summary"]["threads"] == 3
    assert "threads = 3" in (out / "config.toml").read_text()


def test_auto_threads_applied_and_recorded(tmp_path, monkeypatch):
    monkeypatch.setattr(wthreads, "usable_cores", lambda: 2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the policy must bring it down to 1 for this small model
    try:
        summary = pipeline.train_run(load_config("default", TINY), tmp_path / "auto", progress=False)
        assert summary["threads"] == 1 and _checkpoint_threads(tmp_path / "auto") == 1
        assert torch.get_num_threads() == 2  # restored after
        summary = pipeline.train_run(load_config("default", TINY + ["train.threads=3"]), tmp_path / "set",
                                     progress=False)
        assert summary["threads"] == 3 and _checkpoint_threads(tmp_path / "set") == 3
    finally:
        torch.set_num_threads(before)


def test_sample_and_evaluate_run_with_the_threads(tmp_path, monkeypatch):
    out = tmp_path / "run"
    pipeline.train_run(load_config("default", TINY), out, progress=False)
    seen = []

    def spy(fn):
        def wrapped(*a, **k):
            seen.append(torch.get_num_threads())
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(pipeline, "draw_samples", spy(pipeline.draw_samples))
    assert main(["sample", str(out), "-n", "20", "--out", str(tmp_path / "a.npy"), "--threads", "3"]) == 0
    assert main(["sample", str(out), "-n", "20", "--out", str(tmp_path / "b.npy")]) == 0
    from ddpmlab.evaluation import finished

    monkeypatch.setattr(finished, "evaluate_run", spy(finished.evaluate_run))
    assert main(["evaluate", str(out), "--threads", "3", "--n-bound", "50", "--n-ode", "0", "--samples", "50"]) == 0
    assert seen == [3, 1, 3]
    assert main(["sample", str(out), "-n", "5", "--out", str(tmp_path / "c.npy"), "--threads", "-1"]) == 2

"""torchrun with 2 CPU processes (gloo): different examples and noise per rank, identical weights at the end,
and a first-step gradient equal to one process's gradient over the union of the ranks' batches."""
import json
import os
import subprocess
import sys

import pytest
from conftest import FAULT_RUNNER
import torch
from safetensors.torch import load_file

from ddpmlab.config.build import build_model
from ddpmlab.config.schema import load_config
from ddpmlab.config.toml_writer import to_toml
from ddpmlab.core.diffusion import q_sample
from ddpmlab.core.utils import DDPMLabError, mean_flat
from ddpmlab.data.base import make_training_data
from ddpmlab.objectives.losses import make_objective
from ddpmlab.runs.checkpoint import checkpoint_dirs, read_checkpoint
from ddpmlab.runs.metrics_log import read_metrics
from ddpmlab.training.distributed import DistContext, local_batch_size, rank_seed, shard

CFG = ["schedule.kind='linear'", "schedule.steps=10", "schedule.beta_start=1e-3", "schedule.beta_end=0.2",
       "model.width=16", "model.depth=1", "model.time_dim=8", "data.n_train=64", "train.iters=6",
       "train.batch_size=16", "train.lr=1e-3", "train.ema_decay=0.9", "train.grad_clip=1.0", "train.seed=5"]


def torchrun(*args, env=None):
    """``torchrun --standalone --nproc_per_node=2 -m ddpmlab train ...`` on CPU, one thread per process."""
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           FAULT_RUNNER, "train", "--no-progress", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, timeout=240)


def test_rank_seeds_shards_and_batch_split():
    assert len({rank_seed(0, r) for r in range(4)} | {rank_seed(1, r) for r in range(4)}) == 8
    cfg = load_config(None, CFG)
    data = make_training_data(cfg.data, torch.Generator().manual_seed(0))
    parts = [shard(data, DistContext(rank=r, world_size=3)).train for r in range(3)]
    assert torch.equal(torch.cat(parts).sort(0).values, data.train.sort(0).values)  # disjoint, and all of it
    assert local_batch_size(16, data, DistContext(rank=0, world_size=2)) == 8
    with pytest.raises(DDPMLabError, match="divisible by the number of processes"):
        local_batch_size(16, data, DistContext(rank=0, world_size=3))
    with pytest.raises(DDPMLabError, match="do not split evenly"):
        local_batch_size(0, data, DistContext(rank=0, world_size=3))


def test_torchrun_two_processes_gloo(tmp_path):
    cfg = load_config(None, CFG)
    cfg_file, run, dump = tmp_path / "tiny.toml", tmp_path / "run", tmp_path / "dump"
    cfg_file.write_text(to_toml(cfg))
    dump.mkdir()
    r = torchrun("--config", str(cfg_file), "--out", str(run), "--checkpoint-every", "3",
                 env={"DDPMLAB_TEST_DUMP_DIR": str(dump)})
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.count("trained 6 steps") == 1  # only rank 0 reports

    # I/O on rank 0 only: one run, one metrics row per step, checkpoints holding both ranks' RNG states
    summary = json.loads((run / "run.json").read_text())["summary"]
    assert summary["world_size"] == 2 and summary["seed"] == 5
    assert [row["step"] for row in read_metrics(run / "metrics.csv")] == list(range(1, 7))
    ckpt = read_checkpoint(checkpoint_dirs(run)[-1][1])
    assert ckpt.meta["world_size"] == 2
    assert not torch.equal(ckpt.tensors["rank0.generator"], ckpt.tensors["rank1.generator"])

    # identical weights on both ranks, and they are what was saved (the unwrapped module: no "module." prefix)
    final = [load_file(str(dump / f"rank{r}_final.safetensors")) for r in (0, 1)]
    saved = load_file(str(run / "model.safetensors"))
    for name in final[0]:
        assert torch.equal(final[0][name], final[1][name]), name
        assert torch.equal(final[0][name], saved[name]), name

    # step 1: each rank's own examples and noise; replay them in this process
    step1 = [load_file(str(dump / f"rank{r}_step1.safetensors")) for r in (0, 1)]
    seed, per_rank = cfg.train.seed, cfg.train.batch_size // 2
    data = make_training_data(cfg.data, torch.Generator().manual_seed(seed))  # the same set on every rank
    torch.manual_seed(seed)
    model = build_model(cfg, data.data_shape)  # the initial weights every rank starts from
    objective = make_objective("simple")
    x0s, ts, noises = [], [], []
    for r in (0, 1):
        generator = torch.Generator().manual_seed(rank_seed(seed, r))
        assert torch.equal(generator.get_state(), step1[r]["generator"])
        x0 = shard(data, DistContext(rank=r, world_size=2)).batch(per_rank, generator)
        assert torch.equal(x0, step1[r]["x0"])
        t, _, noise, _ = objective.draw(model, x0, generator)  # what SimpleLoss drew next on that rank
        x0s.append(x0), ts.append(t), noises.append(noise)
    assert not torch.equal(x0s[0], x0s[1]) and not torch.equal(noises[0], noises[1])

    # one process, one forward over the union of both batches with the same t and noise (Ho et al. eq. 14)
    x0, t, noise = torch.cat(x0s), torch.cat(ts), torch.cat(noises)
    x_t = q_sample(model.schedule, x0, t, noise)
    mean_head, _ = model.split_output(model(x_t, t))
    mean_flat((model.diffusion.mean_target(x0, x_t, t, noise) - mean_head) ** 2).mean().backward()
    for name, p in model.named_parameters():
        for r in (0, 1):
            assert torch.equal(step1[0][f"grad.{name}"], step1[r][f"grad.{name}"])  # DDP gave both the same
        torch.testing.assert_close(step1[0][f"grad.{name}"], p.grad, rtol=0, atol=1e-6)


@pytest.mark.skipif(os.environ.get("DDPMLAB_SLOW_TESTS") != "1", reason="three torchrun runs (~30 s); "
                    "set DDPMLAB_SLOW_TESTS=1")
def test_torchrun_interrupt_and_resume_bit_identical(tmp_path):
    """Under torchrun, with the seed's fused bound (a custom autograd Function inside DDP): SIGTERM on both
    ranks during step 3, resume, and the weights equal an uninterrupted 2-process run's, bit for bit."""
    cfg = load_config(None, CFG + ["model.arch='seed'", "model.mean_type='previous_x'", "model.var_type='learned'",
                                   "train.objective='trajectory_bound'", "train.batch_size=0", "train.iters=8"])
    cfg_file = tmp_path / "seed.toml"
    cfg_file.write_text(to_toml(cfg))
    r = torchrun("--config", str(cfg_file), "--out", str(tmp_path / "full"))
    assert r.returncode == 0, r.stderr[-3000:]
    r = torchrun("--config", str(cfg_file), "--out", str(tmp_path / "cut"), "--checkpoint-every", "2",
                 env={"DDPMLAB_TEST_SIGNAL_AT_STEP": "3"})
    assert r.returncode != 0 and "interrupted by SIGTERM after step 3" in r.stderr, r.stderr[-3000:]
    assert [s for s, _ in checkpoint_dirs(tmp_path / "cut")] == [2, 3]
    r = torchrun("--resume", str(tmp_path / "cut"))
    assert r.returncode == 0, r.stderr[-3000:]
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)

"""Several processes, one model: torchrun detection, the process group, and each rank's share of the work.

``torchrun --nproc_per_node=N -m ddpmlab train ...`` starts N copies of the command with ``RANK``,
``LOCAL_RANK`` and ``WORLD_SIZE`` set; each wraps the model in DistributedDataParallel (gloo on CPU,
nccl on CUDA), which averages the gradients over ranks in ``backward``. Choices, so that N processes
compute what one process would:

- the global batch is ``train.batch_size``: each rank draws ``batch_size / N`` examples (the batch size
  must divide by N), so the averaged gradient is the gradient of the mean loss over the union of the
  ranks' batches, the same quantity a single process computes over ``batch_size`` examples;
- a fixed training set (``data.n_train > 0`` or a file) is built from ``train.seed`` identically on every
  rank, and rank r keeps rows r, r + N, r + 2N, ... as its shard; streamed data are fresh draws per rank;
- rank r draws its batches, t and noise from its own generator, seeded with ``rank_seed(seed, r)``;
  with one process the generator is seeded with ``seed`` itself, so a plain run and
  ``torchrun --nproc_per_node=1`` are the same run;
- every rank initialises the model from ``seed`` (and DDP broadcasts rank 0's weights anyway);
- only rank 0 writes files; checkpoints gather every rank's RNG state onto rank 0.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from ddpmlab.core.utils import DDPMLabError
from ddpmlab.data.base import TrainingData


@dataclass(frozen=True)
class DistContext:
    """Where this process stands: its rank among ``world_size`` processes, and its device."""

    rank: int = 0
    local_rank: int = 0  # rank on this machine (picks the GPU)
    world_size: int = 1
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that writes files and shows progress."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``cpu``, ``cuda`` (this process's GPU, ``cuda:LOCAL_RANK``) or ``auto`` (CUDA when available)."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise DDPMLabError("train.device = 'cuda' but PyTorch sees no CUDA device; use --device cpu or auto")
        if local_rank >= torch.cuda.device_count():
            raise DDPMLabError(f"local rank {local_rank} has no GPU (this machine has {torch.cuda.device_count()}); "
                               f"start at most that many processes per node")
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise DDPMLabError(f"unknown device {name!r}; choose cpu, cuda or auto")
    return torch.device("cpu")


def launched_by_torchrun() -> bool:
    """``RANK`` and ``WORLD_SIZE`` both set (a stray ``RANK`` alone means a plain single process)."""
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None and default is not None:
        return default
    try:
        return int(raw)
    except (TypeError, ValueError):
        raise DDPMLabError(f"environment variable {name}={raw!r} is not an integer (set by torchrun)") from None


@dataclass(frozen=True)
class TorchrunEnv:
    rank: int
    local_rank: int
    world_size: int


def torchrun_env() -> TorchrunEnv | None:
    """The launch torchrun describes in the environment, checked (``None`` for a plain process): integer
    ``RANK`` in 0..WORLD_SIZE-1, ``LOCAL_RANK`` >= 0, and with several processes the rendezvous address
    ``MASTER_ADDR`` / ``MASTER_PORT``. A malformed one is one line, whatever the rank."""
    if not launched_by_torchrun():
        return None
    rank, world = _env_int("RANK"), _env_int("WORLD_SIZE")
    local_rank = _env_int("LOCAL_RANK", 0)
    if world < 1:
        raise DDPMLabError(f"WORLD_SIZE={world} must be >= 1 (set by torchrun)")
    if not 0 <= rank < world:
        raise DDPMLabError(f"RANK={rank} is outside 0..WORLD_SIZE-1 (WORLD_SIZE={world})")
    if local_rank < 0:
        raise DDPMLabError(f"LOCAL_RANK={local_rank} must be >= 0 (set by torchrun)")
    if world > 1:
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
        if missing:
            raise DDPMLabError(f"RANK={rank} WORLD_SIZE={world} but {' and '.join(missing)} not set: start several "
                               f"processes with torchrun --nproc_per_node={world} -m ddpmlab ...")
        port = _env_int("MASTER_PORT")
        if not 0 < port < 65536:
            raise DDPMLabError(f"MASTER_PORT={port} is not a TCP port (1..65535)")
    return TorchrunEnv(rank, local_rank, world)


def is_reporting_process() -> bool:
    """Whether this process prints: always, unless it is a rank other than 0 of a well-formed torchrun
    launch (then rank 0 reports for all). A malformed launch prints its error from every process."""
    try:
        env = torchrun_env()
    except DDPMLabError:
        return True
    return env is None or env.rank == 0


def setup(device_name: str = "cpu") -> DistContext:
    """This process's context; under torchrun with several processes, joins the process group first."""
    env = torchrun_env()
    if env is None:
        return DistContext(device=resolve_device(device_name))
    device = resolve_device(device_name, env.local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if env.world_size > 1 and not dist.is_initialized():
        try:
            dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")  # env:// rendezvous
        except (RuntimeError, ValueError, OSError) as exc:
            where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
            raise DDPMLabError(f"cannot join the {env.world_size} processes at {where}: "
                               f"{str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__}") \
                from None
    return DistContext(env.rank, env.local_rank, env.world_size, device)


def teardown(ctx: DistContext) -> None:
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank r's generator under torchrun: numpy's SeedSequence of (seed, rank), 63 bits."""
    state = np.random.SeedSequence([seed & 0xFFFF_FFFF_FFFF_FFFF, rank]).generate_state(1, dtype=np.uint64)
    return int(state[0] >> np.uint64(1))


def shard(data: TrainingData, ctx: DistContext) -> TrainingData:
    """Rank r's part of a fixed training set: rows r, r + N, ...; streamed data are not split."""
    if not ctx.distributed or data.stream:
        return data
    n = data.train.shape[0]
    if n < ctx.world_size:
        raise DDPMLabError(f"the training set has {n} examples, fewer than the {ctx.world_size} processes")
    rows = data.train[ctx.rank::ctx.world_size].contiguous()
    labels = None if data.labels is None else data.labels[ctx.rank::ctx.world_size].contiguous()
    return TrainingData(data.name, data.data_shape, rows, data.dist, data.shift, data.scale, labels=labels,
                        classes=data.classes)


def local_batch_size(batch_size: int, data: TrainingData, ctx: DistContext) -> int:
    """Examples this rank draws per step: ``batch_size / N`` (0: the rank's whole shard)."""
    N = ctx.world_size
    if batch_size == 0 and data.stream:
        raise DDPMLabError("train.batch_size = 0 means the whole training set, but data.n_train = 0 streams fresh "
                           "draws; set train.batch_size > 0 or data.n_train > 0")
    if batch_size == 0 and not data.stream and data.train.shape[0] % N:
        raise DDPMLabError(f"train.batch_size = 0 uses the whole training set, whose {data.train.shape[0]} examples "
                           f"do not split evenly over {N} processes")
    if batch_size % N:
        raise DDPMLabError(f"train.batch_size ({batch_size}) must be divisible by the number of processes ({N}): "
                           f"each process draws batch_size / {N} examples")
    return batch_size // N


def _comm_device(ctx: DistContext) -> torch.device:
    return ctx.device if ctx.device.type == "cuda" else torch.device("cpu")  # nccl needs CUDA tensors


def sum_over_ranks(values: list[float], ctx: DistContext) -> list[float]:
    """Element-wise sum of ``values`` over all ranks (float64), the same list on every rank."""
    if not ctx.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=_comm_device(ctx))
    dist.all_reduce(t)
    return t.tolist()


def gather(tensor: torch.Tensor, ctx: DistContext) -> list[torch.Tensor]:
    """Every rank's copy of ``tensor`` (same shape and dtype on each), on the CPU, in rank order."""
    if not ctx.distributed:
        return [tensor.detach().cpu()]
    t = tensor.detach().to(_comm_device(ctx)).contiguous()
    out = [torch.empty_like(t) for _ in range(ctx.world_size)]
    dist.all_gather(out, t)
    return [o.cpu() for o in out]


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()

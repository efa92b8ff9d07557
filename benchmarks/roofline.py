"""How far a training step is from what this machine does at its shapes: the default recipe's step (the
32 x 2 MLP, batch 1024) and the digits U-Net's (issue 28).

    python benchmarks/roofline.py --label before|after [--configs default digits] [--threads 1] [--steps 200]
                                  [--unet-steps 50] [--out benchmarks/results]

Each config's ``Trainer`` is built as the CLI builds it (``Trainer.from_config(load_config(name))``, inside
``model_threads`` with ``train.threads = --threads``), and ``train_step`` (batch, objective, backward,
FlatAdamW, EMA) is measured as it is:

- **FLOPs per step**: ``torch.utils.flop_counter.FlopCounterMode`` over one step (forward and backward).
  It counts the matrix products and convolutions only; elementwise work is not in the count.
- **Wall time per step**: the median (and minimum) of ``--steps`` steps (``--unet-steps`` for the U-Net)
  after a warm-up, each timed alone; **achieved GFLOP/s** = FLOPs / median.
- **Peak on the same shapes**: every matrix product and convolution of one step is recorded (operator,
  shapes, strides and arguments) and replayed alone on fresh tensors in a tight loop, best of five; the
  peak is the step's FLOPs over the sum of these times (the step's time if nothing but its matrix
  products ran, at full speed), beside the best single shape and a 512^3 ``torch.mm`` for scale.
- **Breakdown by kind** from ``torch.profiler`` over a quarter as many steps: each operator's self CPU
  time, grouped by where it ran and by its name. Record-function ranges are put around the phases for
  the profile only (instance attributes of this trainer, removed after): the loss's forward, the data
  draw, the objective's draw of t, noise and x_t, ``optimizer.zero_grad`` / ``step`` and the EMA update;
  the autograd engine's own records mark the backward (the one-pass step's tape, ``MLPTape.forward`` and
  ``backward``, gets ranges of those names). Kinds:
  *matmul* (mm, addmm, convolutions and their wrappers), *elementwise and normalisation* (arithmetic,
  activations, reductions, LayerNorm / GroupNorm, the loss), *optimiser* (everything in the optimiser's
  and the EMA's ranges), *data and noise* (everything in the data and noise ranges, and any random draw),
  *the rest* (copies, views, indexing, allocation, the autograd engine's and Python's own time between
  operators). The profiler adds its own cost per operator, so the shares are of the profiled step; the
  "scaled" column spreads the unprofiled median over them.

``--label`` names the state measured (``before`` / ``after`` the step's optimisation): roofline.json keeps
one entry per label and roofline.md shows every label recorded, with the speed-up once both are there.
The load average is printed before and after and kept with each label.
"""
from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import NamedTuple

import torch
from torch.profiler import ProfilerActivity, profile, record_function
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_unflatten
from torch.utils.flop_counter import FlopCounterMode, flop_registry

from ddpmlab.config.schema import load_config
from ddpmlab.core.fileio import atomic_write_bytes, atomic_write_json, ensure_writable_dir, read_bytes
from ddpmlab.core.threads import using_threads
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.training.trainer import Trainer
from ddpmlab.workflows.pipeline import training_rows
from ddpmlab.workflows.threads import model_threads

ROOT = Path(__file__).resolve().parents[1]
LABELS = ("before", "after")
MATMUL, ELEMENTWISE, OPTIMISER, DATA, REST = ("matmul", "elementwise and normalisation", "optimiser",
                                              "data and noise", "the rest")
KINDS = (MATMUL, ELEMENTWISE, OPTIMISER, DATA, REST)
RANGE = "roofline:"  # the prefix of this script's record-function ranges
STEP = f"{RANGE}train_step"
PHASE_KIND = {"data": DATA, "noise": DATA, "optimiser": OPTIMISER, "ema": OPTIMISER}  # ranges -> their kind
NOISE_OPS = {"normal", "randn", "rand", "randint", "random", "uniform", "bernoulli", "multinomial", "randperm",
             "exponential", "randn_like", "rand_like", "randint_like"}
MATMUL_OPS = {"matmul", "linear", "dot", "mv", "addmv", "einsum"}  # besides names holding "mm" or "conv"
ELEMENTWISE_OPS = {
    "add", "sub", "rsub", "mul", "div", "neg", "reciprocal", "pow", "square", "sqrt", "rsqrt", "exp", "log",
    "expm1", "log1p", "sin", "cos", "abs", "sign", "erf", "maximum", "minimum", "clamp", "clamp_min",
    "clamp_max", "where", "lerp", "addcmul", "addcdiv", "lt", "le", "gt", "ge", "eq", "ne", "logical_not",
    "isfinite", "isnan", "masked_fill", "silu", "sigmoid", "tanh", "relu", "gelu", "threshold", "softmax",
    "log_softmax", "dropout", "native_dropout", "sum", "mean", "var", "std", "mse_loss", "xlogy",
}


# -- the trainer -------------------------------------------------------------------------------------
def build(config: str, threads: int) -> Trainer:
    """The config's trainer as the CLI builds it (nothing written: no ``out``)."""
    return Trainer.from_config(load_config(config, [f"train.threads={threads}"]))


def threads_of(trainer: Trainer):
    """The CLI's thread context for this trainer (``ddpmlab.workflows.pipeline.fit``)."""
    return model_threads(trainer.cfg.train.threads, trainer.model, training_rows(trainer.cfg, trainer))


def time_steps(trainer: Trainer, warmup: int, steps: int) -> dict:
    """Median and minimum wall (and thread CPU) milliseconds of ``steps`` steps, each timed alone."""
    for _ in range(warmup):
        trainer.train_step()
    wall, cpu = [], []
    for _ in range(steps):
        w, c = time.perf_counter(), time.thread_time()
        trainer.train_step()
        cpu.append(time.thread_time() - c)
        wall.append(time.perf_counter() - w)
    return {"median_ms": 1e3 * statistics.median(wall), "min_ms": 1e3 * min(wall),
            "cpu_median_ms": 1e3 * statistics.median(cpu), "steps": steps, "warmup": warmup}


# -- FLOPs and the matrix products of one step -------------------------------------------------------
class TensorSpec(NamedTuple):
    shape: tuple
    stride: tuple
    dtype: torch.dtype


class MatmulCalls(TorchDispatchMode):
    """Records every operator call that ``FlopCounterMode`` counts (matrix products, convolutions), by
    operator and arguments (tensors as shape, stride and dtype), with how often it came."""

    def __init__(self):
        super().__init__()
        self.calls: Counter = Counter()
        self.specs: dict = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(func, "overloadpacket", None) in flop_registry:
            leaves, tree = tree_flatten((args, kwargs))
            leaves = tuple(TensorSpec(tuple(x.shape), tuple(x.stride()), x.dtype) if isinstance(x, torch.Tensor)
                           else x for x in leaves)
            key = (func, leaves, repr(tree))
            self.calls[key] += 1
            self.specs[key] = tree
        return func(*args, **kwargs)


def materialise(spec: TensorSpec) -> torch.Tensor:
    """A fresh tensor of this shape, stride and dtype (random where floating)."""
    size = 1 + sum((n - 1) * s for n, s in zip(spec.shape, spec.stride)) if all(spec.shape) else 0
    base = torch.randn(size, dtype=spec.dtype) if spec.dtype.is_floating_point else torch.zeros(size, dtype=spec.dtype)
    return base.as_strided(spec.shape, spec.stride)


def seconds_per_call(fn, min_seconds: float) -> float:
    """Best of five timings of a loop of ``fn`` calls, each loop at least ``min_seconds / 5`` long."""
    fn()
    n = 1
    while True:
        start = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - start >= min_seconds / 5:
            break
        n *= 2
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, (time.perf_counter() - start) / n)
    return best


def replay(recorder: MatmulCalls, min_seconds: float) -> list[dict]:
    """Each recorded call alone on fresh tensors: FLOPs, seconds per call, calls per step."""
    rows = []
    for key, count in recorder.calls.items():
        func, leaves, _ = key
        args, kwargs = tree_unflatten([materialise(x) if isinstance(x, TensorSpec) else x for x in leaves],
                                      recorder.specs[key])
        call = functools.partial(func, *args, **kwargs)
        with torch.no_grad():
            with FlopCounterMode(display=False) as counter:
                call()
            seconds = seconds_per_call(call, min_seconds)
        shapes = ", ".join("x".join(map(str, x.shape)) for x in leaves if isinstance(x, TensorSpec))
        rows.append({"op": str(func), "shapes": shapes, "calls_per_step": count, "flops": counter.get_total_flops(),
                     "us_per_call": 1e6 * seconds})
    return sorted(rows, key=lambda r: -r["calls_per_step"] * r["us_per_call"])


def matmul_roof(trainer: Trainer, min_seconds: float) -> dict:
    """FLOPs of one step (FlopCounterMode) and the peak of its own matrix products replayed alone."""
    with FlopCounterMode(display=False) as counter:
        trainer.train_step()
    by_op = {str(op): n for op, n in counter.get_flop_counts().get("Global", {}).items()}
    recorder = MatmulCalls()
    with recorder:
        trainer.train_step()
    rows = replay(recorder, min_seconds)
    floor_s = sum(r["calls_per_step"] * r["us_per_call"] for r in rows) / 1e6
    flops = counter.get_total_flops()
    return {"flops_per_step": flops, "flops_by_op": by_op, "matmul_alone_ms": 1e3 * floor_s,
            "peak_gflops": flops / floor_s / 1e9 if floor_s else float("nan"),
            "best_shape_gflops": max((r["flops"] / r["us_per_call"] / 1e3 for r in rows), default=float("nan")),
            "calls": rows}


def large_mm_gflops(min_seconds: float, n: int = 512) -> float:
    """GFLOP/s of one n x n x n ``torch.mm``: what the machine does at a comfortable shape."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n ** 3 / seconds_per_call(lambda: torch.mm(a, b), min_seconds) / 1e9


# -- the profile -------------------------------------------------------------------------------------
def _ranged(fn, name: str):
    def wrapper(*args, **kwargs):
        with record_function(name):
            return fn(*args, **kwargs)
    return wrapper


@contextlib.contextmanager
def phase_ranges(trainer: Trainer):
    """Record-function ranges around the step's phases, as instance attributes removed afterwards (a phase
    this trainer does not have is left out)."""
    tape = trainer.model.__dict__.get("_mlp_tape")  # the one-pass step's network, after a step took it
    targets = [(trainer, "loss_fn", "forward"), (tape, "forward", "forward"), (tape, "backward", "backward"),
               (trainer.shard, "draw", "data"), (trainer.objective, "draw", "noise"),
               (trainer.objective, "draw_steps", "noise"),  # the one-pass step draws t and noise alone
               (trainer.optimizer, "zero_grad", "optimiser"), (trainer.optimizer, "step", "optimiser"),
               (trainer.ema, "update", "ema")]
    installed = []
    try:
        for obj, attr, name in targets:
            fn = getattr(obj, attr, None) if obj is not None else None
            if fn is None:
                continue
            had = attr in vars(obj)
            setattr(obj, attr, _ranged(fn, f"{RANGE}{name}"))
            installed.append((obj, attr, had, fn))
        yield
    finally:
        for obj, attr, had, fn in reversed(installed):
            if had:
                setattr(obj, attr, fn)
            else:
                delattr(obj, attr)


def place(event) -> tuple[str, int | None]:
    """The innermost phase range (or the autograd engine) an event ran in, and the id of its step."""
    phase = None
    while event is not None:
        if event.name == STEP:
            return phase or "the rest of train_step", id(event)
        if phase is None and event.name.startswith(RANGE):
            phase = event.name[len(RANGE):]
        elif phase is None and event.name.startswith("autograd::engine::evaluate_function"):
            phase = "backward"
        event = event.cpu_parent
    return phase or "the rest of train_step", None


def kind_of(name: str, phase: str) -> str:
    if phase in PHASE_KIND:
        return PHASE_KIND[phase]
    if not name.startswith("aten::"):
        return REST  # Python between operators, the autograd engine's own time, other ranges
    op = name[len("aten::"):].strip("_")
    backward = op.removesuffix("_backward")
    if op in NOISE_OPS:
        return DATA
    if "mm" in op or "conv" in op or op in MATMUL_OPS:
        return MATMUL
    if "norm" in op or op in ELEMENTWISE_OPS or backward in ELEMENTWISE_OPS or op.startswith("foreach"):
        return ELEMENTWISE
    return REST


def display_name(name: str) -> str:
    """A range's own time is Python's between the operators it ran."""
    return f"Python in {name[len(RANGE):]}" if name.startswith(RANGE) else name


def breakdown(trainer: Trainer, steps: int, wall_ms: float) -> dict:
    """Self CPU milliseconds per kind and per phase: the median over ``steps`` profiled steps (a step the
    host preempted does not count for more), with each one's share of their sum; the largest operators
    of each kind by their mean."""
    with phase_ranges(trainer), profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            with record_function(STEP):
                trainer.train_step()
    kinds, phases = defaultdict(Counter), defaultdict(Counter)  # step -> kind (phase) -> microseconds
    ops = {k: Counter() for k in KINDS}
    aten_calls = top_level = 0
    for ev in prof.events():
        phase, step = place(ev)
        if step is None:  # the profiler's own records
            continue
        kind = kind_of(ev.name, phase)
        us = ev.self_cpu_time_total
        kinds[step][kind] += us
        phases[step][phase] += us
        ops[kind][display_name(ev.name)] += us
        if ev.name.startswith("aten::"):
            aten_calls += 1
            parent = ev.cpu_parent
            top_level += parent is None or not parent.name.startswith("aten::")
    n = len(kinds)
    by_kind = medians(kinds.values(), KINDS, wall_ms)
    step_ms = statistics.median(sum(k.values()) for k in kinds.values()) / 1e3
    return {"profiled_steps": n, "profiled_ms_per_step": step_ms, "kinds": {k: by_kind[k] for k in KINDS},
            "phases": medians(phases.values(), sorted({p for d in phases.values() for p in d}), wall_ms),
            "top_ops": {k: [[name, us / n / 1e3] for name, us in ops[k].most_common(5)] for k in KINDS},
            "aten_ops_per_step": aten_calls / n, "top_level_aten_ops_per_step": top_level / n}


def medians(per_step, keys, wall_ms: float) -> dict:
    """key -> the median milliseconds over the steps, its share of the medians' sum, and that share of
    ``wall_ms``; the largest first."""
    per_step = list(per_step)
    ms = {k: statistics.median(d.get(k, 0.0) for d in per_step) / 1e3 for k in keys}
    total = sum(ms.values())
    return {k: {"ms": v, "share": v / total if total else 0.0, "scaled_ms": wall_ms * v / total if total else 0.0}
            for k, v in sorted(ms.items(), key=lambda kv: -kv[1])}


# -- one config --------------------------------------------------------------------------------------
def measure(config: str, steps: int, a) -> dict:
    torch.manual_seed(0)
    trainer = build(config, a.threads)
    with threads_of(trainer) as threads:
        timing = time_steps(trainer, max(3, steps // 10), steps)
        roof = matmul_roof(trainer, a.replay_seconds)
        prof = breakdown(trainer, max(3, steps // 4), timing["median_ms"])
        loss = trainer.train_step()
    trainer.release_parameters()
    achieved = roof["flops_per_step"] / timing["median_ms"] / 1e6
    t = trainer.cfg.train
    return {"config": config, "threads": threads, "batch_size": t.batch_size,
            "parameters": sum(p.numel() for p in trainer.model.parameters()), "last_loss": loss,
            **timing, "achieved_gflops": achieved,
            "fraction_of_peak": achieved / roof["peak_gflops"] if roof["peak_gflops"] else float("nan"),
            **roof, **prof}


# -- output ------------------------------------------------------------------------------------------
def commit() -> str:
    """This checkout's commit, ``+dirty`` when ``src`` has uncommitted changes."""
    def git(*args):
        r = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
        return r.stdout.strip() if r.returncode == 0 else None
    head = git("rev-parse", "--short", "HEAD")
    if head is None:
        return "unknown"
    return head + ("+dirty" if git("status", "--porcelain", "--untracked-files=no", "--", "src") else "")


def summary_table(entry: dict) -> list[str]:
    lines = ["| step | MFLOP / step | ms / step (median, min) | achieved GFLOP/s | peak GFLOP/s, its matmuls alone | "
             "achieved / peak | matmuls alone ms | aten ops / step (top level) |", "|---|---|---|---|---|---|---|---|"]
    for r in entry["configs"].values():
        lines.append(f"| {r['config']} (batch {r['batch_size']}, {r['parameters']:,} parameters) | "
                     f"{r['flops_per_step'] / 1e6:.2f} | {r['median_ms']:.3f}, {r['min_ms']:.3f} | "
                     f"{r['achieved_gflops']:.2f} | {r['peak_gflops']:.2f} (best shape {r['best_shape_gflops']:.1f}) | "
                     f"{r['fraction_of_peak']:.1%} | {r['matmul_alone_ms']:.3f} | {r['aten_ops_per_step']:.0f} "
                     f"({r['top_level_aten_ops_per_step']:.0f}) |")
    return lines


def detail(r: dict) -> list[str]:
    lines = ["", f"**{r['config']}**: {r['profiled_steps']} profiled steps, median {r['profiled_ms_per_step']:.3f} ms "
             f"(unprofiled median {r['median_ms']:.3f} ms).", "",
             "| kind | ms / step (profiled, median) | share | ms / step (scaled) | "
             "largest operators (mean ms / step) |",
             "|---|---|---|---|---|"]
    for k, v in r["kinds"].items():
        top = ", ".join(f"{name} {ms:.3f}" for name, ms in r["top_ops"][k])
        lines.append(f"| {k} | {v['ms']:.3f} | {v['share']:.1%} | {v['scaled_ms']:.3f} | {top} |")
    lines += ["", "| phase | ms / step (profiled, median) | share |", "|---|---|---|"]
    lines += [f"| {k} | {v['ms']:.3f} | {v['share']:.1%} |" for k, v in r["phases"].items()]
    lines += ["", "| matmul call | shapes | calls / step | MFLOP / call | us / call alone | GFLOP/s |",
              "|---|---|---|---|---|---|"]
    for (op, shapes), (calls, flops, us) in by_shape(r["calls"]).items():
        lines.append(f"| {op} | {shapes} | {calls} | {flops / calls / 1e6:.3f} | {us / calls:.1f} | "
                     f"{flops / us / 1e3:.2f} |")
    return lines


def by_shape(calls: list[dict]) -> dict:
    """(operator, shapes) -> calls, FLOPs and microseconds per step, the largest time first (calls of one
    shape differing in other arguments, such as which gradients a convolution's backward computes, merged)."""
    merged = defaultdict(lambda: [0, 0.0, 0.0])
    for c in calls:
        m = merged[c["op"], c["shapes"]]
        m[0] += c["calls_per_step"]
        m[1] += c["calls_per_step"] * c["flops"]
        m[2] += c["calls_per_step"] * c["us_per_call"]
    return dict(sorted(merged.items(), key=lambda kv: -kv[1][2]))


def markdown(results: dict) -> str:
    lines = ["# Roofline of a training step (issue 28)", "",
             "FLOPs: matrix products and convolutions only (``FlopCounterMode``). Peak: the step's own matrix "
             "products replayed alone (see benchmarks/roofline.py)."]
    for label in [x for x in LABELS if x in results]:
        e, m = results[label], results[label]["meta"]
        lines += ["", f"## {label}", "",
                  f"`python benchmarks/roofline.py {' '.join(m['argv'])}` at {m['commit']} ({m['date']}): torch "
                  f"{m['torch']}, {m['threads']} thread(s), {m['machine']}, {m['cpus']} CPUs; a 512^3 torch.mm "
                  f"runs at {m['large_mm_gflops']:.1f} GFLOP/s. Load average before {m['load_before']}, after "
                  f"{m['load_after']}.", ""]
        lines += summary_table(e)
        for r in e["configs"].values():
            lines += detail(r)
    if all(x in results for x in LABELS):
        lines += ["", "## before -> after", "", "| step | ms before | ms after | speed-up | GFLOP/s before | after |",
                  "|---|---|---|---|---|---|"]
        before, after = results["before"]["configs"], results["after"]["configs"]
        for name in [n for n in before if n in after]:
            b, a = before[name], after[name]
            lines.append(f"| {name} | {b['median_ms']:.3f} | {a['median_ms']:.3f} | "
                         f"{b['median_ms'] / a['median_ms']:.2f}x | {b['achieved_gflops']:.2f} | "
                         f"{a['achieved_gflops']:.2f} |")
    return "\n".join(lines) + "\n"


def earlier(path: Path) -> dict:
    """The labels recorded before (none when the file does not exist); a file that is not ours stops."""
    if not path.exists():
        return {}
    try:
        results = json.loads(read_bytes(path))
    except ValueError:
        raise SystemExit(f"{path} is not a roofline result (not JSON); move it away first") from None
    if not isinstance(results, dict) or not set(results) <= set(LABELS):
        raise SystemExit(f"{path} is not a roofline result (labels {sorted(results)}); move it away first")
    return results


def fmt_load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--label", choices=LABELS, required=True, help="the state measured")
    p.add_argument("--configs", nargs="+", default=["default", "digits"])
    p.add_argument("--threads", type=int, default=1, help="intra-op threads (train.threads)")
    p.add_argument("--steps", type=int, default=200, help="timed steps of the MLP configs")
    p.add_argument("--unet-steps", type=int, help="timed steps of a U-Net config (default: --steps / 4)")
    p.add_argument("--replay-seconds", type=float, default=0.1, help="timing of each matmul shape alone")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    a = p.parse_args()
    if a.steps < 1 or (a.unet_steps is not None and a.unet_steps < 1) or a.threads < 1:
        p.error("--steps, --unet-steps and --threads must be at least 1")
    out = ensure_writable_dir(a.out)
    results = earlier(out / "roofline.json")
    load_before = fmt_load()
    print(f"load average before: {load_before} ({os.cpu_count()} CPUs)", flush=True)
    configs = {}
    for name in a.configs:
        unet = load_config(name).model.arch == "unet"
        steps = (a.unet_steps or max(1, a.steps // 4)) if unet else a.steps
        configs[name] = measure(name, steps, a)
        r = configs[name]
        print(f"{name}: {r['median_ms']:.3f} ms/step, {r['flops_per_step'] / 1e6:.2f} MFLOP, "
              f"{r['achieved_gflops']:.2f} GFLOP/s of a {r['peak_gflops']:.2f} peak (load {fmt_load()})", flush=True)
    with torch.no_grad(), using_threads(a.threads):
        big = large_mm_gflops(a.replay_seconds)
    results[a.label] = {"configs": configs, "meta": {
        "argv": sys.argv[1:], "commit": commit(), "date": time.strftime("%Y-%m-%d %H:%M"), "torch": torch.__version__,
        "python": platform.python_version(), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "threads": a.threads, "large_mm_gflops": big, "load_before": load_before,
        "load_after": fmt_load()}}
    text = markdown(results)
    atomic_write_json(out / "roofline.json", results)
    atomic_write_bytes(out / "roofline.md", text.encode())
    print(text)
    print(f"load average after: {results[a.label]['meta']['load_after']}")


if __name__ == "__main__":
    try:
        main()
    except DDPMLabError as exc:  # a bad config name, an unwritable --out: one line
        raise SystemExit(f"benchmarks/roofline.py: error: {exc}") from None

"""ddpmlab against the same network and recipe in diffusers' loops, in one process with the same threads.

    python benchmarks/peers.py [--threads 1] [--iters 2000] [--rounds 3] [--n 10000] [--seeds 0 1 2 3 4]
                               [--draws 8] [--skip-quality] [--out benchmarks/results/peers.md]

Needs diffusers (``pip install -c constraints.txt -e '.[bench]'``). What runs:

- **Training**: the ``default`` recipe at ``--iters`` steps, by ddpmlab's ``Trainer`` and by the loop a
  diffusers user writes for the same network (``MLPDenoiser``, built by ddpmlab's registry under the same
  seed; no preconditioning, which diffusers does not have): a batch from the same data stream,
  t ~ U{0..T-1}, ``DDPMScheduler.add_noise``, MSE on the noise, ``torch.optim.AdamW`` with the recipe's
  lr and weight decay, diffusers' ``get_cosine_schedule_with_warmup`` where the recipe decays its lr,
  ``EMAModel`` with the recipe's decay, and the loss read every step (as ddpmlab's trainer does).
- **Sampling** ``--n`` points with ddpmlab's trained EMA network (seed 0): ddpmlab's ancestral sampler
  (all 250 steps) against ``DDPMScheduler``'s loop (``clip_sample=False``), and ddpmlab's
  probability-flow ODE (DPM-Solver++(2M), 25 steps) against ``DPMSolverMultistepScheduler``
  (``dpmsolver++``, order 2, 25 steps). The diffusers loops take the model's noise prediction from its
  plain call, the network on every row (``ddpmlab.models.fast_path.plain``), as a loop calls any eps
  model; a reference line gives the diffusers loop ddpmlab's fast call instead, to show how much of the
  gain is the loop and how much the call.

Each comparison alternates the two sides ``--rounds`` times in this process (the order flipping every
round); the best round of each side counts, in wall time (perf_counter) and in this thread's CPU time
(thread_time, which a busy host inflates less). The load average is printed before and after.

**Quality** (``--seeds``, ``--draws`` independent draws of ``--n`` points per seed and side): expected W1
to the true mixture of each training side's model sampled by its own ancestral loop, and of each sampler
pair on ddpmlab's model. These draws use the fast call on both sides (the same numbers to float
rounding, ``tests/test_fast_path.py``) to keep the run short; they are not timed.
"""
from __future__ import annotations

import argparse
import math
import os
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from ddpmlab.config.build import build_model
from ddpmlab.config.schema import load_config
from ddpmlab.data.base import make_training_data
from ddpmlab.evaluation.metrics import w1_against
from ddpmlab.models import fast_path
from ddpmlab.sampling.api import sample
from ddpmlab.training.trainer import Trainer

try:
    import diffusers
    from diffusers import DDPMScheduler, DPMSolverMultistepScheduler
    from diffusers.optimization import get_cosine_schedule_with_warmup
    from diffusers.training_utils import EMAModel
except ImportError:
    raise SystemExit("benchmarks/peers.py needs diffusers: pip install -c constraints.txt -e '.[bench]'") from None

ROOT = Path(__file__).resolve().parents[1]


def recipe(iters: int, seed: int = 0):
    return load_config("default", [f"train.iters={iters}", f"train.seed={seed}"])


def clock():
    return time.perf_counter(), time.thread_time()


def since(start) -> tuple[float, float]:
    return time.perf_counter() - start[0], time.thread_time() - start[1]


# -- training ----------------------------------------------------------------------------------------
def train_ddpmlab(cfg):
    trainer = Trainer.from_config(cfg)
    start = clock()
    trainer.run(progress=False)
    return since(start), trainer.sampling_model


def train_diffusers(cfg):
    """The loop a diffusers user writes for this network and recipe. Returns (times, EMA network)."""
    t = cfg.train
    gen = torch.Generator().manual_seed(t.seed)
    data = make_training_data(cfg.data, gen)
    plain = load_config("default", ["model.precondition=false"])
    torch.manual_seed(t.seed)
    net = build_model(plain, data.data_shape).net
    T = cfg.schedule.steps
    scheduler = DDPMScheduler(num_train_timesteps=T, beta_start=cfg.schedule.beta_start, beta_end=cfg.schedule.beta_end,
                              beta_schedule="linear", clip_sample=False)
    opt = torch.optim.AdamW(net.parameters(), lr=t.lr, weight_decay=t.weight_decay)
    lr_sched = get_cosine_schedule_with_warmup(opt, t.warmup, t.iters) if t.lr_decay == "cosine" else None
    ema = EMAModel(net.parameters(), decay=t.ema_decay)
    start = clock()
    for _ in range(t.iters):
        x0, _ = data.draw(t.batch_size, gen)
        noise = torch.randn(x0.shape, generator=gen)
        steps = torch.randint(0, T, (x0.shape[0],), generator=gen)
        x_t = scheduler.add_noise(x0, noise, steps)
        loss = F.mse_loss(net(x_t, (steps + 1) / T), noise)  # diffusers' step i is the paper's step i + 1
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if lr_sched is not None:
            lr_sched.step()
        ema.step(net.parameters())
        loss.item()
    times = since(start)
    ema.copy_to(net.parameters())
    return times, net.eval()


# -- sampling ----------------------------------------------------------------------------------------
def model_eps(model, fast: bool):
    """eps(x, diffusers step i) of ddpmlab's model: its plain call (every row) or its fast call."""
    def eps(x, i):
        t = torch.full((x.shape[0],), int(i) + 1)
        if fast:
            return model(x, t)
        with fast_path.plain():
            return model(x, t)
    return eps


def net_eps(net, T: int):
    """eps(x, diffusers step i) of a bare network trained by the diffusers loop."""
    return lambda x, i: fast_path.call_net(net, x, torch.full((x.shape[0],), (int(i) + 1) / T))


@torch.no_grad()
def diffusers_loop(eps, cfg, shape: tuple, steps: int, gen, solver: bool):
    """DDPMScheduler's ancestral loop on all steps, or DPMSolverMultistepScheduler (DPM-Solver++ 2M)."""
    s = cfg.schedule
    kw = dict(num_train_timesteps=s.steps, beta_start=s.beta_start, beta_end=s.beta_end, beta_schedule="linear")
    sched = (DPMSolverMultistepScheduler(**kw, algorithm_type="dpmsolver++", solver_order=2) if solver
             else DDPMScheduler(**kw, clip_sample=False))
    sched.set_timesteps(steps)
    x = torch.randn(shape, generator=gen)
    for i in sched.timesteps:
        x = sched.step(eps(x, i), i, x, generator=gen).prev_sample
    return x


def sampler_sides(model, cfg, n: int):
    """name -> a function of a generator that draws n samples."""
    T, shape = cfg.schedule.steps, (n,) + tuple(model.data_shape)

    def ddpm(fast):
        return lambda g: diffusers_loop(model_eps(model, fast), cfg, shape, T, g, False)

    def dpm(fast):
        return lambda g: diffusers_loop(model_eps(model, fast), cfg, shape, 25, g, True)

    return {
        "ddpmlab ancestral 250": lambda g: sample(model, n, "ancestral", generator=g),
        "diffusers DDPMScheduler 250": ddpm(False),
        "diffusers DDPMScheduler 250, fast call": ddpm(True),
        "ddpmlab ode 25 (DPM-Solver++ 2M)": lambda g: sample(model, n, "ode", 25, generator=g),
        "diffusers DPMSolverMultistep 25": dpm(False),
        "diffusers DPMSolverMultistep 25, fast call": dpm(True),
    }


def timed_rounds(sides: dict, rounds: int) -> dict:
    """Best (wall, cpu) of each side over alternating rounds, and every round."""
    runs = {name: [] for name in sides}
    for r in range(rounds):
        order = list(sides) if r % 2 == 0 else list(reversed(sides))
        for name in order:
            runs[name].append(sides[name]())
    return {name: {"wall": min(w for w, _ in v), "cpu": min(c for _, c in v), "rounds": v} for name, v in runs.items()}


def timed(fn):
    def run():
        start = clock()
        fn(torch.Generator().manual_seed(0))
        return since(start)
    return run


# -- quality -----------------------------------------------------------------------------------------
def expected_w1(draw, dist, seed: int, draws: int) -> tuple[float, float]:
    """Mean W1 of ``draws`` independent draws to the true mixture, and its standard error."""
    gen = torch.Generator().manual_seed(2000 + seed)
    w = torch.tensor([w1_against(dist, draw(gen), gen)["w1"] for _ in range(draws)], dtype=torch.float64)
    return w.mean().item(), (w.std().item() / math.sqrt(draws) if draws > 1 else float("nan"))


def summarise(per_seed: list[tuple[float, float]]) -> tuple[float, float]:
    """Mean over seeds of the expected W1, and its standard error from the draws."""
    m = sum(x for x, _ in per_seed) / len(per_seed)
    return m, math.sqrt(sum(s * s for _, s in per_seed)) / len(per_seed)


QUALITY = {  # row: what is drawn
    "ddpmlab: trained, ancestral 250": None,
    "diffusers: trained, DDPMScheduler 250": None,
    "ddpmlab's model, DDPMScheduler 250": "diffusers DDPMScheduler 250, fast call",
    "ddpmlab's model, ddpmlab ode 25": "ddpmlab ode 25 (DPM-Solver++ 2M)",
    "ddpmlab's model, DPMSolverMultistep 25": "diffusers DPMSolverMultistep 25, fast call",
}
SAME_QUALITY = [  # (ddpmlab's row, the peer's row)
    ("ddpmlab: trained, ancestral 250", "diffusers: trained, DDPMScheduler 250"),
    ("ddpmlab: trained, ancestral 250", "ddpmlab's model, DDPMScheduler 250"),
    ("ddpmlab's model, ddpmlab ode 25", "ddpmlab's model, DPMSolverMultistep 25"),
]


def quality(a, timing_models) -> list[str]:
    res = {k: [] for k in QUALITY}
    for seed in a.seeds:
        cfg = recipe(a.iters, seed)
        ours = timing_models["ddpmlab"] if seed == 0 else train_ddpmlab(cfg)[1]
        theirs = timing_models["diffusers"] if seed == 0 else train_diffusers(cfg)[1]
        dist = make_training_data(cfg.data, torch.Generator().manual_seed(seed)).dist
        sides = sampler_sides(ours, cfg, a.n)
        T = cfg.schedule.steps
        draws = {k: sides[v] for k, v in QUALITY.items() if v is not None}
        draws["ddpmlab: trained, ancestral 250"] = sides["ddpmlab ancestral 250"]
        draws["diffusers: trained, DDPMScheduler 250"] = (
            lambda g: diffusers_loop(net_eps(theirs, T), cfg, (a.n,) + ours.data_shape, T, g, False))
        for k in QUALITY:
            res[k].append(expected_w1(draws[k], dist, seed, a.draws))
        print(f"quality: seed {seed} done ({fmt_load()})", flush=True)
    out = ["", f"Quality: expected W1 of {a.n:,} samples to the true mixture (mean +- SE of {a.draws} draws):", "",
           "| model, sampler | " + " | ".join(f"seed {s}" for s in a.seeds) + " | mean over seeds |",
           "|---|" + "---|" * (len(a.seeds) + 1)]
    for k, v in res.items():
        m, se = summarise(v)
        out.append(f"| {k} | " + " | ".join(f"{x:.4f} +- {s:.4f}" for x, s in v) + f" | {m:.4f} +- {se:.4f} |")
    out += ["", "Equal quality (ddpmlab's mean over seeds minus the peer's, in standard errors; |z| <= 2 is noise):",
            ""]
    for ours, theirs in SAME_QUALITY:
        (m1, s1), (m2, s2) = summarise(res[ours]), summarise(res[theirs])
        z = (m1 - m2) / math.sqrt(s1 * s1 + s2 * s2)
        verdict = "within noise" if abs(z) <= 2 else ("ddpmlab better" if z < 0 else "ddpmlab worse")
        out.append(f"- {ours} {m1:.4f} vs {theirs} {m2:.4f}: {z:+.1f} SE ({verdict})")
    out += ["", f"load average at the end: {fmt_load()}"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--draws", type=int, default=8)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "peers.md")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    lines = [f"`python benchmarks/peers.py {' '.join(os.sys.argv[1:])}`: torch {torch.__version__}, diffusers "
             f"{diffusers.__version__}, {a.threads} intra-op thread(s), {platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs; load average before {fmt_load()}", ""]
    say(lines)

    cfg = recipe(a.iters)
    models = {}

    def side(name, fn):
        def run():
            times, model = fn(cfg)
            models[name] = model
            return times
        return run

    train = timed_rounds({"ddpmlab": side("ddpmlab", train_ddpmlab), "diffusers": side("diffusers", train_diffusers)},
                         a.rounds)
    out = [f"Training, {a.iters} steps of {cfg.train.batch_size} (best of {a.rounds} alternating rounds):", "",
           "| side | wall s | CPU s | rounds (wall / CPU s) |", "|---|---|---|---|"]
    out += [row(k, v) for k, v in train.items()]
    ratios = [("training", train["diffusers"], train["ddpmlab"])]
    say(out)

    sides = sampler_sides(models["ddpmlab"], cfg, a.n)
    samp = timed_rounds({k: timed(f) for k, f in sides.items()}, a.rounds)
    out = ["", f"Sampling {a.n:,} points with ddpmlab's trained EMA model (seed 0, best of {a.rounds} rounds):", "",
           "| sampler | wall s | CPU s | rounds (wall / CPU s) |", "|---|---|---|---|"]
    out += [row(k, v) for k, v in samp.items()]
    ratios += [("ancestral 250", samp["diffusers DDPMScheduler 250"], samp["ddpmlab ancestral 250"]),
               ("DPM-Solver++ 25", samp["diffusers DPMSolverMultistep 25"], samp["ddpmlab ode 25 (DPM-Solver++ 2M)"]),
               ("ancestral 250, diffusers given the fast call", samp["diffusers DDPMScheduler 250, fast call"],
                samp["ddpmlab ancestral 250"]),
               ("DPM-Solver++ 25, diffusers given the fast call", samp["diffusers DPMSolverMultistep 25, fast call"],
                samp["ddpmlab ode 25 (DPM-Solver++ 2M)"])]
    out += ["", "Speed-up of ddpmlab (diffusers' time / ddpmlab's; required >= 1.5 for the first three):", ""]
    out += [f"- {name}: {peer['wall'] / ours['wall']:.2f}x wall, {peer['cpu'] / ours['cpu']:.2f}x CPU"
            for name, peer, ours in ratios]
    out += ["", f"load average after timing: {fmt_load()}"]
    say(out)
    if not a.skip_quality:
        say(quality(a, models))
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("\n".join(SAID) + "\n")


SAID: list[str] = []


def say(lines: list[str]) -> None:
    SAID.extend(lines)
    print("\n".join(lines), flush=True)


def fmt_load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def row(name: str, v: dict) -> str:
    rounds = ", ".join(f"{w:.2f} / {c:.2f}" for w, c in v["rounds"])
    return f"| {name} | {v['wall']:.3f} | {v['cpu']:.3f} | {rounds} |"


if __name__ == "__main__":
    main()

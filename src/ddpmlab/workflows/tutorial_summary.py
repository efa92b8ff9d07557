"""What ``ddpmlab tutorial`` prints: the seed's run in numbers, then three lines that say what went wrong
with the seed's recipe, where (the exact per-step diagnosis), and how the recommended recipe compares."""
from __future__ import annotations


def _fractions(values) -> str:
    return " / ".join(f"{100 * f:.1f}%" for f in values)


def summary_lines(m: dict) -> list[str]:
    """The seed's run: training, the whole-trajectory bound, sample metrics."""
    fr = ", ".join(f"{f:.3f}" for f in m["component_fractions"])
    tr = ", ".join(f"{f:.3f}" for f in m["true_component_fractions"])
    loss = "n/a" if m["final_loss"] is None else f"{m['final_loss']:.5f}"
    return [
        f"trained {m['iters']} iterations in {m['train_seconds']:.2f} s; final loss {loss}",
        f"bound {m['vlb_nats']:.4f} +- {m['vlb_nats_se']:.4f} nats per data point",
        f"W1 {m['w1']:.4f} (noise floor {m['w1_noise_floor']:.4f}); component fractions [{fr}] (true [{tr}])",
    ]


def _where(d: dict) -> str:
    """The per-step diagnosis in words: how many nats, which part of the step, which steps."""
    a, b = d["range"]
    T, share = d["num_steps"], 100 * d["share"]
    part = "the reverse mean" if (d["mean_share"] or 0) >= 0.5 else "the reverse variance"
    main = max(d["mean_share"] or 0, 1 - (d["mean_share"] or 0))
    steps = (f"spread over the steps ({share:.0f}% of it within t = {a}..{b} of {T})" if b - a + 1 > T / 2
             else f"{share:.0f}% of it at t = {a}..{b} of {T}")
    return (f"where: {d['excess_nats']:.2f} +- {d['excess_nats_se']:.2f} nats per point lost against the exact "
            f"reverse process, {100 * main:.0f}% of it in {part} the networks predict, {steps}")


def verdict_lines(seed: dict | None, recommended: dict | None) -> list[str]:
    """Three lines: what went wrong with the seed's recipe, where, and how the recommended recipe compares
    (each recipe's metrics, as ``run_tutorial`` returns them). Lines whose recipe did not run are left out."""
    lines = []
    if seed is not None:
        ev = seed["evaluation"]
        lines.append(
            f"what went wrong: the seed's recipe samples W1 {seed['w1']:.2f} away from the data (a true sample: "
            f"{seed['w1_noise_floor']:.2f}), {_fractions(seed['component_fractions'])} in the two modes (true "
            f"{_fractions(seed['true_component_fractions'])}); its bound is {ev['model']['bound']['total_nats']:.2f} "
            f"nats, the exact reverse process's {ev['oracle']['bound']['total_nats']:.2f} on the same schedule")
        lines.append(_where(seed["diagnosis"]))
    if recommended is not None:
        r = recommended
        se = 100 * max(r["component_fractions_se"])
        exact = f"the exact reverse process: W1 {r['oracle']['w1']:.2f} on this schedule"
        if seed is not None:
            exact += f", {seed['oracle']['w1']:.2f} on the seed's"
        lines.append(
            f"recommended recipe (configs/default.toml, {r['iters']} steps in {r['train_seconds']:.1f} s): W1 "
            f"{r['w1']:.3f} (floor {r['w1_noise_floor']:.3f}), {_fractions(r['component_fractions'])} (true "
            f"{_fractions(r['true_component_fractions'])} +- {se:.1f}%); {exact}")
    return lines

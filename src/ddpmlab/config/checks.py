"""Checks of a config that need arithmetic: whether the schedule's alpha-bar stays representable, how
much memory the config needs, and whether the data's scale fits the N(0, I) prior.

Each problem is one line naming the setting that causes it (``DDPMLabError``, or a warning's text).
"""
from __future__ import annotations

import math

import numpy as np

from ddpmlab.core.mean_types import MEAN_TYPES
from ddpmlab.core.resources import check_memory, format_bytes
from ddpmlab.core.schedule import make_betas
from ddpmlab.core.utils import DDPMLabError

FLOAT32_TINY = float(np.finfo(np.float32).tiny)  # 1.2e-38: below it float32 flushes to 0
FLOAT32_EPS = float(np.finfo(np.float32).eps)  # 1.2e-7
# alpha-bar is a float64 product of (1 - beta): a beta below 100 float64 epsilons (2.2e-14) loses over 1% of
# itself in 1 - beta, and below 1.1e-16 its step adds no noise at all (1 - alpha-bar_1 = 0, a divisor)
MIN_BETA = 100 * float(np.finfo(np.float64).eps)
PRIOR_KL_WARN_NATS = 0.1  # per feature: KL(q(x_T) || N(0, I)) above it means the prior misses the data


def _schedule_name(cfg) -> str:
    s = cfg.schedule
    what = {"constant": f"schedule.beta = {s.beta}",
            "linear": f"schedule.beta_start = {s.beta_start}, schedule.beta_end = {s.beta_end}",
            "cosine": "schedule.kind = 'cosine'"}.get(s.kind, f"schedule.kind = {s.kind!r}")
    return f"{what} with schedule.steps = {s.steps}"


def log_alpha_bar_T(cfg) -> float:
    """log alpha-bar_T of the config's schedule, summed in float64 (no underflow in the check itself)."""
    s = cfg.schedule
    if s.kind == "constant":
        return s.steps * math.log1p(-s.beta)
    betas = make_betas(s.kind, s.steps, beta=s.beta, beta_start=s.beta_start, beta_end=s.beta_end)
    return float(np.log1p(-betas.numpy()).sum())


def smallest_beta(cfg) -> float:
    """The smallest beta of the config's schedule (float64)."""
    s = cfg.schedule
    if s.kind == "constant":
        return s.beta
    return float(make_betas(s.kind, s.steps, beta=s.beta, beta_start=s.beta_start, beta_end=s.beta_end).min())


def check_schedule_precision(cfg) -> None:
    """Refuse a schedule whose alpha-bar the float64 tables or the float32 model cannot use.

    Every beta must reach ``MIN_BETA`` (2.2e-14), or 1 - beta rounds it away and the step's noise level
    1 - alpha-bar, which the samplers and the bound divide by, is lost (0 below 1.1e-16).

    Below float32's smallest normal number (1.2e-38) alpha-bar_T flushes to 0 and every parameterisation
    divides by it or takes its log. An epsilon-predicting model (any mean type with
    ``x0_divides_by_sqrt_abar``) also recovers x_0 as (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t): once
    1 / sqrt(abar_T) exceeds 1 / float32 epsilon (abar_T < 1.4e-14), the x_0 implied by a float32 epsilon
    has no significant digit, and ancestral sampling multiplies that error by the same factor. (The cosine
    schedule ends near 1e-8 to 1e-9.)
    """
    low = smallest_beta(cfg)
    if not low >= MIN_BETA:
        raise DDPMLabError(f"{_schedule_name(cfg)} has a step with beta = {low:.3g}, below {MIN_BETA:.2g}: 1 - beta "
                           f"rounds it away in float64 and the step's noise level is lost; use larger betas")
    log_abar = log_alpha_bar_T(cfg)
    abar = f"{math.exp(log_abar):.3g}" if log_abar > -700 else f"1e{log_abar / math.log(10):.0f}"
    if log_abar < math.log(FLOAT32_TINY):
        raise DDPMLabError(f"{_schedule_name(cfg)} gives alpha-bar_T = {abar}, which underflows float32 "
                           f"(below {FLOAT32_TINY:.2g}): the model would compute NaN; use fewer steps or "
                           f"smaller betas")
    if MEAN_TYPES.get(cfg.model.mean_type).x0_divides_by_sqrt_abar and log_abar < 2 * math.log(FLOAT32_EPS):
        raise DDPMLabError(f"{_schedule_name(cfg)} gives alpha-bar_T = {abar}: mean type {cfg.model.mean_type!r} "
                           f"then recovers x_0 with an error of 1 / sqrt(alpha-bar_T) = {math.exp(-log_abar / 2):.2g} "
                           f"float32 epsilons (no significant digit); use fewer steps or smaller betas")


def memory_items(cfg, data_shape=(1,)) -> list[tuple[str, float, str]]:
    """(setting, bytes, what for) of the big allocations ``cfg`` implies, for data of ``data_shape``
    (a lower bound when the shape is not known yet: one feature)."""
    D = math.prod(data_shape)
    s, m, t, d = cfg.schedule, cfg.model, cfg.train, cfg
    items = [(f"schedule.steps = {s.steps}", 24 * 8 * (s.steps + 1), "the schedule's per-step tables")]
    if m.arch == "seed":
        params, per_example, size = 8 * m.hidden + 4, 6 * 4 * m.hidden * s.steps, f"model.hidden = {m.hidden}"
    elif m.arch == "unet":
        params, per_example, size = 1000 * m.width ** 2, 3 * 4 * 30 * m.width * D, f"model.width = {m.width}"
    else:
        params = m.width ** 2 * (2 * m.depth + 1) + m.width * (m.time_dim + 3 * D + 8)
        per_example = 3 * 4 * m.width * (4 * m.depth + 6)
        size = f"model.width = {m.width}, model.depth = {m.depth}"
    # weights, gradients, two AdamW moments, EMA, and the checkpoint's serialised copy: 6 float32 copies
    items.append((size, 6 * 4 * params, "the weights, gradients, AdamW moments and EMA"))
    n_train = d.data.n_train if d.data.name != "file" else 0
    batch = t.batch_size or n_train
    items.append((f"train.batch_size = {t.batch_size}", batch * (per_example + 16 * D), "one training batch"))
    items.append((f"data.n_train = {d.data.n_train}", 2 * 4 * D * n_train, "the training set"))
    items.append((f"sample.n = {d.sample.n}", d.sample.n * (per_example // 3 + 32 * D), "drawing the samples"))
    return items


def check_config_memory(cfg, data_shape=(1,)) -> None:
    """Refuse a config whose allocations cannot fit in the memory available, naming the biggest."""
    items = memory_items(cfg, data_shape)
    total = sum(b for _, b, _ in items)
    setting, nbytes, what = max(items, key=lambda item: item[1])
    if total > 1.05 * nbytes:
        what = f"{what} ({format_bytes(nbytes)}) and the rest"
    check_memory(total, setting, what)


def sampling_bytes(cfg, n: int, data_shape, trajectory_steps: int = 0) -> float:
    """Bytes to draw ``n`` samples of ``data_shape`` (and keep ``trajectory_steps`` + 1 states)."""
    D = math.prod(data_shape)
    m = cfg.model
    per = {"seed": 4 * 4 * m.hidden, "unet": 4 * 30 * m.width * D}.get(m.arch, 4 * m.width * (4 * m.depth + 6))
    return n * (per + 32 * D + 4 * D * trajectory_steps)


def prior_check_applies(cfg) -> bool:
    """Whether ``prior_mismatch`` can warn: a data file trained without standardising."""
    return cfg.data.name == "file" and not cfg.data.standardize


def prior_mismatch(cfg, mean: float, std: float, log_abar_T: float) -> str | None:
    """A warning's text when a data file trained without standardising (``data.standardize = false``)
    leaves x_T far from the N(0, I) prior the sampler starts from, else ``None``. (Named datasets are
    used at their own scale on purpose: their exact densities hold in model space.)

    With the data's scalar ``mean`` and ``std`` (over features), q(x_T) ~ N(sqrt(abar) mean, abar std^2 +
    1 - abar) per feature, and its KL to N(0, 1) is 0.5 (v + abar mean^2 - 1 - log v), v = abar std^2 +
    1 - abar: the prior term L_T of Ho et al. eq. 5 for a Gaussian fit of the data.
    """
    if not prior_check_applies(cfg):
        return None
    abar = math.exp(log_abar_T)
    v = abar * std ** 2 + 1 - abar
    kl = 0.5 * (v + abar * mean ** 2 - 1 - math.log(v))
    if not kl > PRIOR_KL_WARN_NATS:
        return None
    return (f"data.standardize = false: the data (mean {mean:.3g}, std {std:.3g}) leave x_T far from the N(0, I) "
            f"prior that sampling starts from (KL {kl:.3g} nats per feature at step T), so samples will be off; "
            f"set data.standardize = true")

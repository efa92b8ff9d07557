"""One evaluation of a model against the exact answers for its Gaussian-mixture data, and its table.

Every figure is reported beside the best possible: the model's bound beside the oracle's bound and
the data's entropy (the floor of any expected negative log-likelihood), sample metrics beside the
value a true sample of the same size would score. Used by ``ddpmlab evaluate`` and the tutorial.
"""
from __future__ import annotations

import math
import time

import torch

from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.gaussian import nats_to_bpd
from ddpmlab.core.threads import intra_op_threads
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.evaluation.metrics import component_fractions_against, ks_against, mixture_entropy_1d, w1_against
from ddpmlab.evaluation.flow_map_error import flow_map_error
from ddpmlab.models.flow_map import exact_flow_map
from ddpmlab.evaluation.memorisation_run import distance_rows, skipped_note
from ddpmlab.evaluation.metrics_nd import against_distribution
from ddpmlab.evaluation.ode import ode_log_likelihood
from ddpmlab.evaluation.per_step import evaluate_bound_by_step
from ddpmlab.models.family import family_of
from ddpmlab.sampling.api import sample


def data_entropy(dist: GaussianMixture, n: int, generator: torch.Generator) -> dict:
    """Entropy of the data in nats: exact by quadrature in 1-D, else Monte Carlo -E[log q(x)] with its SE."""
    if dist.dim == 1:
        return {"entropy_nats": mixture_entropy_1d(dist), "entropy_nats_se": 0.0, "entropy_method": "quadrature"}
    v = -dist.log_prob(dist.sample(n, generator, dtype=torch.float64))
    return {"entropy_nats": float(v.mean()), "entropy_nats_se": float(v.std() / math.sqrt(n)),
            "entropy_method": "monte-carlo"}


DIVERGED_NATS_PER_DIM = 1e4  # |NLL| past this: the flow carried the point where no density is (e^-10000)


def ode_nll(model, x0, generator, tol: float = 1e-5, max_nfe: int = 5000) -> dict:
    """ODE NLL to ``tol`` per example (1e-4 nats and better), within ``max_nfe`` evaluations.

    ``status`` says how it went: "solved"; "diverged (median X)" when the flow carried some points out of
    any density's reach (an NLL that is not finite or beyond ``DIVERGED_NATS_PER_DIM`` per dimension: a
    poor model's drift can grow without bound), where the mean and its SE are None, ``diverged`` counts
    those points and the median stays; "not solved" with an ``error`` when the solver gave up.
    """
    try:
        r = ode_log_likelihood(model, x0, generator=generator, rtol=tol, atol=tol, max_nfe=max_nfe,
                               threads=None)  # threads: set by the caller
    except DDPMLabError as exc:  # a poor model's flow can leave the solver's reach
        return {"error": str(exc), "status": "not solved"}
    nll = -r["log_likelihood"]
    lost = ~torch.isfinite(nll) | (nll.abs() > DIVERGED_NATS_PER_DIM * math.prod(x0.shape[1:]))
    out = {k: r[k] if math.isfinite(r[k]) else None
           for k in ("nll_nats", "nll_nats_se", "nll_nats_median", "nll_bpd")}
    out.update({"diverged": int(lost.sum()), "status": "solved", "nfe": r["nfe"], "n": x0.shape[0]})
    if out["diverged"]:
        median = out["nll_nats_median"]
        far = median is None or abs(median) > DIVERGED_NATS_PER_DIM * math.prod(x0.shape[1:])
        out.update(nll_nats=None, nll_nats_se=None, nll_bpd=None, nll_nats_median=None if far else median,
                   status="diverged (median beyond reach)" if far else f"diverged (median {_num(median)})")
    return out


def _sample_metrics(dist: GaussianMixture, samples, generator) -> dict:
    """Component fractions; W1 and KS in 1-D; sliced W1, MMD and -E log q(samples) in more dimensions."""
    out = component_fractions_against(dist, samples)
    if dist.dim == 1:
        out.update(w1_against(dist, samples, generator))
        out.update(ks_against(dist, samples))
    else:
        n = len(samples)
        n_ref = min(100_000, max(10_000, 10 * n))
        out.update(against_distribution(dist, samples.reshape(n, -1), generator, n_ref=n_ref, floor_repeats=5))
    return out


def _evaluate_one(model, dist, x_ode, generator, n_bound, draw, bound: bool) -> dict:
    timings = {}
    out = {}
    if bound:
        start = time.perf_counter()
        out["bound"] = evaluate_bound_by_step(model, dist.sample, n_bound, generator)  # with each term L_t
        timings["bound"] = time.perf_counter() - start
    start = time.perf_counter()
    out["ode"] = ode_nll(model, x_ode, generator) if x_ode is not None else {"skipped": "n_ode = 0"}
    timings["ode"] = time.perf_counter() - start
    start = time.perf_counter()
    samples = draw(model)
    out["samples"] = {"n": len(samples), **_sample_metrics(dist, samples, generator)}
    timings["samples"] = time.perf_counter() - start
    out["seconds"] = {k: round(v, 3) for k, v in timings.items()}
    return out


@torch.no_grad()
def evaluate_run(model, dist: GaussianMixture, generator: torch.Generator, n_bound: int = 10_000,
                 n_ode: int = 256, n_samples: int = 10_000, samples: torch.Tensor | None = None,
                 threads: int | None = 1, sampler: str | None = None, steps: int | None = None,
                 **options) -> dict:
    """Evaluate ``model`` (of any family) and its family's exact oracle for ``dist`` (``Family.oracle``).

    For each, the exact comparisons its family has (``Family.exact_terms``): the bound term by term
    (``evaluate_bound_by_step``: ``evaluate_bound``'s numbers plus each L_t, ``n_bound`` fresh data
    points; a DDPM's), the probability-flow ODE NLL with prior N(0, I) on the same ``n_ode`` data points
    (``n_ode = 0`` skips it), and sample metrics on ``n_samples`` samples drawn by ``sampler`` / ``steps``
    / ``options`` (None: the family's defaults) from the same noise x_T for model and oracle (the model's
    own ``samples`` may be passed instead). Plus the data's entropy and true component weights. Returns a
    JSON-ready dict. ``threads``: torch's intra-op threads meanwhile (default 1, see ``intra_op_threads``;
    None leaves the setting alone).
    """
    n_samples = n_samples if samples is None else len(samples)
    if n_bound < 2 or n_ode == 1 or n_ode < 0 or n_samples < 2:
        raise DDPMLabError("evaluation needs at least 2 points for each estimate (n_ode = 0 skips the ODE)")
    family = family_of(model)
    oracle = family.oracle(model, dist)
    shape = tuple(model.data_shape)
    x_ode = None if n_ode == 0 else dist.sample(n_ode, generator, dtype=torch.float64).reshape((n_ode,) + shape)
    data = {"dims": dist.dim, "true_component_fractions": dist.weights.tolist(),
            **data_entropy(dist, n_bound, generator)}
    data["entropy_bpd"] = nats_to_bpd(data["entropy_nats"], dist.dim)
    x_T = torch.randn((n_samples,) + shape, generator=generator)

    def draw(m):
        if m is model and samples is not None:
            return samples
        return sample(m, n_samples, sampler, steps, generator=generator, x_T=x_T, **options)

    bound = "bound" in family.exact_terms
    with intra_op_threads(threads):
        model_part = _evaluate_one(model, dist, x_ode, generator, n_bound, draw, bound)
        oracle_part = _evaluate_one(oracle, dist, x_ode, generator, n_bound, draw, bound)
        if "flow_map" in family.exact_terms:  # a few-step family: its map against the exact one, per t
            model_part["flow_map"] = _flow_map_error(model, oracle, dist, generator)
        if "flow_map" in family.exact_terms or _few_steps_of(family, steps):  # e.g. reflow: Euler in 1 step
            model_part["few_step"] = _few_step(model, oracle, dist, min(n_samples, FEW_STEP_POINTS), generator,
                                               sampler or family.default_sampler, options)
    settings = {"n_bound": n_bound if bound else None, "n_ode": n_ode, "n_samples": n_samples,
                "ode_prior": "normal"}
    if bound:  # the chain's steps T, one bound term L_t for each t = 0..T
        settings["num_steps"] = len(model_part["bound"]["terms_nats"]) - 1
    return {"format": "ddpmlab-evaluation", "version": 1, "kind": "mixture", "family": family.name,
            "settings": settings, "data": data, "model": model_part, "oracle": oracle_part}


FLOW_MAP_TIMES = (0.1, 0.25, 0.5, 0.75, 1.0)  # times t of the flow-map error E|f(x_t, t -> 0) - Phi(x_t)|^2
FLOW_MAP_POINTS = 1000  # data points x_0 for it (x_t drawn from each)


def _flow_map_error(model, oracle, dist, generator) -> dict:
    """The model's map f(x_t, t -> 0) against the exact one at ``FLOW_MAP_TIMES`` (``flow_map_error``)."""
    x0 = dist.sample(FLOW_MAP_POINTS, generator, dtype=torch.float64).reshape((-1,) + tuple(model.data_shape))
    start = time.perf_counter()
    out = flow_map_error(lambda x, t, s: model.flow_map(x.to(model.device, model.dtype), t, s), oracle, x0,
                         FLOW_MAP_TIMES, generator)
    return {**out, "seconds": round(time.perf_counter() - start, 3)}


FEW_STEPS = (1, 2, 4)  # a few-step family's samples at these numbers of steps, beside the exact map's
FEW_STEP_LABEL = {"w1": "W1", "sliced_w1": "sliced W1"}  # its metric, in words
FEW_STEP_POINTS = 2000  # samples for each (at most; the exact map in 2-D takes about 10 s per 10,000 points)


def _few_steps_of(family, steps) -> bool:
    """A flow sampled in at most ``max(FEW_STEPS)`` steps (a straightened flow: reflow) gets the few-step
    rows too, beside the exact map's samples."""
    return family.time_axis == "continuous" and steps is not None and 0 < steps <= max(FEW_STEPS)


def _few_step(model, oracle, dist, n: int, generator, sampler: str, options: dict) -> dict:
    """W1 (1-D) or sliced W1 (more dimensions) of ``n`` samples of the model and of its exact oracle by
    ``sampler`` at each of ``FEW_STEPS`` steps, both from the same x_T and the same noise after it, and the
    floor: a true sample of the same size (issue 25). A flow-map family's oracle is the exact map; for a
    flow the oracle's row is the same sampler on the exact velocity, and ``exact_map`` the exact map's
    samples from the same x_T (exact at any number of steps)."""
    shape = (n,) + tuple(model.data_shape)
    x_T, seed = torch.randn(shape, generator=generator), int(torch.randint(2 ** 62, (1,), generator=generator))
    out = {"steps": list(FEW_STEPS), "sampler": sampler, "n": n, "model": [], "oracle": []}
    start = time.perf_counter()
    for steps in FEW_STEPS:
        for who, m in (("model", model), ("oracle", oracle)):
            x = sample(m, n, sampler, steps, generator=torch.Generator().manual_seed(seed), x_T=x_T, **options)
            metric = _sample_metrics(dist, x, generator)
            out["metric"] = "w1" if "w1" in metric else "sliced_w1"
            out[who].append(metric[out["metric"]])
            out["floor"] = metric[out["metric"] + "_noise_floor"]
    if not hasattr(oracle, "flow_map"):  # the oracle is a velocity: the exact map's samples beside it
        exact = exact_flow_map(oracle, x_T.double(), 1.0, 0.0)
        out["exact_map"] = _sample_metrics(dist, exact, generator)[out["metric"]]
    return {**out, "seconds": round(time.perf_counter() - start, 3)}


def _num(value) -> str:
    return "-" if value is None else f"{value:.4f}" if abs(value) < 1e4 else f"{value:.3g}"


def _pm(value, se) -> str:
    return _num(value) if value is None or se is None else f"{_num(value)} +- {_num(se)}"


def _ode_cell(e: dict) -> str:
    """The ODE NLL as a table shows it: mean +- SE, "diverged (median X)" or "not solved"."""
    if "error" in e:
        return "not solved"
    if e.get("diverged"):
        return e["status"]
    return _pm(e.get("nll_nats"), e.get("nll_nats_se"))


def _bound_rows(mb: dict, ob: dict, d: dict) -> list:
    rows = [("bound (nats)", _pm(mb["total_nats"], mb["total_nats_se"]), _pm(ob["total_nats"], ob["total_nats_se"]),
             f"{d['entropy_nats']:.4f} (entropy)")]
    for key, label in (("prior_nats", "  prior L_T"), ("steps_nats", "  steps L_1..L_T-1"),
                       ("decoder_nats", "  decoder L_0")):
        rows.append((label, _pm(mb[key], mb[key + "_se"]), _pm(ob[key], ob[key + "_se"]), ""))
    rows.append(("bound (bits/dim)", _pm(mb["total_bpd"], mb["total_bpd_se"]), _pm(ob["total_bpd"], ob["total_bpd_se"]),
                 f"{d['entropy_bpd']:.4f}"))
    return rows


def format_table(ev: dict) -> str:
    """A plain-text table of an ``evaluate_run`` result: model, oracle, floor."""
    m, o, d = ev["model"], ev["oracle"], ev["data"]
    rows = [("", "model", "exact oracle", "floor")]
    if "bound" in m:  # a family with a discrete bound
        rows += _bound_rows(m["bound"], o["bound"], d)
    ode = lambda e: "skipped" if "skipped" in e else _ode_cell(e)  # noqa: E731
    rows.append(("ODE NLL (nats)", ode(m["ode"]), ode(o["ode"]), f"{d['entropy_nats']:.4f}"))
    rows.append(("  median", _num(m["ode"].get("nll_nats_median")), _num(o["ode"].get("nll_nats_median")), ""))
    ms, os_ = m["samples"], o["samples"]
    if "w1" in ms:
        rows.append(("W1", f"{ms['w1']:.4f}", f"{os_['w1']:.4f}", f"{ms['w1_noise_floor']:.4f} (true sample)"))
        rows.append(("KS", f"{ms['ks']:.4f}", f"{os_['ks']:.4f}", f"{ms['ks_noise_floor']:.4f} (true sample)"))
    for key, label in (("sliced_w1", "sliced W1"), ("mmd", "MMD")):
        if key in ms:
            rows.append((label, f"{ms[key]:.4f}", f"{os_[key]:.4f}", f"{ms[key + '_noise_floor']:.4f} (true sample)"))
    if "nll_nats" in ms:
        rows.append(("-E log q(samples)", _num(ms["nll_nats"]), _num(os_["nll_nats"]),
                     f"{ms['nll_nats_floor']:.4f} (entropy)"))
    if "flow_map" in m:  # a few-step family: E|f(x_t, t -> 0) - Phi(x_t)|^2 at each t (the exact map's is 0)
        for t, e, e_se in zip(m["flow_map"]["t"], m["flow_map"]["error"], m["flow_map"]["error_se"]):
            rows.append((f"flow-map error t={t:g}", _pm(e, e_se), "0", "0 (the exact map)"))
    few = m.get("few_step")
    for k, mv, ov in zip(few["steps"], few["model"], few["oracle"]) if few else ():  # beside the exact map's
        rows.append((f"{FEW_STEP_LABEL[few['metric']]} in {k} steps (n={few['n']})", f"{mv:.4f}", f"{ov:.4f}",
                     f"{few['floor']:.4f} (true sample)"))
    if few and "exact_map" in few:
        rows.append((f"{FEW_STEP_LABEL[few['metric']]} of the exact map (n={few['n']})", "-",
                     f"{few['exact_map']:.4f}", f"{few['floor']:.4f} (true sample)"))
    fr = lambda v: ", ".join(f"{f:.3f}" for f in v)  # noqa: E731
    se = max(ms["component_fractions_se"])
    rows.append(("component fractions", fr(ms["component_fractions"]), fr(os_["component_fractions"]),
                 f"{fr(d['true_component_fractions'])} (+- {se:.3f})"))
    memo = ev.get("memorisation")
    if memo:  # a finite training set (``evaluation.memorisation_run``)
        optimum = memo.get("empirical_optimum")
        rows.append((f"near-copies of {memo['n_train']} training points", _num(memo["model"]),
                     "-" if optimum is None else f"{_num(optimum)} (empirical optimum)",
                     f"{_num(memo['true_samples'])} (true samples)"))
    rows += [(label, model, optima, "") for label, model, optima in distance_rows(ev)]  # issue 26
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    s = ev["settings"]
    bound = f"bound n={s['n_bound']}, " if "bound" in m else ""
    drawn = f" by {s['sampler']} in {s['sampling_steps']} steps" if "sampler" in s else ""
    lines = [f"{ev.get('family', 'ddpm')} evaluation, nats per data point ({bound}ODE n={s['n_ode']}, "
             f"samples n={s['n_samples']}{drawn})"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines + [n for n in (skipped_note(ev),) if n])

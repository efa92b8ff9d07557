"""The exact evaluation of a flow model (``model.family == "flow"``) on Gaussian-mixture data.

A flow has no discrete bound; what is exact is its ODE likelihood (``ode_log_likelihood`` on its
velocity), beside the exact flow's (``FlowMixtureOracle``, whose ODE likelihood is log q(x_0) itself)
and the data's entropy, and its samples by the velocity ODE beside the exact flow's on the same noise
and solver, and beside the floor of a true sample of the same size.
"""
from __future__ import annotations

import time

import torch

from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.gaussian import nats_to_bpd
from ddpmlab.core.threads import intra_op_threads
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.evaluation.exact import _num, _pm, _sample_metrics, data_entropy, ode_nll
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.sampling.api import sample


def _one(model, dist, x_ode, x_T, generator, steps: int, solver: str) -> dict:
    start = time.perf_counter()
    out = {"ode": ode_nll(model, x_ode, generator)}
    mid = time.perf_counter()
    samples = sample(model, x_T.shape[0], "ode", steps, x_T=x_T, solver=solver)
    out["samples"] = {"n": x_T.shape[0], **_sample_metrics(dist, samples, generator)}
    out["seconds"] = {"ode": round(mid - start, 3), "samples": round(time.perf_counter() - mid, 3)}
    return out


@torch.no_grad()
def evaluate_flow_run(model, dist: GaussianMixture, generator: torch.Generator, n_ode: int = 256,
                      n_samples: int = 10_000, steps: int = 25, solver: str = "heun", n_entropy: int = 10_000,
                      threads: int | None = 1) -> dict:
    """ODE NLL (prior N(0, I)) on ``n_ode`` data points and metrics of ``n_samples`` ODE samples
    (``solver``, ``steps``) for the flow ``model`` and the exact flow of ``dist``, with the entropy."""
    if n_ode < 2 or n_samples < 2:
        raise DDPMLabError("evaluation needs at least 2 points for each estimate")
    oracle = FlowMixtureOracle(dist, data_shape=model.data_shape)
    shape = tuple(model.data_shape)
    x_ode = dist.sample(n_ode, generator, dtype=torch.float64).reshape((n_ode,) + shape)
    x_T = torch.randn((n_samples,) + shape, generator=generator)
    data = {"dims": dist.dim, "true_component_fractions": dist.weights.tolist(),
            **data_entropy(dist, n_entropy, generator)}
    data["entropy_bpd"] = nats_to_bpd(data["entropy_nats"], dist.dim)
    with intra_op_threads(threads):
        model_part = _one(model, dist, x_ode, x_T, generator, steps, solver)
        oracle_part = _one(oracle, dist, x_ode, x_T, generator, steps, solver)
    return {"format": "ddpmlab-evaluation", "version": 1, "family": "flow",
            "settings": {"n_ode": n_ode, "n_samples": n_samples, "sampler": "ode", "ode_solver": solver,
                         "steps": steps, "ode_prior": "normal"},
            "data": data, "model": model_part, "oracle": oracle_part}


def format_flow_table(ev: dict) -> str:
    """A plain-text table of an ``evaluate_flow_run`` result: model, exact flow, floor."""
    m, o, d, s = ev["model"], ev["oracle"], ev["data"], ev["settings"]
    ode = lambda e: "not solved" if "error" in e else _pm(e.get("nll_nats"), e.get("nll_nats_se"))  # noqa: E731
    rows = [("", "flow model", "exact flow", "floor"),
            ("ODE NLL (nats)", ode(m["ode"]), ode(o["ode"]), f"{d['entropy_nats']:.4f} (entropy)"),
            ("  median", _num(m["ode"].get("nll_nats_median")), _num(o["ode"].get("nll_nats_median")), "")]
    ms, os_ = m["samples"], o["samples"]
    if "w1" in ms:
        rows.append(("W1", f"{ms['w1']:.4f}", f"{os_['w1']:.4f}", f"{ms['w1_noise_floor']:.4f} (true sample)"))
        rows.append(("KS", f"{ms['ks']:.4f}", f"{os_['ks']:.4f}", f"{ms['ks_noise_floor']:.4f} (true sample)"))
    fr = lambda v: ", ".join(f"{f:.3f}" for f in v)  # noqa: E731
    rows.append(("component fractions", fr(ms["component_fractions"]), fr(os_["component_fractions"]),
                 f"{fr(d['true_component_fractions'])} (+- {max(ms['component_fractions_se']):.3f})"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [f"flow evaluation, nats per data point (ODE n={s['n_ode']}, samples n={s['n_samples']} by "
             f"{s['ode_solver']} in {s['steps']} steps)"]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join(lines)

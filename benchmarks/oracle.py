"""The exact oracle's figures at the seed's setting (beta = 0.02, T = 250, the seed's 1-D mixture).

    python benchmarks/oracle.py [--seed S] [--n-bound N] [--n-samples N] [--n-ode N] [--threads K] [--out FILE]

Prints one JSON line (and writes it to ``--out``, e.g. ``benchmarks/results/oracle.json``): the oracle's
variational bound term by term with standard errors, the data's entropy, W1 of its ancestral samples
to a fresh true sample with the floor (a true sample of the same size) and a bootstrap SE, the right-component fraction with its binomial SE, and the probability-flow
ODE NLL with prior N(0, 1) (its expectation is entropy + ``prior_kl_nats`` = KL(q(x_T) || N(0, 1)),
since the flow carries q(x_0) to q(x_T) exactly) and, as a check, with the exact q(x_T) as the prior
(which must give -log q(x_0)).
``right_fraction_exact_reverse`` is E_{x_T ~ N(0, 1)}[q(right | x_T)] by quadrature: the fraction the
exact (non-Gaussian) reverse conditionals would give from the N(0, 1) prior.
Two figures beside the seed's setting: ``ddim25_default_schedule``, the expected W1 (to the exact mixture)
of 10,000 samples of 25-step DDIM (eta = 0) driven by the exact oracle on the ``default`` config's schedule,
over ``--repeats`` draws (DDIM's first-order error alone: no network); and ``true_sample_w1_quantiles``,
the 5% and 95% points of W1 of 10,000 true samples to the exact mixture over ``--floor-draws`` draws
(how much one draw of a perfect sampler scatters).
Issue 3 quotes: bound about 2.069 (SE 0.006), entropy 2.0554, W1 about 0.088, right fraction about 0.658.
"""
from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch
from scipy.integrate import quad

from ddpmlab.config.build import build_model
from ddpmlab.config.schema import load_config
from ddpmlab.core.distributions import seed_mixture
from ddpmlab.core.fileio import atomic_write_json
from ddpmlab.core.schedule import make_schedule
from ddpmlab.evaluation.likelihood import evaluate_bound
from ddpmlab.evaluation.metrics import component_fractions, mixture_entropy_1d, w1, w1_to_mixture_1d
from ddpmlab.evaluation.ode import ode_log_likelihood
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.sampling.api import sample


def right_fraction_exact_reverse(oracle: MixtureOracle) -> float:
    q_T = oracle.marginal(float(oracle.schedule.alphas_cumprod[-1]))

    def f(x):
        r = q_T.responsibilities(torch.tensor([[x]], dtype=torch.float64))[0, 1].item()
        return math.exp(-0.5 * x * x) / math.sqrt(2 * math.pi) * r

    return quad(f, -12, 12, epsabs=1e-12)[0]


def prior_kl(oracle: MixtureOracle) -> float:
    """KL(q(x_T) || N(0, 1)) by quadrature: what the N(0, 1) prior costs even an exact reverse process."""
    q_T = oracle.marginal(float(oracle.schedule.alphas_cumprod[-1]))

    def f(x):
        logq = q_T.log_prob(torch.tensor([[x]], dtype=torch.float64)).item()
        return math.exp(logq) * (logq + 0.5 * x * x + 0.5 * math.log(2 * math.pi))

    return quad(f, -15, 15, epsabs=1e-13)[0]


def ddim25_default_schedule(dist, repeats: int, g: torch.Generator) -> dict:
    """Expected W1 to the exact mixture of 10,000 samples of 25-step DDIM with the exact oracle on the
    default config's schedule: mean and SE over ``repeats`` draws."""
    schedule = build_model(load_config("default"), (1,)).schedule
    oracle = MixtureOracle(dist, schedule)
    v = [w1_to_mixture_1d(dist, sample(oracle, 10_000, "ddim", steps=25, generator=g)) for _ in range(repeats)]
    return {"mean": round(float(np.mean(v)), 5), "se": round(float(np.std(v, ddof=1) / math.sqrt(repeats)), 5),
            "repeats": repeats, "n": 10_000}


def true_sample_w1_quantiles(dist, draws: int, g: torch.Generator) -> dict:
    """5% and 95% points of W1 to the exact mixture of ``draws`` true samples of 10,000 points."""
    v = [w1_to_mixture_1d(dist, dist.sample(10_000, g, dtype=torch.float64)) for _ in range(draws)]
    return {"q05": round(float(np.quantile(v, 0.05)), 5), "q95": round(float(np.quantile(v, 0.95)), 5),
            "draws": draws, "n": 10_000}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n-bound", type=int, default=100_000)
    p.add_argument("--n-samples", type=int, default=100_000)
    p.add_argument("--n-ode", type=int, default=1000)
    p.add_argument("--bootstrap", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=16, help="draws of 25-step DDIM on the default schedule")
    p.add_argument("--floor-draws", type=int, default=200, help="true samples for the W1 quantiles")
    p.add_argument("--out", help="also write the JSON here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    dist = seed_mixture()
    oracle = MixtureOracle(dist, make_schedule("constant", 250, beta=0.02))
    g = torch.Generator().manual_seed(args.seed)
    out = {"setting": {"beta": 0.02, "T": 250, "seed": args.seed, "threads": args.threads}}

    start = time.perf_counter()
    b = evaluate_bound(oracle, dist.sample, args.n_bound, g)
    out["bound"] = {k: round(v, 5) if isinstance(v, float) else v for k, v in b.items()}
    out["bound_seconds"] = round(time.perf_counter() - start, 2)
    out["entropy_nats"] = round(mixture_entropy_1d(dist), 6)
    out["prior_kl_nats"] = round(prior_kl(oracle), 6)  # entropy + this = the ODE NLL's expectation

    start = time.perf_counter()
    x = sample(oracle, args.n_samples, "ancestral", generator=g).numpy()[:, 0]
    out["sample_seconds"] = round(time.perf_counter() - start, 2)
    ref = dist.sample(args.n_samples, g).double().numpy()[:, 0]
    true = dist.sample(args.n_samples, g).double().numpy()[:, 0]
    rng = np.random.default_rng(args.seed)
    n = len(x)
    boots = [w1(x[rng.integers(0, n, n)], ref) for _ in range(args.bootstrap)]
    out["w1"] = round(w1(x, ref), 5)
    out["w1_se_bootstrap"] = round(float(np.std(boots, ddof=1)), 5)
    out["w1_noise_floor"] = round(w1(true, ref), 5)
    right = component_fractions(dist, torch.from_numpy(x)[:, None])[1]
    out["right_fraction"] = round(right, 5)
    out["right_fraction_se"] = round(math.sqrt(right * (1 - right) / n), 5)
    out["right_fraction_exact_reverse"] = round(right_fraction_exact_reverse(oracle), 5)

    x0 = dist.sample(args.n_ode, g, dtype=torch.float64)
    start = time.perf_counter()
    ode = ode_log_likelihood(oracle, x0)
    out["ode_seconds"] = round(time.perf_counter() - start, 2)
    out["ode_nll_nats"] = round(ode["nll_nats"], 5)
    out["ode_nll_nats_se"] = round(ode["nll_nats_se"], 5)
    out["ode_nfe"] = ode["nfe"]
    exact = ode_log_likelihood(oracle, x0, prior="exact")
    err = (exact["log_likelihood"] - dist.log_prob(x0)).abs().max().item()
    out["ode_exact_prior_max_error_nats"] = float(f"{err:.3g}")
    out["neg_log_q_same_points"] = round(float(-dist.log_prob(x0).mean()), 5)
    out["ddim25_default_schedule"] = ddim25_default_schedule(dist, args.repeats, g)
    out["true_sample_w1_quantiles"] = true_sample_w1_quantiles(dist, args.floor_draws, g)
    print(json.dumps(out))
    if args.out:
        atomic_write_json(args.out, out)


if __name__ == "__main__":
    main()

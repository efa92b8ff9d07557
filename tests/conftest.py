import math
from pathlib import Path

import pytest
import torch

from ddpmlab.core.distributions import GaussianMixture

FAULT_RUNNER = str(Path(__file__).with_name("fault_runner.py"))


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """The tests use tiny tensors: a second intra-op thread only adds waiting (and on a busy machine,
    a lot of it). Subprocesses started by tests keep their own default."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(1234)
    yield


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def mixture_2d():
    """A 2-D mixture of three correlated Gaussians (the flow tests' exact-velocity data)."""
    return GaussianMixture([1.0, 2.0, 1.5], [[-2.0, 0.0], [1.5, 1.0], [0.5, -2.0]],
                           [[[0.3, 0.1], [0.1, 0.2]], [[0.2, 0.0], [0.0, 0.5]], [[0.4, -0.1], [-0.1, 0.3]]])


def oracle_ode_nll_nats(dist: GaussianMixture, alpha_bar_T: float) -> float:
    """E[-log p(x_0)] under the exact oracle's probability-flow ODE with the prior N(0, 1), for a 1-D
    mixture, by quadrature. The exact flow carries q(x_0) onto q(x_T), so point by point
    -log p(x_0) = -log q(x_0) + log q(x_T) - log N(x_T; 0, 1), whose mean is the data's entropy plus
    KL(q(x_T) || N(0, 1)): what ``ddpmlab evaluate`` must report for the oracle, within its SE."""
    import numpy as np

    x = torch.linspace(-40.0, 40.0, 400_001, dtype=torch.float64)[:, None]
    q0, qT = dist.log_prob(x), dist.diffused(alpha_bar_T).log_prob(x)
    log_normal = -0.5 * x[:, 0].square() - 0.5 * math.log(2 * math.pi)
    integrand = -q0.exp() * q0 + qT.exp() * (qT - log_normal)
    return float(np.trapezoid(integrand.numpy(), x[:, 0].numpy()))

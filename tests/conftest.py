from pathlib import Path

import faults
import pytest
import torch

from ddpmlab.core.distributions import GaussianMixture

FAULT_RUNNER = str(Path(__file__).with_name("fault_runner.py"))


@pytest.fixture(autouse=True, scope="session")
def _fault_injection():
    """Every in-process Trainer runs the tests' fault-injection callback (inert unless DDPMLAB_TEST_* is set)."""
    from ddpmlab.training.callbacks import CALLBACKS

    hooks = faults.install()
    yield
    CALLBACKS.remove(hooks)


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

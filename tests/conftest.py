import pytest
import torch


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(1234)
    yield


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)

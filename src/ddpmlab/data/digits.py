"""scikit-learn's 8x8 handwritten digits (1,797 images, values 0..16, shipped inside scikit-learn: no
download), scaled to [-1, 1] and split once, deterministically and stratified by class, into a training
split and a held-out split (the Frechet distance's floor compares the two).
"""
from __future__ import annotations

from functools import lru_cache

import torch

from ddpmlab.core.utils import DDPMLabError

HELDOUT_FRACTION = 0.2
SPLIT_SEED = 0
NUM_CLASSES = 10


@lru_cache(maxsize=1)
def _load() -> tuple[torch.Tensor, torch.Tensor]:
    try:
        from sklearn.datasets import load_digits
    except ImportError:  # pragma: no cover - declared dependency
        raise DDPMLabError("the digits dataset needs scikit-learn (pip install scikit-learn)") from None
    bunch = load_digits()
    images = torch.as_tensor(bunch.images, dtype=torch.float32)[:, None] / 8.0 - 1.0  # (N, 1, 8, 8) in [-1, 1]
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    return images, labels


@lru_cache(maxsize=1)
def _split_indices() -> tuple[torch.Tensor, torch.Tensor]:
    """(train, held-out) indices: per class, a fixed permutation, the first 20 % held out."""
    _, labels = _load()
    g = torch.Generator().manual_seed(SPLIT_SEED)
    train, held = [], []
    for c in range(NUM_CLASSES):
        idx = torch.nonzero(labels == c)[:, 0]
        idx = idx[torch.randperm(len(idx), generator=g)]
        k = round(HELDOUT_FRACTION * len(idx))
        held.append(idx[:k])
        train.append(idx[k:])
    return torch.cat(train).sort().values, torch.cat(held).sort().values


def digits_split(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 8, 8) in [-1, 1] and labels (N,) of the ``train`` or ``heldout`` split."""
    if split not in ("train", "heldout"):
        raise DDPMLabError(f"digits split must be 'train' or 'heldout', got {split!r}")
    images, labels = _load()
    idx = _split_indices()[0 if split == "train" else 1]
    return images[idx], labels[idx]


def to_pixel_values(x: torch.Tensor) -> torch.Tensor:
    """Model space [-1, 1] back to the dataset's 0..16 grey levels (clipped, not rounded)."""
    return ((x + 1.0) * 8.0).clamp(0.0, 16.0)


class Digits:
    """The training split as a distribution: ``sample`` draws images with replacement, (n, 1, 8, 8).

    There is no density; ``heldout()`` gives the held-out split for evaluation.
    """

    event_shape = (1, 8, 8)
    num_classes = 10  # the digit drawn: the class label of ``sample_labelled``

    def __init__(self):
        self.images, self.labels = digits_split("train")

    def sample(self, n: int, generator: torch.Generator | None = None, dtype=torch.float32) -> torch.Tensor:
        return self.sample_labelled(n, generator, dtype)[0]

    def sample_labelled(self, n: int, generator: torch.Generator | None = None, dtype=torch.float32):
        """n images (n, 1, 8, 8) and their digits (n,): the same draws as ``sample``."""
        idx = torch.randint(len(self.images), (n,), generator=generator)
        return self.images[idx].to(dtype), self.labels[idx]

    @staticmethod
    def heldout() -> tuple[torch.Tensor, torch.Tensor]:
        return digits_split("heldout")

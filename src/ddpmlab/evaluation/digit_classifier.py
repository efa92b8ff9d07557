"""A small CNN that classifies 8x8 digits; its penultimate activations are the features of the Frechet
distance (``ddpmlab.evaluation.fid``), as Inception's are for FID (Heusel et al. 2017).

Trained once on the digits' training split, deterministically (fixed seed, fixed number of epochs, one
thread), and cached as safetensors (never pickle) under ``cache_dir()``: ``$DDPMLAB_CACHE``, else
``$XDG_CACHE_HOME/ddpmlab``, else ``~/.cache/ddpmlab``. A missing, unreadable or stale cache file is
retrained and rewritten; an unwritable cache directory only costs the retraining next time.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as st_save
from torch import nn

from ddpmlab.data.digits import NUM_CLASSES, digits_split
from ddpmlab.core.fileio import atomic_write_bytes

VERSION = "v1"  # bump when the architecture, the training recipe or the data split changes
FEATURE_DIM = 64
EPOCHS, BATCH, LR, WEIGHT_DECAY, SEED = 30, 64, 2e-3, 1e-4, 0


class DigitClassifier(nn.Module):
    """(B, 1, 8, 8) in [-1, 1] -> logits (B, 10); ``features`` gives the 64 penultimate activations."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.SiLU(),  # (B, 32, 8, 8)
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),  # (B, 64, 4, 4)
            nn.Conv2d(64, 64, 3, stride=2, padding=1), nn.SiLU(),  # (B, 64, 2, 2)
            nn.Flatten(), nn.Linear(256, FEATURE_DIM), nn.SiLU(),  # (B, 64)
        )
        self.head = nn.Linear(FEATURE_DIM, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x.reshape(-1, 1, 8, 8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return self(x).argmax(1)


def cache_dir() -> Path:
    if os.environ.get("DDPMLAB_CACHE"):
        return Path(os.environ["DDPMLAB_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ddpmlab"


def train_classifier() -> tuple[DigitClassifier, float]:
    """Train on the training split (fixed seed, one thread); returns the model and held-out accuracy."""
    images, labels = digits_split("train")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a fixed reduction order: the same weights on every run
    grad = torch.is_grad_enabled()
    torch.set_grad_enabled(True)  # first use may come from inside an evaluation's torch.no_grad()
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(SEED)
            model = DigitClassifier()
        g = torch.Generator().manual_seed(SEED)
        opt = torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)
        steps = EPOCHS * ((len(images) + BATCH - 1) // BATCH)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=LR, total_steps=steps)
        model.train()
        for _ in range(EPOCHS):
            perm = torch.randperm(len(images), generator=g)
            for i in range(0, len(images), BATCH):
                idx = perm[i:i + BATCH]
                x = images[idx] + 0.05 * torch.randn(images[idx].shape, generator=g)  # mild noise augmentation
                loss = F.cross_entropy(model(x), labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
        model.eval()
        x_h, y_h = digits_split("heldout")
        accuracy = float((model.predict(x_h) == y_h).float().mean())
    finally:
        torch.set_num_threads(threads)
        torch.set_grad_enabled(grad)
    return model, accuracy


def load_classifier(directory: str | Path | None = None) -> tuple[DigitClassifier, float]:
    """The cached classifier (training and caching it on first use) and its held-out accuracy."""
    path = Path(directory or cache_dir()) / f"digit_classifier-{VERSION}.safetensors"
    model = DigitClassifier()
    try:
        with safe_open(str(path), framework="pt") as f:
            state = {k: f.get_tensor(k) for k in f.keys()}
            meta = f.metadata() or {}
        if meta.get("version") != VERSION:
            raise ValueError("stale cache")
        model.load_state_dict(state)
        return model.eval(), float(meta["heldout_accuracy"])
    except (OSError, SafetensorError, RuntimeError, KeyError, ValueError, TypeError):
        pass  # missing, corrupt or stale: train it
    model, accuracy = train_classifier()
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, st_save(state, metadata={"heldout_accuracy": repr(accuracy), "version": VERSION}))
    except OSError:
        pass  # no cache: it is retrained next time
    return model, accuracy

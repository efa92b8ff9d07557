"""How training draws the step t per example: uniformly, or by importance (Nichol & Dhariwal 2021, sec. 3.3)."""
from __future__ import annotations

import torch


class UniformTimesteps:
    """t ~ U{1..T}; weights 1/(T p_t) = 1."""

    def __init__(self, T: int):
        self.T = T

    def sample(self, n: int, generator=None):
        t = torch.randint(1, self.T + 1, (n,), generator=generator)
        return t, torch.ones(n)

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        pass


class ImportanceTimesteps(UniformTimesteps):
    """p_t proportional to sqrt(E[L_t^2]), mixed with ``uniform_prob`` of uniform; weights 1/(T p_t) keep
    the estimate unbiased. E[L_t^2] is a running average (decay ``1 - 1/history``) of each step's squared
    bound term, started at its first value; t stays uniform until every step has ``history`` values.
    (improved-diffusion keeps the last 10 values per step; the running average does the same job with
    one vectorised update per batch.)"""

    def __init__(self, T: int, history: int = 10, uniform_prob: float = 0.001):
        super().__init__(T)
        self.history, self.uniform_prob = history, uniform_prob
        self.second_moment = torch.zeros(T + 1, dtype=torch.float64)
        self.counts = torch.zeros(T + 1, dtype=torch.long)

    def probs(self) -> torch.Tensor:
        if bool((self.counts[1:] < self.history).any()):
            return torch.full((self.T,), 1.0 / self.T, dtype=torch.float64)
        w = self.second_moment[1:].sqrt()
        w = w / w.sum()
        return w * (1 - self.uniform_prob) + self.uniform_prob / self.T

    def sample(self, n: int, generator=None):
        p = self.probs()
        idx = torch.multinomial(p, n, replacement=True, generator=generator)
        return idx + 1, (1.0 / (self.T * p[idx])).float()

    def update(self, t: torch.Tensor, losses: torch.Tensor) -> None:
        sq = losses.detach().double().square()
        n = torch.bincount(t, minlength=self.T + 1)
        seen = n > 0
        batch_mean = torch.zeros(self.T + 1, dtype=torch.float64).scatter_add_(0, t, sq)[seen] / n[seen]
        decay = 1.0 - 1.0 / self.history
        first = self.counts[seen] == 0
        old = self.second_moment[seen]
        self.second_moment[seen] = torch.where(first, batch_mean, decay * old + (1 - decay) * batch_mean)
        self.counts += n

    def state_dict(self) -> dict:
        return {"second_moment": self.second_moment.clone(), "counts": self.counts.clone()}

    def load_state_dict(self, d: dict) -> None:
        self.second_moment.copy_(d["second_moment"])
        self.counts.copy_(d["counts"])

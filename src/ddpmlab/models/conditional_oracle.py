"""The exact class-conditional reverse process of labelled Gaussian-mixture data.

When the label of x_0 ~ sum_k w_k N(mu_k, S_k) is its component c, the data given the class is the one
component, q(x_0 | c) = N(mu_c, S_c), and every forward marginal given c is Gaussian,
q(x_t | c) = N(sqrt(abar_t) mu_c, abar_t S_c + (1 - abar_t) I) (Ho et al. 2020, eq. 4). So the exact
conditional reverse process is ``MixtureOracle`` of that single component, and the unconditional one is
``MixtureOracle`` of the whole mixture. ``LabelledMixtureOracle`` holds both behind the contract's
``cond``: label c in 0..K-1 picks component c, the null class K (or no condition) the whole mixture,
exactly as a classifier-free-trained network reads its labels. Wrapped in
``ddpmlab.models.guidance.Guided`` it is the exact guided oracle, s(x_t | c) + w (s(x_t | c) - s(x_t)),
for every sampler. ``LabelledFlowMixtureOracle`` is the same for the flow family: given c, the velocity
of component c (``FlowMixtureOracle``); guided, (1 + w) v(x, t | c) - w v(x, t), in closed form. The exact
class posterior of data is ``class_posterior``: q(c | x_0) = r_c(x_0).
"""
from __future__ import annotations

import torch

from ddpmlab.core.contract import PMeanVariance
from ddpmlab.core.process import ReverseProcess, VelocityProcess
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.schedule import NoiseSchedule
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.models.oracle import MixtureOracle


class _ByLabel:
    """What both families' labelled oracles share: one exact oracle per class (``make(component)``) and
    the mixture's for the null class K, and the grouping of a batch by label."""

    def _setup(self, dist: GaussianMixture, make) -> None:
        self.dist = dist
        self.unconditional = make(dist)
        self.data_shape = self.unconditional.data_shape
        self.components = [make(dist.component(k)) for k in range(dist.num_components)]

    @property
    def num_classes(self) -> int:
        return self.dist.num_components

    def oracle(self, c: int):
        """The exact oracle of class c (component c), or of the whole mixture for the null class K."""
        return self.unconditional if c == self.num_classes else self.components[c]

    def _groups(self, cond, n: int):
        """[(oracle, index of the examples with that label)] for labels (n,) or one label."""
        cond = torch.as_tensor(cond).long().reshape(-1).cpu()
        if cond.numel() == 1:
            cond = cond.expand(n)
        if cond.shape[0] != n:
            raise DDPMLabError(f"cond has {cond.shape[0]} labels for {n} examples")
        if bool((cond < 0).any()) or bool((cond > self.num_classes).any()):
            raise DDPMLabError(f"class labels must be in 0..{self.num_classes - 1} (or {self.num_classes}, the "
                               f"null class), got {sorted(set(cond.tolist()))}")
        return [(self.oracle(int(c)), (cond == c).nonzero()[:, 0]) for c in torch.unique(cond)]

class LabelledMixtureOracle(_ByLabel, ReverseProcess):
    """The exact reverse process of ``dist`` given the class (its component) c, under ``schedule``.

    ``p_mean_variance(x_t, t, cond)`` and ``score(x, t_c, alpha_bar, cond)`` take labels (B,) (or one
    label for all) in 0..K, K the null class: per example, component c's exact oracle, or the mixture's.
    """

    def __init__(self, dist: GaussianMixture, schedule: NoiseSchedule, data_shape=None):
        self.schedule = schedule
        self._setup(dist, lambda d: MixtureOracle(d, schedule, data_shape))

    def respaced(self, num_steps: int) -> "LabelledMixtureOracle":
        sched = self.schedule.spaced(num_steps)
        return self if sched is self.schedule else LabelledMixtureOracle(self.dist, sched, self.data_shape)

    def p_mean_variance(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> PMeanVariance:
        """The exact q(x_{t-1} | x_t, c) per example (``MixtureOracle.p_mean_variance`` of its class)."""
        if cond is None:
            return self.unconditional.p_mean_variance(x_t, t)
        n = x_t.shape[0]
        t = torch.as_tensor(t).long().reshape(-1).expand(n)
        groups = self._groups(cond, n)
        if len(groups) == 1:
            return groups[0][0].p_mean_variance(x_t, t)
        out = None
        for oracle, idx in groups:
            p = oracle.p_mean_variance(x_t[idx], t[idx])
            if out is None:
                out = PMeanVariance(*(torch.empty((n,) + tuple(f.shape[1:]), dtype=f.dtype) for f in p))
            for dst, src in zip(out, p):
                dst[idx] = src
        return out

    def score(self, x: torch.Tensor, t_c: float, alpha_bar: float, cond=None) -> torch.Tensor:
        """The exact grad_x log q(x_t | c) per example, at the continuous step's alpha-bar."""
        if cond is None:
            return self.unconditional.score(x, t_c, alpha_bar)
        out = torch.empty_like(x)
        for oracle, idx in self._groups(cond, x.shape[0]):
            out[idx] = oracle.score(x[idx], t_c, alpha_bar)
        return out


class LabelledFlowMixtureOracle(_ByLabel, VelocityProcess):
    """The exact flow of ``dist`` given the class (its component) c, on ``path`` (default the linear
    path): ``velocity(x, t, cond)`` with labels (B,) (or one for all) in 0..K, K the null class."""

    def __init__(self, dist: GaussianMixture, path=None, data_shape=None):
        self._setup(dist, lambda d: FlowMixtureOracle(d, path, data_shape))
        self.path = self.unconditional.path

    def velocity(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        """The exact v(x, t | c) per example (``FlowMixtureOracle.velocity`` of its class)."""
        if cond is None:
            return self.unconditional.velocity(x, t)
        out = torch.empty_like(x)
        for oracle, idx in self._groups(cond, x.shape[0]):
            out[idx] = oracle.velocity(x[idx], t)
        return out


def class_posterior(dist: GaussianMixture, x: torch.Tensor) -> torch.Tensor:
    """The exact q(c | x) of data x (n, *dims) under the labelled mixture: the responsibilities (n, K)."""
    return dist.responsibilities(x.reshape(x.shape[0], -1))

"""Classifier-free guidance (Ho & Salimans 2022) as a model of the contract, so every sampler guides.

A class-conditional model learns eps(x_t, c) for the classes c = 0..K-1 and, with its labels dropped to
the null class K during training (``drop_labels``), the unconditional eps(x_t, K) = eps(x_t). Guidance
at weight w samples with

    eps_w(x_t, c) = (1 + w) eps(x_t, c) - w eps(x_t)                         (Ho & Salimans, eq. 6)

or in scores, s_w(x_t | c) = s(x_t | c) + w (s(x_t | c) - s(x_t)), the score of q(x_t | c) q(c | x_t)^w up
to normalisation. w = 0 is the plain conditional model. ``Guided(model, w)`` is that combination of any
conditional model (a trained ``DiffusionModel`` or ``FlowModel``, or the exact
``ddpmlab.models.conditional_oracle.LabelledMixtureOracle`` / ``LabelledFlowMixtureOracle``), itself a
model of the same family (its family's ``guide`` class: ``GuidedReverse``, ``GuidedVelocity``):

    x = dl.sample(dl.Guided(model, w=3.0), 1000, sampler="ddim", steps=50, cond=labels)

The reverse mean, x_0 and eps are affine in the network's eps, so the guided ones are the same affine
combination of the conditional and unconditional ones (this is eq. 6 for every mean type); the variance
is the conditional model's (the guided density is no diffusion's marginal, so it has no exact variance).
A flow's velocity is affine in E[x_0 | x_t] and E[eps | x_t] too, so its guided velocity is
v_w(x, t | c) = (1 + w) v(x, t | c) - w v(x, t), the same combination.
"""
from __future__ import annotations

import copy

import torch

from ddpmlab.core.contract import PMeanVariance
from ddpmlab.core.process import ReverseProcess, VelocityProcess
from ddpmlab.core.utils import DDPMLabError


def num_classes_of(model) -> int:
    """The number of classes K of a conditional model (its null class is K); 0 for an unconditional one
    (``ProcessModel.num_classes``: a network's own ``num_classes`` where the model wraps one)."""
    return int(model.num_classes or 0)


MAX_GUIDANCE = 100.0  # Ho & Salimans (2022) find quality best near w = 0.3 to 4 and falling beyond; far
# larger weights only magnify the network's error, and past about 1e36 the float32 combination overflows


def check_guidance_weight(w) -> float:
    """The guidance weight ``w`` as a float in [0, ``MAX_GUIDANCE``] (NaN and infinities refused)."""
    try:
        value = float(w)
    except (TypeError, ValueError, OverflowError):
        raise DDPMLabError(f"the guidance weight must be a number >= 0 and <= {MAX_GUIDANCE:g}, got {w!r}") from None
    if not 0.0 <= value <= MAX_GUIDANCE:
        raise DDPMLabError(f"the guidance weight must be a finite number >= 0 and <= {MAX_GUIDANCE:g}, got {w}")
    return value


def drop_labels(cond: torch.Tensor | None, p: float, null_class: int, generator: torch.Generator | None):
    """Classifier-free training's label dropout: each label replaced by the null class with probability
    ``p``, drawn from ``generator`` (on the CPU, so a resumed run draws the same). No draw when p = 0."""
    if cond is None or p <= 0:
        return cond
    drop = torch.rand(cond.shape[0], generator=generator) < p  # (B,)
    return torch.where(drop.to(cond.device), torch.full_like(cond, int(null_class)), cond)


class Guided:
    """``model`` guided at weight ``w`` >= 0 towards the condition passed to every call (class labels (B,)).

    ``Guided(model, w)`` makes the guided model of ``model``'s family (``Family.guide``). ``null_class`` is
    the label that asks the model for its unconditional prediction (default: the model's number of classes
    K). Conditional and unconditional predictions come from one batched call.
    """

    def __new__(cls, model, w: float = 0.0, null_class: int | None = None):
        if cls is Guided:  # the family's own guided model
            from ddpmlab.models.family import family_of

            cls = family_of(model).guide
        return super().__new__(cls)

    def __init__(self, model, w: float = 0.0, null_class: int | None = None):
        w = check_guidance_weight(w)
        if null_class is None:
            null_class = num_classes_of(model)
            if null_class < 1:
                raise DDPMLabError(f"{type(model).__name__} is unconditional (no classes): guidance needs a "
                                   "class-conditional model (model.num_classes > 0)")
        self.model, self.w, self.null_class = model, w, int(null_class)
        self.data_shape = tuple(model.data_shape)

    @property
    def num_classes(self) -> int:
        return self.null_class

    @property
    def dtype(self) -> torch.dtype:
        return self.model.dtype

    @property
    def device(self) -> torch.device:
        return self.model.device

    def double(self) -> "Guided":
        self.model = self.model.double()
        return self

    def __deepcopy__(self, memo):
        return type(self)(copy.deepcopy(self.model, memo), self.w, self.null_class)

    # -- the combination -------------------------------------------------------------------------------
    def _check(self, cond, n: int) -> torch.Tensor:
        if cond is None:
            raise DDPMLabError("guidance needs a condition: pass cond= (one class label per sample)")
        cond = torch.as_tensor(cond, device=self.device).long().reshape(-1)
        if cond.numel() == 1:
            cond = cond.expand(n)
        if cond.shape[0] != n:
            raise DDPMLabError(f"cond has {cond.shape[0]} labels for {n} samples")
        return cond

    def _pair(self, x: torch.Tensor, cond: torch.Tensor):
        """x twice (2B, ...) with the labels, then the null class."""
        return torch.cat([x, x]), torch.cat([cond, torch.full_like(cond, self.null_class)])

    def _mix(self, c: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        return (1.0 + self.w) * c - self.w * u  # eq. 6

    def _guided(self, f, x: torch.Tensor, cond, *args):
        """f(x, *args, cond) combined by eq. 6 (``f`` returns one tensor shaped like x)."""
        n = x.shape[0]
        cond = self._check(cond, n)
        if self.w == 0.0:
            return f(x, *args, cond)
        x2, c2 = self._pair(x, cond)
        out = f(x2, *args, c2)
        return self._mix(out[:n], out[n:])


class GuidedReverse(Guided, ReverseProcess):
    """A guided model of the DDPM family: the reverse step and score of eq. 6."""

    def __init__(self, model, w: float = 0.0, null_class: int | None = None):
        super().__init__(model, w, null_class)
        self.schedule = model.schedule

    def respaced(self, num_steps: int) -> "GuidedReverse":
        inner = self.model.respaced(num_steps)
        return self if inner is self.model else GuidedReverse(inner, self.w, self.null_class)

    def p_mean_variance(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> PMeanVariance:
        """The guided reverse step: mean, x_0 and eps of eq. 6; the conditional model's variance."""
        n = x_t.shape[0]
        cond = self._check(cond, n)
        if self.w == 0.0:
            return self.model.p_mean_variance(x_t, t, cond)
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(n)
        x2, c2 = self._pair(x_t, cond)
        p = self.model.p_mean_variance(x2, t.repeat(2), c2)
        return PMeanVariance(self._mix(p.mean[:n], p.mean[n:]), p.variance[:n], p.log_variance[:n],
                             self._mix(p.pred_x0[:n], p.pred_x0[n:]), self._mix(p.pred_eps[:n], p.pred_eps[n:]))

    def score(self, x: torch.Tensor, t_c: float, alpha_bar: float, cond=None) -> torch.Tensor:
        """s(x | c) + w (s(x | c) - s(x)) at the continuous step t_c."""
        return self._guided(lambda x, c: self.model.score(x, t_c, alpha_bar, c), x, cond)


class GuidedVelocity(Guided, VelocityProcess):
    """A guided model of the flow family: v_w(x, t | c) = (1 + w) v(x, t | c) - w v(x, t)."""

    def __init__(self, model, w: float = 0.0, null_class: int | None = None):
        super().__init__(model, w, null_class)
        self.path = model.path

    def velocity(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        if torch.is_tensor(t) and t.dim() > 0 and t.numel() > 1:
            t = torch.cat([t, t]) if self.w != 0.0 else t
        return self._guided(lambda x, c: self.model.velocity(x, t, c), x, cond)

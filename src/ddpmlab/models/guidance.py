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

Two variants live in the same combination (``ddpmlab.models.guidance_methods`` names them):
``interval=(sigma_lo, sigma_hi)`` guides only where the noise level sigma = sigma(t) / alpha(t) of the
step lies in [sigma_lo, sigma_hi] and is the conditional model elsewhere (Kynkaanniemi et al. 2024); and
``guide=weak`` takes the negative branch from another model of the same family given the same labels,
eps_w = (1 + w) eps(x_t, c) - w eps_weak(x_t, c) (autoguidance, Karras et al. 2024).
"""
from __future__ import annotations

import copy
import math

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
    K). Conditional and unconditional predictions come from one batched call. ``interval`` (sigma_lo,
    sigma_hi): guide only at those noise levels; ``guide``: the model whose prediction given the same labels
    replaces the unconditional one (autoguidance), called apart (see the module docstring).
    """

    def __new__(cls, model, w: float = 0.0, null_class: int | None = None, interval=None, guide=None):
        if cls is Guided:  # the family's own guided model
            from ddpmlab.models.family import family_of

            cls = family_of(model).guide
            if not isinstance(cls, type):  # a family without guidance refuses in one line
                return cls(model, w, null_class, interval=interval, guide=guide)
        return super().__new__(cls)

    def __init__(self, model, w: float = 0.0, null_class: int | None = None, interval=None, guide=None):
        w = check_guidance_weight(w)
        if null_class is None:
            null_class = num_classes_of(model)
            if null_class < 1:
                raise DDPMLabError(f"{type(model).__name__} is unconditional (no classes): guidance needs a "
                                   "class-conditional model (model.num_classes > 0)")
        self.model, self.w, self.null_class = model, w, int(null_class)
        self.data_shape = tuple(model.data_shape)
        self.interval = None if interval is None else check_interval(interval)
        self.guide = None if guide is None else check_guide(model, guide)

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
        if self.guide is not None:
            self.guide = self.guide.double()
        return self

    def _like(self, model, guide) -> "Guided":
        """The same guidance of ``model`` away from ``guide`` (the negative branch's model, or None)."""
        return type(self)(model, self.w, self.null_class, self.interval, guide)

    def __deepcopy__(self, memo):
        return self._like(copy.deepcopy(self.model, memo), copy.deepcopy(self.guide, memo))

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

    def _on(self, sigma, n: int):
        """Where guidance acts at noise levels ``sigma`` (a number or (n,)): None everywhere (w > 0 and no
        interval, or all inside it), False nowhere, else a bool mask (n,) (Kynkaanniemi et al. 2024)."""
        if self.w == 0.0:
            return False
        if self.interval is None:
            return None
        lo, hi = self.interval
        s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).expand(n)
        inside = (s >= lo) & (s <= hi)
        return None if bool(inside.all()) else (False if not bool(inside.any()) else inside)

    def _mix(self, c: torch.Tensor, u: torch.Tensor, on=None) -> torch.Tensor:
        if on is None:
            return (1.0 + self.w) * c - self.w * u  # eq. 6
        w = torch.where(on.to(c.device), self.w, 0.0).to(c.dtype).reshape((-1,) + (1,) * (c.dim() - 1))
        return c + w * (c - u)  # eq. 6 where guidance acts, the conditional elsewhere

    def _branches(self, f, x: torch.Tensor, cond: torch.Tensor):
        """f's conditional and negative outputs: ``f(model, x, labels)`` on the model and the null class in
        one batched call, or on the model and on ``guide`` (given the same labels) in two."""
        n = x.shape[0]
        if self.guide is None:
            out = f(self.model, *self._pair(x, cond))
            return _rows(out, slice(0, n)), _rows(out, slice(n, None))
        weak_cond = cond if num_classes_of(self.guide) > 0 else None
        weak = f(self.guide, x.to(self.guide.device, self.guide.dtype), weak_cond)
        return f(self.model, x, cond), _rows(weak, slice(None), like=x)

    def _guided(self, f, x: torch.Tensor, cond, sigma=None):
        """``f(model, x, labels)`` (one tensor shaped like x) combined by eq. 6 at noise level ``sigma``."""
        cond = self._check(cond, x.shape[0])
        on = self._on(sigma, x.shape[0])
        if on is False:
            return f(self.model, x, cond)
        c, u = self._branches(f, x, cond)
        return self._mix(c, u, on)


def _rows(out, rows: slice, like: torch.Tensor | None = None):
    """Rows of a tensor or of each field of a ``PMeanVariance``, moved to ``like``'s device and dtype."""
    if isinstance(out, tuple):
        return type(out)(*(_rows(f, rows, like) for f in out))
    out = out[rows]
    return out if like is None else out.to(like.device, like.dtype)


def check_interval(interval) -> tuple[float, float]:
    """(sigma_lo, sigma_hi) with 0 <= sigma_lo <= sigma_hi (sigma_hi may be infinite): the noise levels
    where interval guidance acts."""
    try:
        lo, hi = (float(v) for v in interval)
    except (TypeError, ValueError):
        raise DDPMLabError("the guidance interval must be two noise levels (sigma_lo, sigma_hi), "
                           f"got {interval!r}") from None
    if not (0.0 <= lo <= hi) or lo == float("inf"):
        raise DDPMLabError(f"the guidance interval needs 0 <= sigma_lo <= sigma_hi, got ({lo}, {hi})")
    return lo, hi


def check_guide(model, guide):
    """The weaker model of autoguidance: of ``model``'s family and data shape (a DDPM on the same schedule)."""
    from ddpmlab.models.family import family_of

    if family_of(guide) is not family_of(model) or tuple(guide.data_shape) != tuple(model.data_shape):
        raise DDPMLabError(f"the guiding model must be of the main model's family ({family_of(model).name}) and "
                           f"data shape {tuple(model.data_shape)}")
    if model.schedule_spec() != guide.schedule_spec():
        raise DDPMLabError(f"the guiding model must have the main model's noise schedule ({model.time_text()}, "
                           f"{model.schedule_spec()}), got {guide.schedule_spec()}")
    return guide


class GuidedReverse(Guided, ReverseProcess):
    """A guided model of the DDPM family: the reverse step and score of eq. 6."""

    def __init__(self, model, w: float = 0.0, null_class: int | None = None, interval=None, guide=None):
        super().__init__(model, w, null_class, interval, guide)
        self.schedule = model.schedule

    def respaced(self, num_steps: int) -> "GuidedReverse":
        inner = self.model.respaced(num_steps)
        if inner is self.model:
            return self
        return self._like(inner, None if self.guide is None else self.guide.respaced(num_steps))

    def noise_level(self, t: torch.Tensor) -> torch.Tensor:
        """sigma = sqrt((1 - abar_t) / abar_t) at steps t (n,) of this model's schedule (EDM's sigma)."""
        abar = self.schedule.alphas_cumprod.double().cpu()[torch.as_tensor(t).long().cpu()]
        return ((1.0 - abar) / abar).sqrt()

    def _step_parts(self, x_t: torch.Tensor, t: torch.Tensor, cond):
        """(labels, steps (n,), the mask ``_on``, the conditional and negative ``PMeanVariance``)."""
        n = x_t.shape[0]
        cond = self._check(cond, n)
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(n)
        return cond, t, self._on(self.noise_level(t), n)

    def _branch_steps(self, x_t, t, cond):
        n = x_t.shape[0]
        return self._branches(lambda m, x, c: m.p_mean_variance(x, t.repeat(x.shape[0] // n), c), x_t, cond)

    def p_mean_variance(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> PMeanVariance:
        """The guided reverse step: mean, x_0 and eps of eq. 6; the conditional model's variance."""
        cond, t, on = self._step_parts(x_t, t, cond)
        if on is False:
            return self.model.p_mean_variance(x_t, t, cond)
        c, u = self._branch_steps(x_t, t, cond)
        return PMeanVariance(self._mix(c.mean, u.mean, on), c.variance, c.log_variance,
                             self._mix(c.pred_x0, u.pred_x0, on), self._mix(c.pred_eps, u.pred_eps, on))

    def score(self, x: torch.Tensor, t_c: float, alpha_bar: float, cond=None) -> torch.Tensor:
        """s(x | c) + w (s(x | c) - s(x)) at the continuous step t_c."""
        sigma = math.sqrt((1.0 - float(alpha_bar)) / float(alpha_bar))
        return self._guided(lambda m, x, c: m.score(x, t_c, alpha_bar, c), x, cond, sigma)


class GuidedVelocity(Guided, VelocityProcess):
    """A guided model of the flow family: v_w(x, t | c) = (1 + w) v(x, t | c) - w v(x, t)."""

    def __init__(self, model, w: float = 0.0, null_class: int | None = None, interval=None, guide=None):
        super().__init__(model, w, null_class, interval, guide)
        self.path = model.path

    def noise_level(self, t) -> torch.Tensor:
        """sigma = sigma(t) / alpha(t) on the model's path at times t (a number or (n,)); infinite at t = 1."""
        ts = torch.as_tensor(t, dtype=torch.float64).reshape(-1).tolist()
        ratio = [float(self.path.sigma(v)) / a if (a := float(self.path.alpha(v))) > 0 else math.inf for v in ts]
        return torch.tensor(ratio, dtype=torch.float64)

    def velocity(self, x: torch.Tensor, t, cond=None) -> torch.Tensor:
        n = x.shape[0]

        def v(m, x, c):
            many = torch.is_tensor(t) and t.dim() > 0 and t.numel() > 1
            return m.velocity(x, t.repeat(x.shape[0] // n) if many else t, c)

        return self._guided(v, x, cond, self.noise_level(t))

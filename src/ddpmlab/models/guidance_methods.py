"""Guidance methods by name (``GUIDANCE_METHODS``): each turns a class-conditional model and a weight w >= 0
into a guided model of the same contract, so every sampler that serves it guides.

Convention (ddpmlab's, Ho & Salimans 2022 eq. 6): eps_w = (1 + w) eps(x, c) - w eps(x). At w the tilted
target every method aims at is p(x | c)^(1 + w) p(x)^(-w) (``ddpmlab.evaluation.tilted`` with g = 1 + w);
w = 0 is the plain conditional model (the paper convention p(x | c)^g p(x)^(1 - g) has g = 1 + w).

- ``cfg``: classifier-free guidance (Ho & Salimans 2022), ``Guided(model, w)``;
- ``interval``: guidance only at noise levels sigma = sigma(t) / alpha(t) in [sigma_lo, sigma_hi], the
  conditional model elsewhere (Kynkaanniemi et al. 2024, "Applying guidance in a limited interval";
  default their EDM2 interval (0.28, 5.42]); both families, on the model's own time;
- ``autoguidance``: guide away from a weaker model of the same family given the same labels,
  eps_w = (1 + w) eps_main(x, c) - w eps_weak(x, c) (Karras et al. 2024, "Guiding a diffusion model with a
  bad version of itself"); ``weak`` is required;
- ``cfg++``: x_0 from the guided prediction, the renoising direction from the unconditional eps (Chung et
  al. 2024, Algorithm 1); its weight is the paper's lambda (lambda = 0: the unconditional model; the paper
  reads lambda = 1 as the conditional one), so its target is the tilt g = lambda = w; see
  ``GuidedPlusPlus``. Registered as ``cfg_pp`` (a registry name is an identifier); ``cfg++`` is its alias
  (``method_named``).

Each entry is a ``GuidanceMethod``: ``build(model, w, interval, weak)``, the samplers it serves (None: every
sampler of the model's family) and ``tilt(w)``, the exponent g of the tilted target it aims at.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from ddpmlab.core.contract import PMeanVariance
from ddpmlab.core.process import ProcessModel, ReverseProcess
from ddpmlab.core.registry import Registry
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.guidance import Guided, GuidedReverse

GUIDANCE_METHODS = Registry("guidance method")
DEFAULT_INTERVAL = (0.28, 5.42)  # Kynkaanniemi et al. (2024), EDM2-XXL on ImageNet-512: guide for sigma in it


@dataclass(frozen=True)
class GuidanceMethod:
    """A guidance method: ``build(model, w, interval, weak)`` -> the guided model; ``samplers``: the
    sampler names it serves (None: all of the model's family); ``reference``: its paper; ``contract``: the
    base class of the models it serves (``Family.serves``)."""

    build: Callable
    samplers: tuple | None
    reference: str
    contract: type = ProcessModel
    tilt: Callable = lambda w: 1.0 + w  # the tilted target's exponent g at weight w

    def check_sampler(self, name: str, sampler: str) -> None:
        """Refuse in one line a sampler this method does not serve."""
        if self.samplers is not None and sampler not in self.samplers:
            raise DDPMLabError(f"guidance method {name!r} serves the {' and '.join(self.samplers)} sampler(s), "
                               f"not {sampler!r}")


class GuidedPlusPlus(GuidedReverse):
    """CFG++ (Chung et al. 2024, Algorithm 1) as a DDPM model at the paper's weight lambda = w: at step t,

        eps_lambda = eps(x_t) + lambda (eps(x_t, c) - eps(x_t)),
        x0 = (x_t - sqrt(1 - abar_t) eps_lambda) / sqrt(abar_t),
        x_{t-1} = sqrt(abar_{t-1}) x0 + sqrt(1 - abar_{t-1}) eps(x_t)

    i.e. ``pred_x0`` is CFG's and ``pred_eps`` the unconditional eps, which is exactly what the ``ddim``
    sampler combines (eta = 0: the algorithm; eta > 0 its stochastic form). ``mean`` is the eta = 1 step,
    mean(x) + sqrt(abar_{t-1}) (x0_lambda - x0(x)) (the ancestral step). It is no score or velocity field
    (the renoising does not shrink with the step): ``score`` and ``velocity_field`` refuse, and the method
    serves ``ddim`` and ``ancestral`` only (the ode sampler's dpm_solver would read CFG's x_0 alone).
    lambda = 0 is the unconditional model's DDIM. With exact scores lambda = 1 is not the conditional: CFG++
    is DDIM with CFG at the per-step weight lambda a / (a - b) - 1, a = sqrt(abar_s (1 - abar_t) / abar_t),
    b = sqrt(1 - abar_s), which grows as the steps shrink.
    """

    not_a_field = ("CFG++ is a rule for the DDIM step (x_0 from the guided prediction, the renoising from the "
                   "unconditional eps), not a velocity field: sample it with sampler = 'ddim'")

    def __init__(self, model, w: float = 0.0, null_class: int | None = None, interval=None, guide=None):
        if interval is not None or guide is not None:
            raise DDPMLabError("CFG++ takes no interval and no guiding model")
        super().__init__(model, w, null_class)

    def _on(self, sigma, n: int):
        return None  # both branches at every step, also at w = 0

    def p_mean_variance(self, x_t: torch.Tensor, t: torch.Tensor, cond=None) -> PMeanVariance:
        cond, t, on = self._step_parts(x_t, t, cond)
        c, u = self._branch_steps(x_t, t, cond)
        x0 = self.w * c.pred_x0 + (1.0 - self.w) * u.pred_x0  # eps_lambda's x_0: lambda c + (1 - lambda) u
        abar_prev = self.schedule.alphas_cumprod.to(x_t.device, x_t.dtype)[(t - 1).clamp_min(0)]
        mean = u.mean + abar_prev.sqrt().reshape((-1,) + (1,) * (x_t.dim() - 1)) * (x0 - u.pred_x0)
        return PMeanVariance(mean, u.variance, u.log_variance, x0, u.pred_eps)

    def score(self, x, t_c, alpha_bar, cond=None):
        raise DDPMLabError(self.not_a_field)

    def velocity_field(self, cond=None, float64: bool = True):
        raise DDPMLabError(self.not_a_field)


def _autoguidance(model, w, interval=None, weak=None):
    if weak is None:
        raise DDPMLabError("guidance method 'autoguidance' needs a weaker model to guide with (--guide-with RUN)")
    return Guided(model, w, guide=weak)


GUIDANCE_METHODS.register("cfg", GuidanceMethod(lambda model, w, interval=None, weak=None: Guided(model, w), None,
                                                "Ho & Salimans 2022"))
GUIDANCE_METHODS.register("interval", GuidanceMethod(
    lambda model, w, interval=None, weak=None: Guided(model, w, interval=interval or DEFAULT_INTERVAL), None,
    "Kynkaanniemi et al. 2024"))
GUIDANCE_METHODS.register("autoguidance", GuidanceMethod(_autoguidance, None, "Karras et al. 2024"))
GUIDANCE_METHODS.register("cfg_pp", GuidanceMethod(lambda model, w, interval=None, weak=None: GuidedPlusPlus(model, w),
                                                   ("ddim", "ancestral"), "Chung et al. 2024", ReverseProcess,
                                                   tilt=lambda w: w))
ALIASES = {"cfg++": "cfg_pp"}  # the paper's name, for the command line


def method_named(name: str) -> tuple[str, GuidanceMethod]:
    """(the registered name, the method) for ``name`` or its alias (``cfg++``)."""
    name = ALIASES.get(name, name)
    return name, GUIDANCE_METHODS.get(name)


def guide(model, w: float, method: str = "cfg", interval=None, weak=None):
    """``model`` guided at weight ``w`` by the registered ``method`` (``interval``: (sigma_lo, sigma_hi) for
    ``interval``; ``weak``: the weaker model for ``autoguidance``); a method that does not serve the model's
    family is refused in one line."""
    from ddpmlab.models.family import family_of

    name, m = method_named(method)
    family_of(model).check(m, "guidance method", name, GUIDANCE_METHODS)
    return m.build(model, w, interval, weak)

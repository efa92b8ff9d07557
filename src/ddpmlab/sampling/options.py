"""The ranges of the samplers' number options, each defined once. A sampler refuses a value outside its
range when called (``ddpmlab.sample``); the config validation reads the same ranges for ``sample.eta``,
``sample.time_shift`` and a flow's ``sample.steps``, so ``ddpmlab sample --eta 1e30`` is refused in one
line before any model is loaded.

- DDIM's ``eta`` in [0, 1] (Song et al. 2021, eq. 16): sigma^2 = eta^2 (1 - abar_s) / (1 - abar_t)
  (1 - abar_t / abar_s); eta = 0 is DDIM, eta = 1 the DDPM posterior variance. The step's other noise
  term sqrt(1 - abar_s - sigma^2) (eq. 12) is real only while sigma^2 <= 1 - abar_s, which eta <= 1
  ensures on every grid; a larger eta would have that term clipped to 0 without a word.
- A flow's ``time_shift`` k in [1/100, 100] (Esser et al. 2024, eq. 23: t = k u / (1 + (k - 1) u)): k and
  1/k mirror each other; k = 100 already leaves the last step of a 100-step grid going from t = 0.5 to 0,
  and a larger k collapses the grid onto its end (k = 1e300 puts every time but the last at t = 1).
- The karras grid's ``rho`` in [1, 100] (Karras et al. 2022, eq. 5): rho = 1 spaces sigma evenly, larger
  rho moves the steps towards low noise (7 in EDM), and as rho grows the grid tends to the log_snr grid:
  at 100 every log sigma is within 1.5% of the log-sigma range from that grid's, so a larger rho adds
  nothing (use log_snr).
- A flow's ODE ``steps`` at most ``MAX_ODE_STEPS`` (a DDPM's are bounded by its schedule's T): one
  network evaluation or more per step, so a larger grid is a hang, not a sharper sample.
"""
from __future__ import annotations

from ddpmlab.core.utils import DDPMLabError

ETA_RANGE = (0.0, 1.0)  # DDIM's eta: 0 = DDIM (deterministic), 1 = the DDPM posterior variance
TIME_SHIFT_RANGE = (0.01, 100.0)  # a flow's time-grid shift k (1 = uniform)
MAX_ODE_STEPS = 10_000  # a flow's ODE steps
RHO_RANGE = (1.0, 100.0)  # the karras grid's rho: 1 = evenly in sigma, 7 = EDM's


def check_in_range(name: str, value, low: float, high: float) -> float:
    """``value`` as a float in [low, high] (NaN and infinities are outside), else one ``DDPMLabError``."""
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise DDPMLabError(f"{name} must be a number in [{low:g}, {high:g}], got {value!r}") from None
    if not low <= v <= high:
        raise DDPMLabError(f"{name} must be in [{low:g}, {high:g}], got {value}")
    return v

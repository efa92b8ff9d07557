"""ddpmlab: denoising diffusion probabilistic models (Ho et al. 2020) at small scale.

Time-index convention (used by every module): paper steps are t = 0..T, with t = 0 the data.
Schedule arrays have length T + 1 and index t holds the paper's quantity at step t
(``betas[0] = 0``, ``alphas_cumprod[0] = 1``). Reverse steps run t = T, ..., 1; a network sees
its time as ``t / T`` in (0, 1].
"""

__version__ = "0.1.0"

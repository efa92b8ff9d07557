"""Mutation testing of the mathematical core (issue 27): does the fast suite notice a changed formula?

    python benchmarks/mutation.py [--modules core/schedule.py ...] [--source head|worktree]
                                  [--overlay GLOB ...] [--out benchmarks/results] [--rescore]

mutmut (the ``mutation`` extra) changes one operator, constant or argument at a time in each module of
``MODULES`` and runs the fast test files that cover that module (``MODULES``'s value, the mapping kept
here); a mutant is *killed* when a test fails, *survived* when every test covering its function passes,
*timed out* when the tests run past mutmut's limit (15 times their normal duration, plus 1 s), *no tests*
when no selected test reaches its function. Everything runs in a temporary copy of the checkout: the
committed tree (``--source head``, the default: other people's unfinished edits stay out) or the working
tree (``--source worktree``), with ``--overlay`` files (globs, relative to the root) copied from the
working tree on top; the checkout itself is never mutated. mutmut leaves decorated functions alone, so
in the copy of the module under test each ``@decorator`` becomes the equivalent ``f = decorator(f)``
after the function (``staticmethod`` and ``classmethod`` excepted: mutmut handles those).

Score per module: killed / (mutants - equivalent), where ``EQUIVALENT`` lists the surviving mutants
argued to compute the same thing as the original (keyed by function and changed line, so that an edit
elsewhere in the file does not unpin them). Run alone, one worker, at the lowest priority
(``nice -n 19``, ``OMP_NUM_THREADS=1``): about 40 minutes for every module on one core. Prints the table
and the load average; writes into ``--out``: ``mutation.json`` (every mutant's status and diff, per
module: a run of some modules keeps the others' recorded results), ``mutation.md`` (the table, each
module's source and load average, the equivalent mutants with their argument) and
``mutation_survivors.md`` (the diff of every mutant not killed). ``--rescore`` runs nothing: it judges
the recorded mutants against ``EQUIVALENT`` again and rewrites the two reports.
"""
from __future__ import annotations

import argparse
import ast
import glob
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "src/ddpmlab"
TARGET = 90.0  # issue 27: at least 90% of the non-equivalent mutants killed, per module

# module (under src/ddpmlab) -> the fast test files that cover it (each runs in seconds, no subprocess)
MODULES: dict[str, list[str]] = {
    "core/schedule.py": ["test_schedule.py", "test_forward.py", "test_parameterisation.py", "test_sampling.py",
                         "test_seed_bound.py", "test_mutation_kills_schedule.py"],
    "core/gaussian.py": ["test_likelihood.py", "test_schedule.py"],
    "core/diffusion.py": ["test_forward.py", "test_likelihood.py", "test_schedule.py", "test_parameterisation.py",
                          "test_samplers_ddim.py", "test_seed_bound.py", "test_mutation_kills_diffusion.py"],
    "core/mean_types.py": ["test_mean_types.py", "test_parameterisation.py", "test_schedule.py"],
    "sampling/samplers.py": ["test_samplers_ddim.py", "test_oracles_mutation.py", "test_sampling.py",
                             "test_ode_sampler.py", "test_mutation_kills_samplers.py"],
    "objectives/timesteps.py": ["test_objectives.py", "test_oracles_mutation.py",
                                "test_mutation_kills_timesteps.py"],
    "models/oracle.py": ["test_oracle.py", "test_ode.py", "test_likelihood.py", "test_mean_types.py",
                         "test_seed_bound.py", "test_fast_path.py", "test_mutation_kills_oracle.py"],
    "evaluation/metrics.py": ["test_eval_metrics.py", "test_metrics_nd.py", "test_oracle.py",
                              "test_mutation_kills_metrics.py"],
    "core/var_types.py": ["test_mean_types.py", "test_parameterisation.py", "test_mutation_kills_var_types.py"],
    "evaluation/likelihood.py": ["test_likelihood.py", "test_mutation_kills_likelihood.py"],
    "evaluation/metrics_nd.py": ["test_metrics_nd.py", "test_mutation_kills_metrics_nd.py"],
    "core/continuous.py": ["test_ode.py", "test_mutation_kills_continuous.py"],
    "core/paths.py": ["test_stable_target.py", "test_grids.py", "test_mutation_kills_paths.py"],
    "core/parameterisation.py": ["test_parameterisation.py", "test_mean_types.py", "test_diagnosis.py",
                                 "test_sampling.py", "test_mutation_kills_parameterisation.py"],
    "sampling/ode.py": ["test_ode_sampler.py", "test_grids.py", "test_mutation_kills_ode_sampler.py"],
    "sampling/velocity_solvers.py": ["test_ode_sampler.py", "test_grids.py", "test_flow_map.py",
                                     "test_mutation_kills_velocity_solvers.py"],
    "sampling/grids.py": ["test_grids.py", "test_mutation_kills_grids.py"],
    "objectives/flow_matching.py": ["test_stable_target.py", "test_mutation_kills_flow_matching.py"],
    "objectives/losses.py": ["test_objectives.py", "test_objective_options.py", "test_preconditioning.py",
                             "test_mean_types.py", "test_mutation_kills_losses.py"],
    "models/flow_oracle.py": ["test_stable_target.py", "test_flow_map.py", "test_grids.py",
                              "test_mutation_kills_flow_oracle.py"],
    "models/conditional_oracle.py": ["test_guidance.py", "test_mutation_kills_conditional_oracle.py"],
    "evaluation/ode.py": ["test_ode.py", "test_mutation_kills_eval_ode.py"],
    # test_logprob.py (23 s: it trains the default recipe, every test reaches log_prob) is left out: its
    # closed forms are redone fast in test_mutation_kills_logprob.py
    "evaluation/logprob.py": ["test_mutation_kills_logprob.py"],
    # the few-step families (issue 25); their test files' CLI tests run in-process (``main``), in seconds
    "sampling/flow_map.py": ["test_meanflow.py", "test_consistency.py", "test_mutation_kills_few_step_samplers.py"],
    "sampling/consistency.py": ["test_consistency.py", "test_mutation_kills_few_step_samplers.py"],
    "objectives/meanflow.py": ["test_meanflow.py", "test_mutation_kills_meanflow.py"],
    "objectives/reflow.py": ["test_shortcut_reflow.py", "test_mutation_kills_reflow.py"],
    "objectives/shortcut.py": ["test_shortcut_reflow.py", "test_mutation_kills_shortcut.py"],
    "objectives/consistency.py": ["test_consistency.py", "test_mutation_kills_consistency.py"],
    # models/flow_map.py: every test reaches the quantile or the ODE solve; the closed-form checks of the
    # other test files (ODE against quantile, push-forward by W1: 11 s per mutant) are redone fast in
    # test_mutation_kills_flow_map.py, so only these classes of test_flow_map.py run
    "models/flow_map.py": ["test_flow_map.py::TestMapProperties", "test_flow_map.py::TestRefusals",
                           "test_mutation_kills_flow_map.py"],
}

# Surviving mutants that compute the same thing as the original: (module, function, original line,
# mutated line) -> why. Lines are compared with surrounding white space stripped.
_CPU = ("on the CPU, where every test runs, ``.to(None)`` and ``.to(x.device)`` are the same no-op; only a "
        "GPU could tell them apart")
_EXACT = ("0 and 1 are exact in float32 and ``torch.cat`` / ``torch.where`` promote to the float64 of the other "
          "operand: the same float64 array")
_WHERE = ("the branch is only taken where 1 - abar_t > 0 would also hold, or where both give 0: 1 - abar_t = 0 "
          "means abar_{t-1} = 1 too (abar falls with t), so beta_t (1 - abar_{t-1}) / 1 = 0 and "
          "(1 - abar_{t-1}) sqrt(alpha_t) / 1 = 0, the values the other branch gives")
_FAST = "scale_in, scale_out = scales if scales is not None else trajectory_scales(schedule, x0.dtype, x0.device)"
_EPS = "return predict_eps_from_x0(schedule, x_t, t, self.pred_x0(schedule, x_t, t, head) if x0 is None else x0)"
_PATH = "both ways compute the same numbers; the condition only decides which (the speed)"
_FOUR_D = ("the tensor is always 4-D here ((K, T + 1 or B, d, d)), where axis +2 is axis -2: the same "
           "diagonal / transpose")
_BISECT = ("pieces outside ``cross`` are bisected too, and there the bisection runs to the end of the piece "
           "that the clip chose (F >= c everywhere: to a; F <= c: to b): the same W1 to rounding, more work")
_QUAD = "return float(quad(integrand, lo, hi, points=breaks, limit=500, epsabs=1e-11, epsrel=1e-10)[0])"
_TOL = ("with break points around every component, quad's first pass over the pieces is already exact to "
        "rounding: on the eight mixtures tried (sd ratios up to 1e5, six overlapping components) tolerances "
        "of 1 instead of 1e-11 / 1e-10, or scipy's defaults, give the same float; no subdivision, so the "
        "limit is never reached")
_BREAKS = ("breaks = sorted(set((mu[:, None] + sd[:, None] * torch.tensor(ENTROPY_BREAKS_SD)).flatten().tolist()))")
_LEVELS = "levels = torch.cat([torch.arange(1, n + 1) * m, torch.arange(1, m + 1) * n]).unique()  # sorted, int64"
_KYY = ("``k_yy`` is by contract the reference's own kernel mean on the same points and bandwidths (a cache): "
        "recomputing it gives the same number")
_STEP = "p = model.p_mean_variance(x_t.to(model.device, model.dtype), t.to(model.device))"
_SE = 'return float(v.mean()), float(v.std() / math.sqrt(v.numel())) if v.numel() > 1 else float("nan")'
_STD1 = "the standard deviation of one number is already NaN in torch (n - 1 = 0): the same NaN"
_NLL_SE = 'se = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")'
_KEPT_TABLE = ("``var_kind.log_variance`` given no table computes ``fixed_log_variance(schedule)`` itself, the "
               "table kept here: the same numbers (a kept table and a fresh one are compared in "
               "test_mutation_kills_var_types)")
_LOGVAR = "return self.var_kind.log_variance(self.schedule, var_head, x_t, t, self._fixed_log_variance)"
_NEAREST = "nearest = torch.where(target - log_sigma[lo] <= log_sigma[hi] - target, lo, hi) + 1  # paper steps"
_RK45 = 'sol = solve_ivp(rhs, (1.0, times[-1]), x.reshape(-1).double().cpu().numpy(), method="RK45",'
_COLS = "cols = torch.zeros(r + 1, rows.shape[1], dtype=torch.float64, device=x0.device)"
_MATS = "logits, w = _matrices(workspace, (min(block, n), r + 1), x0.device)"
_MEAN_REF = "mean_ref = torch.empty(n, ref.shape[1], dtype=torch.float64, device=x0.device)"
_EPS_FM = "eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)"
_TB_FM = "tb = t.to(x0.device, x0.dtype).reshape((n,) + (1,) * (x0.dim() - 1))"
_LOSS_FM = "return mean_flat((model.velocity(x_t, t.to(x0.device), cond) - target) ** 2)"
_DUP = "dup = max(0, min(i1, r) - i0)  # rows of the block whose own x_0 is also reference i0 + k"
_WS = "self._workspace = {}  # the stable target's matrices, kept between batches"
_DRAW = "return t, weights.to(x0.device, x0.dtype), noise, q_sample(model.schedule, x0, t, noise)"
_BIND = 'family_of(model).check(self, "objective", type(self).__name__, OBJECTIVES)'
_SEARCH = "hi = torch.searchsorted(log_sigma, target).clamp(1, log_sigma.numel() - 1)"
_ENDS = "ends = abs(grid[0].item() - first) <= 1e-9 and abs(grid[-1].item() - last) <= 1e-9"
_ODE_SE = 'se = float(nll.std() / math.sqrt(B)) if B > 1 else float("nan")'
_STATE = "return torch.from_numpy(np.ascontiguousarray(sol.y[:, i])).to(x.device, x.dtype).reshape(shape)"
_PROBE = "probe = torch.randint(0, 2, x0.shape, generator=generator).double() * 2 - 1"
_IVP = "sol = solve_ivp(rhs, (0.0, 1.0), y0, method=method, rtol=rtol / k, atol=atol / k)"
_KEEP = "keep = torch.rand(n, generator=generator, dtype=torch.float64) < self.ratio"
_RT = "r, t = (s.to(x0.device, x0.dtype) for s in self.times(n, generator))"
_EPS_MF = "eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)"
_ROWS = "rows = torch.randint(0, self.pairs, (n,), generator=generator)"
_ZX = "z, x = z_all[rows].to(x0.device), x_all[rows].to(x0.device)"
_T_RF = "t = torch.rand(n, generator=generator, dtype=torch.float64).to(x0.device, x0.dtype)"
_V_RF = "return mean_flat((model.velocity(x_t, t, None) - (z - x)) ** 2)"
_TWO_D = "two_d = 2.0 ** -torch.randint(0, levels, (k,), generator=generator).to(torch.float64)"
_D_SC = "d = torch.cat([d_sc, torch.zeros(n - k, dtype=torch.float64)])"
_AS_T = "{} = torch.as_tensor({}, dtype=x.dtype, device=x.device).reshape(-1).expand(x.shape[0])"
_TDC = "t, d, consistent = t.to(x0.device, x0.dtype), d.to(x0.device, x0.dtype), consistent.to(x0.device)"
_POW2 = ("2^-j and 0 are exact in float32, and every use mixes them with float64 (the slots, ``d_sc``), which "
         "promotes: the same float64 numbers")
_COLUMN = "return t.to(x.device, x.dtype).reshape((-1,) + (1,) * (x.dim() - 1))"
_Z_CM = "z = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)"
_W_CM = "return pseudo_huber(pred, target, c) * weight.to(x0.device, x0.dtype)"
_V_CM = "return self.teacher.velocity(x, t.to(x.device, x.dtype)).to(x.dtype)"
_STEP_CM = 'return {"curriculum_step": torch.tensor(self.step, dtype=torch.int64)}'
_PIECE = 'sol = solve_ivp(rhs, (t_from, t_to), y, method="RK45", rtol=rtol, atol=atol)'
_INNER_REV = "reverse=t_to < t_from)"
_INNER = "inner = sorted({float(k) for k in knots if min(t_from, t_to) < float(k) < max(t_from, t_to)},"
_RANDINT = "``torch.randint(high, size)`` draws from 0 to high - 1: the same call (the same draws)"
_JIT = 'warnings.filterwarnings("ignore", "`torch.jit.script` is deprecated", DeprecationWarning)  # torch\'s own'
EQUIVALENT: dict[tuple[str, str, str, str], str] = {
    ("core/schedule.py", "cosine_betas", "abar = f / f[0]", "abar = f * f[0]"):
        "betas use only ratios abar_t / abar_{t-1}, in which any constant factor of f cancels (to rounding)",
    ("core/schedule.py", "cosine_betas", "abar = f / f[0]", "abar = f / f[1]"):
        "betas use only ratios abar_t / abar_{t-1}, in which any constant factor of f cancels (to rounding)",
    **{("core/schedule.py", "NoiseSchedule.__init__", line, line.replace(", dtype=torch.float64", which)): _EXACT
       for line in ("zero = torch.zeros(1, dtype=torch.float64)",
                    "self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])")
       for which in (", dtype=None", ", ")},
    ("core/schedule.py", "NoiseSchedule.__init__",
     "safe = torch.where(one_minus > 0, one_minus, torch.ones_like(one_minus))",
     "safe = torch.where(one_minus >= 0, one_minus, torch.ones_like(one_minus))"):
        "``safe`` differs only where 1 - abar_t = 0, and there every ``torch.where`` that divides by it takes "
        "its other branch: the NaN of 0 / 0 is computed and dropped",
    ("core/schedule.py", "NoiseSchedule.__init__",
     "self.posterior_variance = torch.where(one_minus > 0, self.betas * (1.0 - abar_prev) / safe, zero)",
     "self.posterior_variance = torch.where(one_minus >= 0, self.betas * (1.0 - abar_prev) / safe, zero)"): _WHERE,
    ("core/schedule.py", "NoiseSchedule.__init__",
     "self.posterior_mean_coef2 = torch.where(one_minus > 0, (1.0 - abar_prev) * self.alphas.sqrt() / safe, zero)",
     "self.posterior_mean_coef2 = torch.where(one_minus >= 0, (1.0 - abar_prev) * self.alphas.sqrt() / safe, zero)"):
        _WHERE,
    ("core/schedule.py", "NoiseSchedule.model_time",
     "tau = self.timesteps[t.cpu()].double().to(t.device) / self.num_train_steps",
     "tau = self.timesteps[t.cpu()].double().to(None) / self.num_train_steps"): _CPU,
    **{("core/diffusion.py", "trajectory_scales", f"{head}.to(device, dtype)", f"{head}.to({args})"): _CPU
       for head in ("scale_in = (schedule.betas[1:] / schedule.alphas_cumprod[1:]).sqrt()",
                    "return scale_in, schedule.sqrt_alphas_cumprod[1:]") for args in ("None, dtype", "dtype")},
    **{("core/diffusion.py", "forward_trajectory_fast", _FAST, _FAST.replace("x0.dtype, x0.device)", args)): _CPU
       for args in ("x0.dtype, None)", "x0.dtype, )")},
    ("core/diffusion.py", "forward_trajectory_fast", _FAST, _FAST.replace("x0.dtype, x0.device", "None, x0.device")):
        "the scales stay float64: the float32 chain is multiplied in float64 and rounded once into its float32 "
        "buffer, the same numbers to float32 rounding (at least as accurate)",
    ("core/diffusion.py", "forward_trajectory_fast", _FAST,
     _FAST.replace("if scales is not None", "if (scales is not None) and False")):
        "``scales`` is by contract ``trajectory_scales`` of the same schedule (a cache the training loop passes); "
        "recomputing it gives the same numbers",
    ("core/var_types.py", "VarType.log_variance",
     "return extract(self.fixed_log_variance(schedule) if fixed is None else fixed, t, x_t).expand_as(x_t)",
     "return extract(self.fixed_log_variance(schedule) if (fixed is None) or True else fixed, t, x_t).expand_as(x_t)"):
        "``fixed`` is by contract ``fixed_log_variance(schedule)`` kept by the caller: recomputing it gives the "
        "same table (a kept table and a fresh one are compared in test_mutation_kills_var_types)",
    ("core/var_types.py", "FixedLarge.fixed_log_variance",
     "large = torch.cat([s.betas[:1], s.posterior_variance[2:3] if s.T >= 2 else s.betas[1:2], s.betas[2:]])",
     "large = torch.cat([s.betas[:1], s.posterior_variance[2:3] if s.T >= 2 else s.betas[1:3], s.betas[2:]])"):
        "the branch is taken only at T = 1, where betas has two entries: betas[1:3] is betas[1:2]",
    ("core/mean_types.py", "MeanType.pred_eps", _EPS, _EPS.replace("if x0 is None", "if (x0 is None) or True")):
        "``x0`` is by contract this head's ``pred_x0`` (its one caller, ``Parameterisation.p_mean_variance``, "
        "passes exactly that): recomputing it gives the same tensor; the argument only saves the work",
    # models/oracle.py: the two ways of m v (einsum for one shared step in d > 4, elementwise otherwise)
    # compute the same product; a condition that only moves shared-step batches from one way to the other,
    # or that picks the gathered (K, B, ...) layout over the shared (K, 1, ...) one, changes the speed only
    **{("models/oracle.py", "_matvec", "if m.shape[1] == 1 and m.shape[-1] > 4:", new): _PATH
       for new in ("if m.shape[2] == 1 and m.shape[-1] > 4:", "if m.shape[1] == 1 and m.shape[+1] > 4:",
                   "if m.shape[1] == 1 and m.shape[-2] > 4:", "if m.shape[1] == 1 and m.shape[-1] >= 4:",
                   "if m.shape[1] == 1 and m.shape[-1] > 5:")},
    **{("models/oracle.py", "MixtureOracle._at", "if bool((t == t[0]).all()):", new): _PATH
       for new in ("if bool(None):", "if bool((t != t[0]).all()):")},
    **{("models/oracle.py", fn, line, line.replace("dtype=torch.float64)", new)): _EXACT
       for fn, line in (("MixtureOracle.__init__", "eye = torch.eye(d, dtype=torch.float64)"),
                        ("MixtureOracle._marginal", "eye = torch.eye(self.dist.dim, dtype=torch.float64)"))
       for new in ("dtype=None)", ")")},
    **{("models/oracle.py", fn, line, line.replace("dim1=-2", "dim1=+2")): _FOUR_D
       for fn, line in (("MixtureOracle.__init__",
                         "self.logdets_t = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K, T + 1)"),
                        ("MixtureOracle._marginal", "logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)"),
                        ("MixtureOracle.p_mean_variance",
                         "comp_vars = torch.diagonal(comp_covs, dim1=-2, dim2=-1)  # (K, 1 or B, d)"))},
    ("models/oracle.py", "MixtureOracle.__init__", "post = 0.5 * (post + post.transpose(-1, -2))",
     "post = 0.5 * (post + post.transpose(-1, +2))"): _FOUR_D,
    ("models/oracle.py", "MixtureOracle._marginal",
     "a = torch.as_tensor(alpha_bar, dtype=torch.float64).reshape(1, -1)  # (1, 1 or B)",
     "a = torch.as_tensor(alpha_bar, dtype=torch.float64).reshape(-1)  # (1, 1 or B)"):
        "``a`` only meets (K, 1, ...) tensors through ``a[..., None, None]`` and ``a.sqrt()[..., None]``: "
        "broadcasting from the right, (B,) and (1, B) give the same (K, B, ...) results",
    ("models/oracle.py", "MixtureOracle.score", "return self.q_score(x.to(torch.float64), alpha_bar).to(x.dtype)",
     "return self.q_score(x.to(None), alpha_bar).to(x.dtype)"):
        "``q_score`` casts its input to float64 itself (``_flat``): the same numbers",
    ("models/oracle.py", "_matvec", 'return torch.einsum("kij,kbj->kbi", m[:, 0], v)',
     'return torch.einsum("KIJ,KBJ->KBI", m[:, 0], v)'): "einsum takes upper-case letters as subscripts too",
    ("models/oracle.py", "MixtureOracle._flat", "return x.reshape(x.shape[0], self.dist.dim).to(torch.float64)  # (B, d)",
     "return x.reshape(x.shape[0], self.dist.dim).to(None)  # (B, d)"):
        "every use of the flat x meets a float64 buffer first (x - means, the score's float64 x), which "
        "promotes it exactly: the same float64 results (the dtype test checks q_log_prob and score)",
    **{("models/oracle.py", "MixtureOracle._steps", "return t.expand(x.shape[0]) if t.numel() == 1 else t", new):
       "a one-element t that is not expanded broadcasts against the batch wherever it is used (``_at`` "
       "gathers (K, 1, ...), the schedule's tables give (1, 1) rows): the same values and shapes"
       for new in ("return t.expand(x.shape[0]) if (t.numel() == 1) and False else t",
                   "return t.expand(x.shape[0]) if t.numel() != 1 else t",
                   "return t.expand(x.shape[0]) if t.numel() == 2 else t")},
    ("models/oracle.py", "MixtureOracle._steps", "return t.expand(x.shape[0]) if t.numel() == 1 else t",
     "return t.expand(x.shape[0]) if (t.numel() == 1) or True else t"):
        "a t of B elements is already (B,): expanding it to (B,) returns the same steps",
    # evaluation/metrics.py
    ("evaluation/metrics.py", "_flat1d", "if x.ndim > 1 and x[0].size != 1:", "if x.ndim >= 1 and x[0].size != 1:"):
        "for a 1-D array x[0] is one number (size 1), so the refusal is the same",
    ("evaluation/metrics.py", "_flat1d", "return x.reshape(-1)", "return x.reshape(-2)"):
        "numpy takes any negative size as the one inferred dimension: the same flat array",
    **{("evaluation/metrics.py", "mixture_cdf_1d", "x = np.asarray(x, dtype=np.float64)", new):
       "x only meets the float64 means and sds (``x[..., None] - mu``), which promote it to float64 exactly"
       for new in ("x = np.asarray(x, dtype=None)", "x = np.asarray(x, )")},
    ("evaluation/metrics.py", "_mixture_cdf_integral_1d",
     "return (w * sd * (z * ndtr(z) + np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi))).sum(-1)",
     "return (w * sd * (z * ndtr(z) + np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi))).sum(+1)"):
        "its one caller passes 1-D arrays, so z is (n, K) and axes +1 and -1 are the same",
    **{("evaluation/metrics.py", "w1_to_mixture_1d", "cross = np.flatnonzero((Fa < c) & (c < Fb))", new): _BISECT
       for new in ("cross = None", "cross = np.flatnonzero((Fa < c) | (c < Fb))",
                   "cross = np.flatnonzero((Fa <= c) & (c < Fb))", "cross = np.flatnonzero((Fa < c) & (c <= Fb))")},
    ("evaluation/metrics.py", "w1_to_mixture_1d",
     "for _ in range(100):  # bisection to rounding: the piece's length halves each time",
     "for _ in range(101):  # bisection to rounding: the piece's length halves each time"):
        "the loop stops at rounding (the length test) long before 100 halvings: one more allowed changes nothing",
    ("evaluation/metrics.py", "w1_to_mixture_1d", "below = mixture_cdf_1d(dist, mid) < c[cross]",
     "below = mixture_cdf_1d(dist, mid) <= c[cross]"):
        "differs only where F(mid) = c exactly, i.e. at the crossing itself, which both versions then bracket",
    **{("evaluation/metrics.py", "w1_to_mixture_1d", "if not np.any(hi - lo > 1e-15 * np.maximum(1.0, np.abs(hi))):",
        new): "a stopping tolerance of the bisection (1e-15 relative, or 100 halvings): the crossing moves by "
              "rounding only, and so does W1"
       for new in ("if not np.any(hi + lo > 1e-15 * np.maximum(1.0, np.abs(hi))):",
                   "if not np.any(hi - lo >= 1e-15 * np.maximum(1.0, np.abs(hi))):",
                   "if not np.any(hi - lo > 1e-15 / np.maximum(1.0, np.abs(hi))):",
                   "if not np.any(hi - lo > 1e-15 * np.maximum(2.0, np.abs(hi))):")},
    ("evaluation/metrics.py", "w1_to_mixture_1d",
     "tails = G(x[:1])[0] + _mixture_cdf_integral_1d(dist, x[-1:], upper=True)[0]",
     "tails = G(x[:2])[0] + _mixture_cdf_integral_1d(dist, x[-1:], upper=True)[0]"):
        "G is elementwise and only element 0 is kept: G(x[:2])[0] = G(x[:1])[0]",
    **{("evaluation/metrics.py", "mixture_entropy_1d",
        "lo, hi = float((mu - 12 * sd).min()), float((mu + 12 * sd).max())", new):
       "the density beyond 12 sds is below exp(-72): 13 sds adds nothing at quad's tolerance"
       for new in ("lo, hi = float((mu - 13 * sd).min()), float((mu + 12 * sd).max())",
                   "lo, hi = float((mu - 12 * sd).min()), float((mu + 13 * sd).max())")},
    **{("evaluation/metrics.py", "mixture_entropy_1d", _QUAD, new): _TOL
       for new in (_QUAD.replace("limit=500, ", ""), _QUAD.replace("epsabs=1e-11, ", ""),
                   _QUAD.replace(", epsrel=1e-10", ", "), _QUAD.replace("limit=500", "limit=501"),
                   _QUAD.replace("epsabs=1e-11", "epsabs=1.00000000001"),
                   _QUAD.replace("epsrel=1e-10", "epsrel=1.0000000001"))},
    ("evaluation/metrics.py", "mixture_entropy_1d", _BREAKS, _BREAKS.replace("mu[:, None] + sd", "mu[:, None] - sd")):
        "``ENTROPY_BREAKS_SD`` is symmetric about 0: mu - sd c and mu + sd c give the same set of break points",
    ("evaluation/metrics.py", "component_fractions", "x = torch.as_tensor(samples).reshape(len(samples), -1)",
     "x = torch.as_tensor(samples).reshape(-1)"):
        "``GaussianMixture.component_log_prob`` reshapes its input to (n, d) itself",
    # evaluation/likelihood.py
    **{("evaluation/likelihood.py", "reverse_step", _STEP, _STEP.replace(old, new)): _CPU
       for old, new in (("x_t.to(model.device, model.dtype)", "x_t.to(None, model.dtype)"),
                        ("x_t.to(model.device, model.dtype)", "x_t.to(model.dtype)"),
                        ("t.to(model.device))", "t.to(None))"))},
    **{("evaluation/likelihood.py", "_mean_se", _SE, _SE.replace(old, new)): why
       for old, new, why in (("if v.numel() > 1", "if (v.numel() > 1) or True", _STD1),
                             ("if v.numel() > 1", "if v.numel() >= 1", _STD1),
                             ('float("nan")', 'float("NAN")', 'float("NAN") is float("nan")'))},
    # evaluation/metrics_nd.py
    **{("evaluation/metrics_nd.py", "_w1_sorted", _LEVELS, _LEVELS.replace(old, new)):
       "adds the level 0, whose interval has width 0 (``torch.diff`` with 0 prepended): it adds 0 to the sum"
       for old, new in (("torch.arange(1, n + 1) * m", "torch.arange(n + 1) * m"),
                        ("torch.arange(1, m + 1) * n", "torch.arange(m + 1) * n"))},
    ("evaluation/metrics_nd.py", "_kernel_mean",
     "def _kernel_mean(x: torch.Tensor, y: torch.Tensor, bandwidths, chunk: int = 512) -> float:",
     "def _kernel_mean(x: torch.Tensor, y: torch.Tensor, bandwidths, chunk: int = 513) -> float:"):
        "the chunk size only splits the same sum into other pieces (to rounding)",
    ("evaluation/metrics_nd.py", "mmd", "k_yy = _kernel_mean(y, y, bandwidths) if k_yy is None else k_yy",
     "k_yy = _kernel_mean(y, y, bandwidths) if (k_yy is None) or True else k_yy"): _KYY,
    ("evaluation/metrics_nd.py", "sample_metrics_nd",
     "k_yy = _kernel_mean(reference[:max_n_mmd], reference[:max_n_mmd], bw)", "k_yy = None"): _KYY,
    **{("evaluation/metrics_nd.py", "sample_metrics_nd", "mm = lambda x: mmd(x, reference, bw, max_n_mmd, k_yy)  # noqa: E731",
        new): _KYY for new in ("mm = lambda x: mmd(x, reference, bw, max_n_mmd, None)  # noqa: E731",
                               "mm = lambda x: mmd(x, reference, bw, max_n_mmd, )  # noqa: E731")},
    **{("evaluation/metrics_nd.py", "nll_under_density", line, line.replace('float("nan")', 'float("NAN")')):
       'float("NAN") is float("nan")'
       for line in ('se = float(v.std() / math.sqrt(len(v))) if len(v) > 1 else float("nan")',
                    'return (float(v.mean()) if len(v) else float("nan")), se, float(1 - ok.double().mean())')},
    **{("evaluation/metrics_nd.py", "nll_under_density", _NLL_SE, _NLL_SE.replace("if len(v) > 1", new)): _STD1
       for new in ("if (len(v) > 1) or True", "if len(v) >= 1")},
    ("evaluation/metrics_nd.py", "nll_under_density",
     'return (float(v.mean()) if len(v) else float("nan")), se, float(1 - ok.double().mean())',
     'return (float(v.mean()) if (len(v)) or True else float("nan")), se, float(1 - ok.double().mean())'):
        "the mean of an empty tensor is already NaN",
    ("sampling/samplers.py", "noise_like", "return torch.randn(x.shape, generator=generator).to(x.device, x.dtype)",
     "return torch.randn(x.shape, generator=generator).to(None, x.dtype)"): _CPU,
    ("sampling/samplers.py", "noise_like", "return torch.randn(x.shape, generator=generator).to(x.device, x.dtype)",
     "return torch.randn(x.shape, generator=generator).to(x.dtype)"): _CPU,
    # core/paths.py
    **{("core/paths.py", f"LinearPath.{fn}", f"return {c} + 0.0 * t", f"return {c} - 0.0 * t"):
       "0.0 * t is +0 or -0 (NaN where t is, either way): c + 0 t and c - 0 t are the same numbers, in t's "
       "shape and type" for fn, c in (("d_alpha", "-1.0"), ("d_sigma", "1.0"))},
    # sampling/grids.py
    ("sampling/grids.py", "DiscreteSteps.from_sigmas", _NEAREST, _NEAREST.replace(" <= ", " < ")):
        "differs only where a noise level lies exactly halfway in log sigma between two steps (a tie of two "
        "float64 distances), where either step is the nearest",
    # models/conditional_oracle.py
    **{("models/conditional_oracle.py", fn, line, line.replace("t_c, alpha_bar)", "None, alpha_bar)")):
       "``MixtureOracle.score`` reads only alpha-bar (its closed form at that noise level); t_c is the contract's "
       "argument for networks" for fn, line in (("LabelledMixtureOracle.score", "return self.unconditional.score(x, t_c, alpha_bar)"),
                                                ("LabelledMixtureOracle.score", "out[idx] = oracle.score(x[idx], t_c, alpha_bar)"))},
    **{("models/conditional_oracle.py", "class_posterior", "return dist.responsibilities(x.reshape(x.shape[0], -1))",
        f"return dist.responsibilities(x.reshape({new}))"):
       "``GaussianMixture.component_log_prob`` reshapes its input to (-1, d) itself, and a reshape keeps the "
       "row-major order of the numbers: any shape holding them gives back the same (n, d) rows"
       for new in ("-1", "x.shape[1], -1")},
    # sampling/velocity_solvers.py
    ("sampling/velocity_solvers.py", "rk45_solve", _RK45 + " rtol=rtol,", _RK45.replace(' method="RK45",', "") + " rtol=rtol,"):
        "scipy's ``solve_ivp`` defaults to method='RK45': the same call",
    **{("sampling/velocity_solvers.py", "rk45_solve", _STATE, _STATE.replace("to(x.device, x.dtype)", new)): _CPU
       for new in ("to(None, x.dtype)", "to(x.dtype)")},
    ("sampling/velocity_solvers.py", "_fixed_step", "v = model.velocity_field(cond, float64=False)",
     "v = model.velocity_field(cond, float64=None)"):
        "``velocity_field`` reads ``float64`` only as a truth value (a flow's: copy in float64 or not; a DDPM's: "
        "always float64): None and False are the same",
    # objectives/flow_matching.py
    **{("objectives/flow_matching.py", fn, old, new): _CPU for fn, old, new in (
        ("_matrices", "logits = torch.empty(shape, dtype=torch.float64, device=device)",
         "logits = torch.empty(shape, dtype=torch.float64, device=None)"),
        ("_matrices", "logits = torch.empty(shape, dtype=torch.float64, device=device)",
         "logits = torch.empty(shape, dtype=torch.float64, )"),
        ("_matrices", "w = torch.empty(shape, dtype=torch.float32, device=device)",
         "w = torch.empty(shape, dtype=torch.float32, device=None)"),
        ("_matrices", "w = torch.empty(shape, dtype=torch.float32, device=device)",
         "w = torch.empty(shape, dtype=torch.float32, )"),
        ("stable_target", "tb = t.to(x0.device, torch.float64).reshape(n, 1)",
         "tb = t.to(None, torch.float64).reshape(n, 1)"),
        ("stable_target", "tb = t.to(x0.device, torch.float64).reshape(n, 1)", "tb = t.to(torch.float64).reshape(n, 1)"),
        ("stable_target", _COLS, _COLS.replace("device=x0.device)", "device=None)")),
        ("stable_target", _COLS, _COLS.replace("device=x0.device)", ")")),
        ("stable_target", _MATS, _MATS.replace("x0.device)", "None)")),
        ("stable_target", _MEAN_REF, _MEAN_REF.replace("device=x0.device)", "device=None)")),
        ("stable_target", _MEAN_REF, _MEAN_REF.replace("device=x0.device)", ")")),
        ("FlowMatching.__call__", _EPS_FM, _EPS_FM.replace(".to(x0.device)", ".to(None)")),
        ("FlowMatching.__call__", _TB_FM, _TB_FM.replace("t.to(x0.device, x0.dtype)", "t.to(None, x0.dtype)")),
        ("FlowMatching.__call__", _TB_FM, _TB_FM.replace("t.to(x0.device, x0.dtype)", "t.to(x0.dtype)")),
        ("FlowMatching.__call__", _LOSS_FM, _LOSS_FM.replace("t.to(x0.device)", "t.to(None)")))},
    **{("objectives/flow_matching.py", "_matrices", "w = torch.empty(shape, dtype=torch.float32, device=device)", new):
       "torch's default dtype is float32 (ddpmlab never changes it): the same float32 buffer"
       for new in ("w = torch.empty(shape, dtype=None, device=device)", "w = torch.empty(shape, device=device)")},
    **{("objectives/flow_matching.py", "stable_target", _DUP, _DUP.replace("max(0, min(i1, r) - i0)", new)):
       "the diagonal of lg[:, 1 + i0:] (rows i0..i1-1 against references i0..r-1) has exactly max(0, min(i1, r) - "
       "i0) entries: any bound at least that long (None, 1 for an empty diagonal, + i0) slices all of them"
       for new in ("None", "max(1, min(i1, r) - i0)", "max(0, min(i1, r) + i0)")},
    **{("objectives/flow_matching.py", "stable_target", "block = max(16, BLOCK_ENTRIES // (r + 1))", new):
       "the block size only partitions the rows; every row's numbers are computed alike in any block (to the "
       "rounding of the matrix product's kernel)"
       for new in ("block = max(17, BLOCK_ENTRIES // (r + 1))", "block = max(16, BLOCK_ENTRIES // (r + 2))")},
    ("objectives/flow_matching.py", "stable_target", "for i0 in range(0, n, block):", "for i0 in range(0, n, ):"):
        "blocks then start at every row and overlap: each row is computed again, with the same numbers, by every "
        "block that holds it, and the last one written stays (only slower)",
    **{("objectives/flow_matching.py", fn, old, new):
       "the workspace is a cache of the (B, 1 + r) matrices: without it ``_matrices`` makes fresh ones of the same "
       "shape, filled before use (the reuse is checked in test_stable_target)"
       for fn, old, new in (("FlowMatching.__init__", _WS, _WS.replace("= {}", "= None")),
                            ("FlowMatching.__call__", "self._workspace)", "None)"),
                            ("FlowMatching.__call__", "self._workspace)", ")"))},
    ("objectives/flow_matching.py", "FlowMatching.__call__", "target = path.velocity(x0, eps, tb)",
     "target = path.velocity(x0, eps, None)"):
        "a flow model's path is the linear one (``FlowModel.path``; the VP path takes float times only, not the "
        "(B, 1) times here), whose conditional velocity eps - x_0 does not read t",
    # objectives/losses.py
    **{("objectives/losses.py", fn, old, new): _CPU for fn, old, new in (
        ("TrajectoryBound.__call__", "return self._bound(x0, self._noise.to(x0.device)) / (T + 1)",
         "return self._bound(x0, self._noise.to(None)) / (T + 1)"),
        ("PerStep.draw", "noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)",
         "noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(None)"),
        ("PerStep.draw", "t = t.to(x0.device)", "t = t.to(None)"),
        ("PerStep.draw", _DRAW, _DRAW.replace("weights.to(x0.device, x0.dtype)", "weights.to(None, x0.dtype)")),
        ("PerStep.draw", _DRAW, _DRAW.replace("weights.to(x0.device, x0.dtype)", "weights.to(x0.dtype)")))},
    ("objectives/losses.py", "PerStep.bind", _BIND, _BIND.replace("check(self,", "check(None,")):
        "``Family.serves`` reads only the objective's ``contract`` (``ReverseProcess`` when absent); no per-step "
        "objective sets one, so ``self`` and None serve the same families",
    # evaluation/logprob.py
    **{("evaluation/logprob.py", "exact_log_prob", "return dist.log_prob(x.double().reshape(x.shape[0], -1))",
        f"return dist.log_prob(x.double().reshape({new}))"):
       "every closed-form density here (``GaussianMixture.log_prob``, ``Checkerboard.log_prob``) reshapes its input "
       "to (-1, d) itself, and a reshape keeps the row-major order: the same rows" for new in ("-1", "x.shape[1], -1")},
    ("sampling/grids.py", "DiscreteSteps.from_sigmas", _SEARCH, _SEARCH.replace("clamp(1, ", "clamp(None, ")):
        "only a level below sigma(1) finds index 0; it then takes step 0 instead of 1, and both are raised to the "
        "floor K - i >= 1 of the next line: the same step",
    ("sampling/grids.py", "DiscreteSteps.from_sigmas", _SEARCH, _SEARCH.replace("numel() - 1)", "numel() - 2)")):
        "only a level above sigma(T - 1) finds the top index; of the decreasing levels only sigma_0 (always step T) "
        "and sigma_1 (held to step T - 1 by the next line) can lie there, and both versions give them the same step",
    **{("sampling/grids.py", "_check_ends", _ENDS, new): why for new, why in (
        (_ENDS.replace("first) <= 1e-9", "first) < 1e-9"),
         "the two differ only where |grid[0] - first| is exactly the float 1e-9: for steps the difference is a whole "
         "number, for times 1 - grid[0] is a multiple of 2^-53, which 1e-9 is not"),
        (_ENDS.replace("grid[-1].item() - last", "grid[-1].item() + last"),
         "both axes end at last = 0 (the data): x - 0 and x + 0 are the same"))},
    # core/parameterisation.py: the kept fixed variance table and the passed x_0 are caches of what the
    # callee recomputes when given None
    ("core/parameterisation.py", "GaussianDiffusion.__init__",
     "self._fixed_log_variance = self.var_kind.fixed_log_variance(schedule)", "self._fixed_log_variance = None"):
        _KEPT_TABLE,
    **{("core/parameterisation.py", "GaussianDiffusion.log_variance", _LOGVAR, _LOGVAR.replace(old, new)):
       _KEPT_TABLE for old, new in (("self._fixed_log_variance)", "None)"), (", self._fixed_log_variance)", ", )"))},
    **{("core/parameterisation.py", "GaussianDiffusion.p_mean_variance",
        "eps = kind.pred_eps(s, x_t, t, mean_head, pred_x0)", new):
       "``pred_x0`` is this head's own ``kind.pred_x0(s, x_t, t, mean_head)`` (the line above): given None, "
       "``MeanType.pred_eps`` recomputes exactly that (see its equivalent mutant)"
       for new in ("eps = kind.pred_eps(s, x_t, t, mean_head, None)", "eps = kind.pred_eps(s, x_t, t, mean_head, )")},
    # models/flow_oracle.py
    ("models/flow_oracle.py", "FlowMixtureOracle._terms",
     "x = x.reshape(x.shape[0], self.dist.dim).to(torch.float64)", "x = x.reshape(x.shape[0], self.dist.dim).to(None)"):
        "the flat x meets the float64 means first (x[None] - a means), which promotes it exactly: the same float64 "
        "results (test_mutation_kills_flow_oracle checks a float32 batch against float64)",
    **{("models/flow_oracle.py", "FlowMixtureOracle._terms", "eye = torch.eye(self.dist.dim, dtype=torch.float64)",
        new): _EXACT for new in ("eye = torch.eye(self.dist.dim, dtype=None)", "eye = torch.eye(self.dist.dim, )")},
    ("models/flow_oracle.py", "FlowMixtureOracle._terms",
     "logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)  # (K,)",
     "logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(+1)  # (K,)"):
        "the diagonal of the (K, d, d) factors is (K, d): axes +1 and -1 are the same",
    ("models/flow_oracle.py", "FlowMixtureOracle._terms", 'pdiff = torch.einsum("kij,kbj->kbi", prec, diff)',
     'pdiff = torch.einsum("KIJ,KBJ->KBI", prec, diff)'): "einsum takes upper-case letters as subscripts too",
    ("models/flow_oracle.py", "FlowMixtureOracle.posterior_means",
     'x0_k = self.dist.means[:, None, :] + a * torch.einsum("kij,kbj->kbi", self.dist.covariances, pdiff)',
     'x0_k = self.dist.means[:, None, :] + a * torch.einsum("KIJ,KBJ->KBI", self.dist.covariances, pdiff)'):
        "einsum takes upper-case letters as subscripts too",
    # evaluation/ode.py
    **{("evaluation/ode.py", "_drift_and_divergence", line, line.replace("* probe", "/ probe")):
       "the Rademacher probe is +1 or -1, by which dividing and multiplying are the same (exactly)"
       for line in ("g = torch.autograd.grad((f * probe).sum(), x)[0]",
                    "div = (g * probe).reshape(x.shape[0], -1).sum(1)")},
    **{("evaluation/ode.py", "ode_log_likelihood", _ODE_SE, _ODE_SE.replace(old, new)): why
       for old, new, why in (("if B > 1", "if (B > 1) or True", _STD1), ("if B > 1", "if B >= 1", _STD1),
                             ('float("nan")', 'float("NAN")', 'float("NAN") is float("nan")'))},
    ("evaluation/ode.py", "ode_log_likelihood", _PROBE, _PROBE.replace("randint(0, 2, ", "randint(2, ")):
        "``torch.randint(high, size)`` draws from 0 to high - 1: the same call (the same draws)",
    ("evaluation/ode.py", "ode_log_likelihood", _IVP, _IVP.replace("method=method, ", "")):
        "scipy's ``solve_ivp`` defaults to method='RK45', the default here, which every caller keeps",
    # objectives/meanflow.py
    ("objectives/meanflow.py", "MeanFlow.times", _KEEP, _KEEP.replace(" < self.ratio", " <= self.ratio")):
        "the two differ only where a float64 uniform draw equals ``ratio`` exactly (about 2^-53 per draw for "
        "any ratio): no test, and no run, can see it",
    **{("objectives/meanflow.py", "MeanFlow.__call__", _RT, _RT.replace("s.to(x0.device, x0.dtype)", new)): _CPU
       for new in ("s.to(None, x0.dtype)", "s.to(x0.dtype)")},
    ("objectives/meanflow.py", "MeanFlow.__call__", _EPS_MF, _EPS_MF.replace(".to(x0.device)", ".to(None)")): _CPU,
    **{("objectives/meanflow.py", "MeanFlow.__call__", _JIT, _JIT.replace(old, new)):
       "the filter only keeps torch's own deprecation warning (forward AD compiles a helper with "
       "``torch.jit.script`` once per process) off the screen: the loss and its gradient are the same numbers; "
       "the warning comes only at the first forward-AD call of a process, so no test can count on seeing it"
       for old, new in ((", DeprecationWarning)", ", )"),
                        ("`torch.jit.script` is deprecated", "XX`torch.jit.script` is deprecatedXX"),
                        ("`torch.jit.script` is deprecated", "`TORCH.JIT.SCRIPT` IS DEPRECATED"))},
    # objectives/reflow.py
    ("objectives/reflow.py", "Reflow.__call__", _ROWS,
     _ROWS.replace("randint(0, self.pairs, ", "randint(self.pairs, ")): _RANDINT,
    **{("objectives/reflow.py", "Reflow.__call__", line, line.replace(old, new)): _CPU
       for line, old, new in ((_ZX, "z_all[rows].to(x0.device)", "z_all[rows].to(None)"),
                              (_ZX, "x_all[rows].to(x0.device)", "x_all[rows].to(None)"),
                              (_T_RF, ".to(x0.device, x0.dtype)", ".to(None, x0.dtype)"),
                              (_T_RF, ".to(x0.device, x0.dtype)", ".to(x0.dtype)"))},
    ("objectives/reflow.py", "Reflow.__call__", _V_RF, _V_RF.replace("t, None)", "t, )")):
        "``velocity``'s condition defaults to None: the same call",
    # objectives/shortcut.py
    ("objectives/shortcut.py", "Shortcut.draws", _TWO_D, _TWO_D.replace("randint(0, levels, ", "randint(levels, ")):
        _RANDINT,
    **{("objectives/shortcut.py", "Shortcut.draws", line, new): _POW2
       for line, new in ((_TWO_D, _TWO_D.replace(".to(torch.float64)", ".to(None)")),
                         (_D_SC, _D_SC.replace("dtype=torch.float64", "dtype=None")),
                         (_D_SC, _D_SC.replace(", dtype=torch.float64", ", ")))},
    **{("objectives/shortcut.py", "Shortcut.consistency_target", _AS_T.format(v, v),
        _AS_T.format(v, v).replace(", device=x.device", new)): _CPU for v in "td" for new in (", device=None", ", ")},
    ("objectives/shortcut.py", "Shortcut.__call__", _EPS_MF, _EPS_MF.replace(".to(x0.device)", ".to(None)")): _CPU,
    **{("objectives/shortcut.py", "Shortcut.__call__", _TDC, _TDC.replace(old, new)): _CPU
       for old, new in (("t.to(x0.device, x0.dtype)", "t.to(None, x0.dtype)"),
                        ("t.to(x0.device, x0.dtype)", "t.to(x0.dtype)"),
                        ("d.to(x0.device, x0.dtype)", "d.to(None, x0.dtype)"),
                        ("d.to(x0.device, x0.dtype)", "d.to(x0.dtype)"),
                        ("consistent.to(x0.device)", "consistent.to(None)"))},
    **{("objectives/shortcut.py", "Shortcut.__call__", _TDC, _TDC.replace("d.to(x0.device, x0.dtype)", new)):
       "d is 0 or a power of two, exact in any float dtype: the step 2d or 1 / M stays exact in float64, "
       "t - step in float64 is the exact difference of two float32 numbers, and the model rounds it to float32 "
       "once, as float32 subtraction does; ``consistency_target`` casts d to the data's dtype itself"
       for new in ("d.to(x0.device, None)", "d.to(x0.device, )")},
    # objectives/consistency.py
    **{("objectives/consistency.py", fn, line, line.replace(old, new)): _CPU
       for fn, line, old in (("_column", _COLUMN, "t.to(x.device, x.dtype)"),
                             ("ConsistencyLoss.loss_at", _W_CM, "weight.to(x0.device, x0.dtype)"),
                             ("ConsistencyDistillation._velocity", _V_CM, "t.to(x.device, x.dtype)"))
       for new in (old.replace("x.device", "None").replace("x0.device", "None"),
                   old.replace("x.device, ", "").replace("x0.device, ", ""))},
    ("objectives/consistency.py", "ConsistencyLoss.draw", _Z_CM, _Z_CM.replace(".to(x0.device)", ".to(None)")): _CPU,
    ("objectives/consistency.py", "ConsistencyLoss.__call__", "self.before_draw(model)", "self.before_draw(None)"):
        "no ``before_draw`` reads its model (distillation's checks its teacher; the others do nothing): the hook "
        "takes it for objectives that would",
    **{("objectives/consistency.py", "ConsistencyTraining.state_dict", _STEP_CM, _STEP_CM.replace(old, new)):
       "``torch.tensor`` of a Python int is int64 by default: the same tensor"
       for old, new in (("dtype=torch.int64", "dtype=None"), (", dtype=torch.int64", ", "))},
    ("objectives/consistency.py", "ConsistencyDistillation.attach_teacher",
     "def attach_teacher(self, flow, round: int = 1) -> None:",
     "def attach_teacher(self, flow, round: int = 2) -> None:"):
        "distillation has one teacher for the whole run: ``round`` (the trainer's common call, for reflow's "
        "rounds) is not read",
    # models/flow_map.py
    ("models/flow_map.py", "_bracket", "width = sd.max() * torch.ones_like(lo)",
     "width = sd.max() / torch.ones_like(lo)"):
        "dividing by ones and multiplying by ones are the same (exactly)",
    ("models/flow_map.py", "_solve_piece", _PIECE, _PIECE.replace('method="RK45", ', "")):
        "scipy's ``solve_ivp`` defaults to method='RK45': the same call",
    ("models/flow_map.py", "monotone_map_1d", "x = x.to(torch.float64).reshape(-1)", "x = x.to(None).reshape(-1)"):
        "x enters only through ``_log_tails``, whose first operation subtracts the float64 means: any float or "
        "integer x is promoted there, exactly, to the same float64 numbers",
    ("models/flow_map.py", "ode_flow_map", _INNER_REV, "reverse=t_to <= t_from)"):
        "the two differ only at t_to = t_from, where no time lies strictly between them: an empty list either way",
    **{("models/flow_map.py", "ode_flow_map", _INNER, _INNER.replace(old, new)):
       "a knot at t_from or t_to adds a piece of length zero, which ``solve_ivp`` returns unchanged (it takes no "
       "step; one velocity evaluation, counted against ``max_nfe``): the same state"
       for old, new in (("min(t_from, t_to) < float(k)", "min(t_from, t_to) <= float(k)"),
                        ("float(k) < max(t_from, t_to)", "float(k) <= max(t_from, t_to)"))},
}

STATUS = {"killed": "killed", "caught by type check": "killed", "segfault": "killed", "survived": "survived",
          "timeout": "timed out", "no tests": "no tests"}  # mutmut's word -> the table's column
COLUMNS = ("killed", "survived", "timed out", "no tests", "other")


@dataclass
class Mutant:
    name: str
    status: str
    diff: str = ""
    equivalent: str = ""  # the argument, where EQUIVALENT lists it

    def key(self, module: str) -> tuple[str, str, str, str]:
        """(module, function, original line, mutated line) of this mutant's diff."""
        function = re.sub(r"__mutmut_\d+$", "", self.name.rsplit(".", 1)[-1])  # x_f, or xǁClassǁmethod
        function = function.removeprefix("x_").removeprefix("xǁ").replace("ǁ", ".")
        minus = [ln[1:].strip() for ln in self.diff.splitlines() if ln.startswith("-") and not ln.startswith("---")]
        plus = [ln[1:].strip() for ln in self.diff.splitlines() if ln.startswith("+") and not ln.startswith("+++")]
        return module, function, " / ".join(minus), " / ".join(plus)


@dataclass
class Result:
    module: str
    tests: list[str]
    mutants: list[Mutant] = field(default_factory=list)
    seconds: float = 0.0
    load: str = ""  # load average (1, 5, 15 min) before and after this module's run
    source: str = ""  # what was mutated: the committed tree at a commit, or the working tree

    def count(self, column: str) -> int:
        return sum(STATUS.get(m.status, "other") == column for m in self.mutants)

    @property
    def equivalent(self) -> int:
        return sum(bool(m.equivalent) for m in self.mutants)

    @property
    def score(self) -> float:
        """Killed, in percent of the mutants not argued equivalent."""
        return 100.0 * self.count("killed") / max(1, len(self.mutants) - self.equivalent)

    def to_dict(self) -> dict:
        return {"module": self.module, "tests": self.tests, "seconds": self.seconds, "load": self.load,
                "source": self.source, "mutants": [{"name": m.name, "status": m.status, "diff": m.diff}
                                                   for m in self.mutants]}

    @classmethod
    def from_dict(cls, d: dict) -> "Result":
        r = cls(d["module"], d["tests"], [Mutant(m["name"], m["status"], m["diff"]) for m in d["mutants"]],
                d["seconds"], d["load"], d["source"])
        r.judge()
        return r

    def judge(self) -> None:
        """Mark the mutants that ``EQUIVALENT`` argues equivalent (as it stands now)."""
        for m in self.mutants:
            m.equivalent = EQUIVALENT.get(m.key(self.module), "") if m.diff else ""


def snapshot(dest: Path, source: str, overlay: list[str]) -> None:
    """The checkout at ``dest``: the committed tree or the working tree, then the overlay files."""
    if source == "head":
        tar = subprocess.run(["git", "archive", "HEAD"], cwd=ROOT, check=True, capture_output=True).stdout
        with tarfile.open(fileobj=BytesIO(tar)) as archive:
            archive.extractall(dest, filter="data")
    else:
        listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                                capture_output=True).stdout.decode().split("\0")
        for rel in filter(None, listed):
            if (ROOT / rel).is_file():
                (dest / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / rel, dest / rel)
    for pattern in overlay:
        for path in glob.glob(str(ROOT / pattern)):
            rel = Path(path).relative_to(ROOT)
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, dest / rel)


def undecorate(source: str) -> str:
    """``@d def f(...)`` -> ``def f(...)`` then ``f = d(f)``: the same binding, which mutmut mutates
    (it skips decorated functions). ``staticmethod`` / ``classmethod`` alone stay as they are."""
    lines = source.splitlines(keepends=True)
    nodes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
             and n.decorator_list and not (len(n.decorator_list) == 1 and isinstance(n.decorator_list[0], ast.Name)
                                           and n.decorator_list[0].id in ("staticmethod", "classmethod"))]
    for node in sorted(nodes, key=lambda n: n.lineno, reverse=True):  # bottom up: line numbers stay valid
        indent = " " * node.col_offset
        wrapped = node.name
        for dec in reversed(node.decorator_list):
            wrapped = f"({ast.get_source_segment(source, dec)})({wrapped})"
        lines.insert(node.end_lineno, f"{indent}{node.name} = {wrapped}\n")
        del lines[node.decorator_list[0].lineno - 1:node.lineno - 1]
    return "".join(lines)


def configure(tree: Path, module: str, tests: list[str]) -> None:
    """The copy's pyproject.toml gets a [tool.mutmut] section for ``module`` and its ``tests``."""
    quoted = ", ".join(f'"tests/{t}"' for t in tests)
    extra = [p for p in ("docs", "configs", "README.md", "benchmarks") if (tree / p).exists()]
    text = (tree / "pyproject.toml").read_text()
    text = text.split("\n[tool.mutmut]")[0]
    text += (f'\n[tool.mutmut]\nonly_mutate = ["{PACKAGE}/{module}"]\n'
             f'pytest_add_cli_args = ["-p", "no:cacheprovider", "-q"]\n'
             f"pytest_add_cli_args_test_selection = [{quoted}]\n"
             f"use_git_change_detection = false\n"
             f"also_copy = [{', '.join(repr(p).replace(chr(39), chr(34)) for p in extra)}]\n")
    (tree / "pyproject.toml").write_text(text)


def mutmut(tree: Path, *args: str, timeout: float | None = None) -> subprocess.CompletedProcess:
    """One mutmut command in ``tree``, lowest priority, one thread; the mutated copy first on the path,
    so that neither mutmut nor a test's subprocess imports the checkout's own ``src`` (the editable
    install's path); the folder must exist before mutmut starts, or Python caches its absence."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
           "PYTHONPATH": str(tree / "mutants" / "src")}
    exe = Path(sys.executable).with_name("mutmut")
    return subprocess.run(["nice", "-n", "19", str(exe), *args], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=timeout)


def run_module(base: Path, module: str, timeout: float, keep: bool = False) -> Result:
    """mutmut on ``module`` in a fresh copy of ``base``, with the test files that exist of its mapping;
    with ``keep`` the copy stays (``cd COPY/mutants; MUTANT_UNDER_TEST=NAME pytest ...`` runs one mutant)."""
    tree = base.with_name(f"{base.name}-{module.replace('/', '_')}")
    shutil.copytree(base, tree)
    tests = [t for t in MODULES[module] if (tree / "tests" / t.split("::")[0]).is_file()]  # file or FILE::CLASS
    path = tree / PACKAGE / module
    path.write_text(undecorate(path.read_text()))
    configure(tree, module, tests)
    (tree / "mutants" / "src").mkdir(parents=True)  # on PYTHONPATH from the start (see ``mutmut``)
    result, start, before = Result(module, tests), time.perf_counter(), load()
    try:
        done = mutmut(tree, "run", "--max-children", "1", timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{module}: mutmut ran past {timeout:.0f} s; the mutants checked so far are counted", flush=True)
    else:
        text = done.stdout + done.stderr
        if "failed to collect stats" in text or done.returncode != 0:
            tail = "\n  ".join(text.strip().splitlines()[-15:])[-3000:]
            print(f"{module}: mutmut failed (exit {done.returncode}):\n  {tail}", flush=True)
    result.seconds, result.load = time.perf_counter() - start, f"{before} -> {load()}"
    listed = mutmut(tree, "results", "--all", "true").stdout
    for line in listed.splitlines():
        name, _, status = line.strip().rpartition(": ")
        if name.startswith("ddpmlab."):
            result.mutants.append(Mutant(name, status))
    for m in result.mutants:
        if STATUS.get(m.status) in ("survived", "timed out", "no tests"):
            shown = mutmut(tree, "show", m.name).stdout
            m.diff = shown.split("\n", 1)[1] if "\n" in shown else shown
    result.judge()
    if not keep:
        shutil.rmtree(tree, ignore_errors=True)
    return result


def table(results: list[Result]) -> str:
    head = "| module | mutants | " + " | ".join(COLUMNS) + " | equivalent | score % | minutes |"
    rows = [head, "|" + " --- |" * (len(COLUMNS) + 5)]
    for r in results:
        counts = " | ".join(str(r.count(c)) for c in COLUMNS)
        rows.append(f"| {r.module} | {len(r.mutants)} | {counts} | {r.equivalent} | {r.score:.1f} | "
                    f"{r.seconds / 60:.1f} |")
    return "\n".join(rows)


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def write_reports(out: Path, results: list[Result]) -> None:
    """mutation.json (every mutant's status and diff), mutation.md (the table, with each module's load
    average and source, and the equivalent mutants with their argument) and mutation_survivors.md."""
    from ddpmlab.core.fileio import atomic_write_bytes, atomic_write_json

    atomic_write_json(out / "mutation.json", {"modules": [r.to_dict() for r in results]})
    equivalent = [(r.module, m) for r in results for m in r.mutants if m.equivalent]
    md = ["# Mutation testing of the mathematical core", "",
          "Written by `benchmarks/mutation.py` (mutmut, one worker, `nice -n 19`, `OMP_NUM_THREADS=1`). "
          f"Score = killed / (mutants - equivalent); issue 27 asks for at least {TARGET:.0f}% per module.", "",
          table(results), "", "## Runs", "",
          "| module | source | load average (1, 5, 15 min) before -> after | test files |", "| --- | --- | --- | --- |"]
    md += [f"| {r.module} | {r.source} | {r.load} | " + ", ".join(f"`{t}`" for t in r.tests) + " |" for r in results]
    open_ = [(r.module, m) for r in results for m in r.mutants if STATUS.get(m.status) != "killed" and not m.equivalent]
    md += ["", "## Not killed and not argued equivalent", ""]
    md += [f"- `{mod}` `{m.name}` ({m.status}): `{k[2]}` -> `{k[3]}`" for mod, m in open_
           for k in [m.key(mod)]] or ["none"]
    md += ["", "## Surviving mutants argued equivalent", ""]
    md += [f"- `{mod}` `{m.name}`: {m.equivalent}\n\n```diff\n{m.diff.strip()}\n```" for mod, m in equivalent] or ["none"]
    atomic_write_bytes(out / "mutation.md", ("\n".join(md) + "\n").encode())
    sv = ["# Mutants not killed", "", "Written by `benchmarks/mutation.py`: every mutant not killed (survived, "
          "timed out, no tests), with its diff; those argued equivalent are marked.", ""]
    for r in results:
        rest = [m for m in r.mutants if STATUS.get(m.status) != "killed"]
        sv += [f"## {r.module} ({len(rest)}, {r.equivalent} equivalent)", ""]
        for m in rest:
            tag = f" (equivalent: {m.equivalent})" if m.equivalent else ""
            sv += [f"### {m.name}: {m.status}{tag}", "", "```diff", m.diff.strip(), "```", ""]
    atomic_write_bytes(out / "mutation_survivors.md", ("\n".join(sv) + "\n").encode())


def recorded(out: Path) -> dict[str, Result]:
    """The results of earlier runs kept in ``out``/mutation.json, by module."""
    import json

    path = out / "mutation.json"
    if not path.is_file():
        return {}
    return {d["module"]: Result.from_dict(d) for d in json.loads(path.read_text())["modules"]}


def source_label(source: str) -> str:
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return f"{'committed tree' if source == 'head' else 'working tree'} at {head.stdout.strip() or '?'}"


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--modules", nargs="+", choices=list(MODULES), default=list(MODULES))
    p.add_argument("--source", choices=("head", "worktree"), default="head")
    p.add_argument("--overlay", nargs="*", default=[], help="globs copied from the working tree onto the copy")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per module")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    p.add_argument("--keep", type=Path, help="work in this new folder and keep the mutated copies")
    p.add_argument("--rescore", action="store_true",
                   help="run nothing: judge the recorded mutants against EQUIVALENT again and rewrite the reports")
    args = p.parse_args(argv)
    done = recorded(args.out)  # modules not run now keep their recorded results
    if not args.rescore:
        print(f"load average before: {load()}", flush=True)
        with tempfile.TemporaryDirectory(prefix="ddpmlab-mutation-") as tmp:
            base = (args.keep or Path(tmp)) / "tree"
            base.mkdir(parents=True)
            snapshot(base, args.source, args.overlay)
            label = source_label(args.source) + (" + overlay" if args.overlay else "")
            for module in args.modules:
                done[module] = run_module(base, module, args.timeout, keep=args.keep is not None)
                done[module].source = label
                print(table([done[module]]).splitlines()[-1], flush=True)
                write_reports(args.out, [done[m] for m in MODULES if m in done])  # a stopped run keeps these
    results = [done[m] for m in MODULES if m in done]
    print(table(results))
    print(f"load average now (1, 5, 15 min): {load()}")
    write_reports(args.out, results)
    print(f"wrote mutation.json, mutation.md and mutation_survivors.md in {args.out}")


if __name__ == "__main__":
    main()

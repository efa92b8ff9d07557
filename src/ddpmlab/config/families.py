"""The process family's rules for a run config (``model.family``: "ddpm" or "flow"), one place."""
from __future__ import annotations

from ddpmlab.core.utils import DDPMLabError
from ddpmlab.sampling.options import MAX_ODE_STEPS


def validate_family(cfg) -> None:
    """A flow run takes only what a flow has, a DDPM run no flow-only option; each refusal says what to use."""
    m, t, s = cfg.model, cfg.train, cfg.sample
    if m.family == "flow":
        if m.arch == "seed":
            raise DDPMLabError("model.family = 'flow' needs model.arch mlp, unet or your network (the seed's "
                               "networks are a DDPM reverse chain)")
        if t.objective not in ("flow_matching", "custom"):
            raise DDPMLabError(f"train.objective = {t.objective!r} trains a DDPM; a flow (model.family = 'flow') "
                               "trains with train.objective = 'flow_matching'")
        default = type(m)()
        if (m.mean_type, m.var_type) != (default.mean_type, default.var_type):
            raise DDPMLabError("a flow predicts its velocity only: leave model.mean_type and model.var_type at "
                               f"their defaults ({default.mean_type}, {default.var_type})")
        if s.sampler != "ode":
            raise DDPMLabError(f"sample.sampler = {s.sampler!r} needs a DDPM's reverse chain; a flow samples with "
                               "sample.sampler = 'ode' (ode_solver euler, heun, midpoint or rk45)")
        if s.ode_solver == "dpm_solver":
            raise DDPMLabError("sample.ode_solver = 'dpm_solver' is DDPM only; a flow uses euler, heun, midpoint or rk45")
        if s.steps < 1:
            raise DDPMLabError("a flow's ODE needs sample.steps >= 1 (there is no schedule to take all steps of)")
        if s.steps > MAX_ODE_STEPS:
            raise DDPMLabError(f"sample.steps = {s.steps}: a flow's ODE takes at most {MAX_ODE_STEPS} steps")
        return
    if t.objective == "flow_matching":
        raise DDPMLabError("train.objective = 'flow_matching' trains a flow: set model.family = 'flow', or use "
                           "simple, vlb, hybrid or trajectory_bound for a DDPM")
    if t.time_sampling != "uniform":
        raise DDPMLabError("train.time_sampling is a flow option (model.family = 'flow'); a DDPM draws its steps "
                           "uniformly or by train.importance_sampling")
    if t.flow_target != "conditional" or t.reference_batch:
        raise DDPMLabError("train.flow_target and train.reference_batch are flow options (model.family = 'flow'); "
                           "a DDPM regresses its own target (model.mean_type)")
    if s.time_shift != 1.0:
        raise DDPMLabError("sample.time_shift is a flow option (model.family = 'flow'); a DDPM's ode sampler runs "
                           "on its schedule's evenly kept steps")

"""The flow family (flow matching, Lipman et al. 2023; rectified flow, Liu et al. 2023): a velocity field
on the linear path x_t = (1 - t) x_0 + t eps, t in [0, 1].

Its models satisfy ``VelocityModel`` (``ddpmlab.core.contract``); a run's network is wrapped in a
``FlowModel``; it samples by its ODE (Heun, 25 steps by default) on continuous time, and its exact
evaluation is the ODE likelihood and ODE samples beside the exact flow's (it has no discrete bound).
"""
from __future__ import annotations

from ddpmlab.core.contract import VelocityModel
from ddpmlab.core.process import VelocityProcess
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.conditional_oracle import LabelledFlowMixtureOracle
from ddpmlab.models.empirical_oracle import FlowEmpiricalOracle
from ddpmlab.models.family import FAMILIES, Family
from ddpmlab.models.flow_model import FlowModel
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.models.guidance import GuidedVelocity


def wrap(net, schedule, data_shape, options):
    """The network as a ``FlowModel`` (the schedule is not used: a flow's time is continuous)."""
    return FlowModel(net, data_shape, net_kwargs=getattr(options, "net_kwargs", None),
                     precondition=getattr(options, "precondition", False))


def check_config(cfg) -> None:
    """A flow run takes only what a flow has; each refusal says what to use."""
    m = cfg.model
    if m.arch == "seed":
        raise DDPMLabError("model.family = 'flow' needs model.arch mlp, unet or your network (the seed's "
                           "networks are a DDPM reverse chain)")
    default = type(m)()
    if (m.mean_type, m.var_type) != (default.mean_type, default.var_type):
        raise DDPMLabError("a flow predicts its velocity only: leave model.mean_type and model.var_type at "
                           f"their defaults ({default.mean_type}, {default.var_type})")


FLOW = FAMILIES.register("flow", Family(
    name="flow", contract=VelocityModel, base=VelocityProcess, wrap=wrap, time_axis="continuous",
    default_sampler="ode", default_solver="heun", default_steps=25,
    oracle=lambda model, dist: FlowMixtureOracle(dist, model.path, model.data_shape),
    labelled_oracle=lambda model, dist: LabelledFlowMixtureOracle(dist, model.path, model.data_shape),
    empirical_oracle=lambda model, data, chunk_size=None: FlowEmpiricalOracle(data, model.path, model.data_shape,
                                                                              chunk_size),
    guide=GuidedVelocity, check_config=check_config, exact_terms=("ode", "samples"),
    report_sections=("metrics", "pictures", "training"),
    prediction=lambda m: "velocity",
    description="a velocity field on the linear path (flow matching, Lipman et al. 2023)"))

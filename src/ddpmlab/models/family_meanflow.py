"""The MeanFlow family (Geng et al. 2025): a few-step flow-map model, the average velocity u(x, r, t) on
the linear path, sampled in one to a few network calls.

Its models satisfy ``FlowMapModel`` (``ddpmlab.core.contract``; base ``FlowMapProcess``, a velocity model
too); a run's network is wrapped in a ``MeanFlowModel``; it trains by the ``meanflow`` objective and
samples by ``flow_map`` (1 step by default; the ODE samplers on its instantaneous velocity work too); its
exact oracle is the exact flow map of the data (``MeanFlowMixtureOracle``), so its evaluation puts its
1-step samples beside the exact map's. It is one module and one registration (docs/api.md, "Your own
family").
"""
from __future__ import annotations

from ddpmlab.core.contract import FlowMapModel
from ddpmlab.core.process import FlowMapProcess
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.family import FAMILIES, Family, refuse_labels, unsupported
from ddpmlab.models.family_flow import check_config as flow_rules
from ddpmlab.models.meanflow import MeanFlowMixtureOracle, MeanFlowModel


def wrap(net, schedule, data_shape, options):
    """The network (with ``embed_time`` / ``forward_embedded``, as the mlp) as a ``MeanFlowModel``."""
    return MeanFlowModel(net, data_shape, net_kwargs=getattr(options, "net_kwargs", None))


def check_config(cfg) -> None:
    """A flow's rules (no seed networks, no DDPM mean or variance type), and no preconditioning or labels
    yet (a MeanFlow model is unconditional here)."""
    flow_rules(cfg)
    if cfg.model.precondition:
        raise DDPMLabError("model.family = 'meanflow' has no preconditioning yet: set model.precondition = false")
    refuse_labels(cfg, "meanflow")


MEANFLOW = FAMILIES.register("meanflow", Family(
    name="meanflow", contract=FlowMapModel, base=FlowMapProcess, wrap=wrap, time_axis="continuous",
    default_sampler="flow_map", default_solver="heun", default_steps=1,
    oracle=lambda model, dist: MeanFlowMixtureOracle(dist, model.path, model.data_shape),
    labelled_oracle=unsupported("meanflow", "class-conditional oracle"),
    empirical_oracle=unsupported("meanflow", "empirical optimum"), guide=unsupported("meanflow", "guidance"),
    check_config=check_config, exact_terms=("ode", "samples", "flow_map"),
    report_sections=("metrics", "pictures", "training"),
    prediction=lambda m: "average velocity u(x, r, t)",
    description="the average velocity of a flow, sampled in a few steps (MeanFlow, Geng et al. 2025)"))

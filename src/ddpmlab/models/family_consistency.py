"""The consistency family (Song et al. 2023; Song & Dhariwal 2023): a few-step model of a flow, the
consistency function f(x_t, t) -> x_0 on the linear path, sampled in one to a few network calls.

Its models satisfy ``FlowMapModel`` (``ddpmlab.core.contract``; base ``ConsistencyProcess``, a flow map whose
map to 0 is f); a run's network is wrapped in a ``ConsistencyModel``; it trains by ``consistency_training``
(from data) or ``consistency_distill`` (from a finished run, ``train.teacher``) and samples by
``consistency`` (multistep consistency sampling, 1 step by default); its exact oracle is the exact flow map
to 0 of the data (``ConsistencyMixtureOracle``), so its evaluation puts its samples beside the exact map's
at the same steps and scores its map per t. It is one module and one registration (docs/api.md, "Your own
family").
"""
from __future__ import annotations

from ddpmlab.core.contract import FlowMapModel
from ddpmlab.models.consistency import ConsistencyMixtureOracle, ConsistencyModel, ConsistencyProcess
from ddpmlab.models.family import FAMILIES, Family, refuse_labels, unsupported
from ddpmlab.models.family_flow import check_config as flow_rules


def wrap(net, schedule, data_shape, options):
    """The network as a ``ConsistencyModel`` (the schedule is not used: the time is continuous)."""
    return ConsistencyModel(net, data_shape, net_kwargs=getattr(options, "net_kwargs", None),
                            precondition=getattr(options, "precondition", False))


def check_config(cfg) -> None:
    """A flow's rules (no seed networks, no DDPM mean or variance type), and no labels yet (a consistency
    model is unconditional here)."""
    flow_rules(cfg)
    refuse_labels(cfg, "consistency")


CONSISTENCY = FAMILIES.register("consistency", Family(
    name="consistency", contract=FlowMapModel, base=ConsistencyProcess, wrap=wrap, time_axis="continuous",
    default_sampler="consistency", default_solver="heun", default_steps=1,
    oracle=lambda model, dist: ConsistencyMixtureOracle(dist, model.path, model.data_shape),
    labelled_oracle=unsupported("consistency", "class-conditional oracle"),
    empirical_oracle=unsupported("consistency", "empirical optimum"), guide=unsupported("consistency", "guidance"),
    check_config=check_config, exact_terms=("ode", "samples", "flow_map"),
    report_sections=("metrics", "pictures", "training"),
    prediction=lambda m: "the consistency function f(x_t, t) -> x_0",
    description="the consistency function of a flow, sampled in a few steps (Song et al. 2023)"))

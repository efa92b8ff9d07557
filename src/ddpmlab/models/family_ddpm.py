"""The DDPM family (Ho et al. 2020): the discrete-time Gaussian reverse chain of a noise schedule.

Its models satisfy ``ReverseModel`` (``ddpmlab.core.contract``); a run's network is wrapped in a
``DiffusionModel`` of the run's mean and variance types; it samples ancestrally by default, its grids are
the schedule's steps, and its exact evaluation has the bound term by term beside the exact oracle's.
"""
from __future__ import annotations

from ddpmlab.core.contract import ReverseModel
from ddpmlab.core.process import ReverseProcess
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.conditional_oracle import LabelledMixtureOracle
from ddpmlab.models.diffusion_model import DiffusionModel
from ddpmlab.models.empirical_oracle import EmpiricalOracle
from ddpmlab.models.family import FAMILIES, Family
from ddpmlab.models.guidance import GuidedReverse
from ddpmlab.models.oracle import MixtureOracle


def wrap(net, schedule, data_shape, options):
    """The network as a ``DiffusionModel`` of the ``[model]`` options' mean and variance types."""
    return DiffusionModel(net, schedule, options.mean_type, options.var_type, data_shape,
                          precondition=options.precondition, net_kwargs=getattr(options, "net_kwargs", None))


def check_config(cfg) -> None:
    """A DDPM run takes no flow-only option; each refusal says what to use."""
    t, s = cfg.train, cfg.sample
    if t.time_sampling != "uniform":
        raise DDPMLabError("train.time_sampling is a flow option (model.family = 'flow'); a DDPM draws its steps "
                           "uniformly or by train.importance_sampling")
    if t.flow_target != "conditional" or t.reference_batch:
        raise DDPMLabError("train.flow_target and train.reference_batch are flow options (model.family = 'flow'); "
                           "a DDPM regresses its own target (model.mean_type)")
    if s.time_shift != 1.0:
        raise DDPMLabError("sample.time_shift is a flow option (model.family = 'flow'); a DDPM's ode sampler runs "
                           "on its schedule's evenly kept steps")


DDPM = FAMILIES.register("ddpm", Family(
    name="ddpm", contract=ReverseModel, base=ReverseProcess, wrap=wrap, time_axis="steps",
    default_sampler="ancestral", default_solver="dpm_solver", default_steps=0,
    oracle=lambda model, dist: MixtureOracle(dist, model.schedule, model.data_shape),
    labelled_oracle=lambda model, dist: LabelledMixtureOracle(dist, model.schedule, model.data_shape),
    empirical_oracle=lambda model, data, chunk_size=None: EmpiricalOracle(data, model.schedule, model.data_shape,
                                                                          chunk_size),
    guide=GuidedReverse, check_config=check_config, exact_terms=("bound", "ode", "samples"),
    report_sections=("metrics", "per_step", "pictures", "training"),
    prediction=lambda m: f"{m.mean_type} / {m.var_type}",
    description="the discrete-time Gaussian reverse chain of a noise schedule (Ho et al. 2020)"))

"""ddpmlab: denoising diffusion probabilistic models (Ho et al. 2020) at small scale.

    import ddpmlab as dl
    model = dl.DiffusionModel(MyNet(), dl.make_schedule("linear", 250), mean_type="epsilon", data_shape=(2,))
    trainer = dl.Trainer(model, dl.objectives.Simple(), data=x, out="runs/mine", ema_decay=0.995)
    trainer.run(2000); trainer.save()
    samples = dl.sample(trainer.sampling_model, 1000, sampler="ode", steps=25)

Time-index convention (used by every module): paper steps are t = 0..T, with t = 0 the data.
Schedule arrays have length T + 1 and index t holds the paper's quantity at step t
(``betas[0] = 0``, ``alphas_cumprod[0] = 1``). Reverse steps run t = T, ..., 1; a network sees
its time as ``t / T`` in (0, 1]. See docs/api.md for the researcher's workflow.
"""

__version__ = "0.1.0"

import importlib

# Each public name and the module that defines it. They are imported on first use (PEP 562), so
# ``import ddpmlab`` and every ``ddpmlab --help`` stay fast; ``dir(dl)`` and ``from ddpmlab import *``
# see them all.
_EXPORTS = {
    "objectives": "ddpmlab.objectives",
    "Config": "ddpmlab.config.sections",
    "load_config": "ddpmlab.config.schema",
    "PMeanVariance": "ddpmlab.core.contract",
    "ReverseModel": "ddpmlab.core.contract",
    "ReverseProcess": "ddpmlab.core.process",
    "VelocityModel": "ddpmlab.core.contract",
    "VelocityProcess": "ddpmlab.core.process",
    "FlowMapModel": "ddpmlab.core.contract",
    "ProcessModel": "ddpmlab.core.process",
    "q_mean_variance": "ddpmlab.core.diffusion",
    "q_posterior_mean_variance": "ddpmlab.core.diffusion",
    "q_sample": "ddpmlab.core.diffusion",
    "GaussianMixture": "ddpmlab.core.distributions",
    "MEAN_TYPES": "ddpmlab.core.mean_types",
    "VAR_TYPES": "ddpmlab.core.var_types",
    "MeanType": "ddpmlab.core.mean_types",
    "AffineMeanType": "ddpmlab.core.mean_types",
    "VarType": "ddpmlab.core.var_types",
    "GaussianDiffusion": "ddpmlab.core.parameterisation",
    "SCHEDULES": "ddpmlab.core.schedule",
    "NoiseSchedule": "ddpmlab.core.schedule",
    "make_schedule": "ddpmlab.core.schedule",
    "DDPMLabError": "ddpmlab.core.utils",
    "NonFiniteError": "ddpmlab.core.utils",
    "TrainingData": "ddpmlab.data.base",
    "evaluate": "ddpmlab.evaluation.api",
    "log_prob": "ddpmlab.evaluation.logprob",
    "flow_map_error": "ddpmlab.evaluation.flow_map_error",
    "LabelledMixtureOracle": "ddpmlab.models.conditional_oracle",
    "LabelledFlowMixtureOracle": "ddpmlab.models.conditional_oracle",
    "FAMILIES": "ddpmlab.models.family",
    "Family": "ddpmlab.models.family",
    "family_of": "ddpmlab.models.family",
    "DiffusionModel": "ddpmlab.models.diffusion_model",
    "EmpiricalOracle": "ddpmlab.models.empirical_oracle",
    "FlowEmpiricalOracle": "ddpmlab.models.empirical_oracle",
    "FlowModel": "ddpmlab.models.flow_model",
    "MeanFlowModel": "ddpmlab.models.meanflow",
    "MeanFlowMixtureOracle": "ddpmlab.models.meanflow",
    "ConsistencyModel": "ddpmlab.models.consistency",
    "ConsistencyMixtureOracle": "ddpmlab.models.consistency",
    "FlowMixtureOracle": "ddpmlab.models.flow_oracle",
    "ExactFlowMap": "ddpmlab.models.flow_map",
    "exact_flow_map": "ddpmlab.models.flow_map",
    "Guided": "ddpmlab.models.guidance",
    "MixtureOracle": "ddpmlab.models.oracle",
    "ARCHITECTURES": "ddpmlab.models.registry",
    "OBJECTIVES": "ddpmlab.objectives.losses",
    "load_run": "ddpmlab.runs.format",
    "save_run": "ddpmlab.runs.format",
    "sample": "ddpmlab.sampling.api",
    "TIME_GRIDS": "ddpmlab.sampling.grids",
    "build_grid": "ddpmlab.sampling.grids",
    "ODE_SOLVERS": "ddpmlab.sampling.registry",
    "SAMPLERS": "ddpmlab.sampling.registry",
    "Callback": "ddpmlab.training.callbacks",
    "Trainer": "ddpmlab.training.trainer",
}


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'ddpmlab' has no attribute {name!r}")
    obj = importlib.import_module(module)
    if module != f"ddpmlab.{name}":
        obj = getattr(obj, name)
    globals()[name] = obj  # later lookups skip this function
    return obj


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))


__all__ = sorted(_EXPORTS)

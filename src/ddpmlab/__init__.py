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

from ddpmlab import objectives
from ddpmlab.config import Config, load_config
from ddpmlab.core.contract import PMeanVariance, ReverseModel, ReverseProcess
from ddpmlab.core.diffusion import q_mean_variance, q_posterior_mean_variance, q_sample
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.parameterisation import MEAN_TYPES, VAR_TYPES, GaussianDiffusion
from ddpmlab.core.schedule import SCHEDULES, NoiseSchedule, make_schedule
from ddpmlab.core.utils import DDPMLabError, NonFiniteError
from ddpmlab.data.base import TrainingData
from ddpmlab.evaluation.api import evaluate
from ddpmlab.evaluation.conditional_oracle import LabelledMixtureOracle
from ddpmlab.evaluation.flow_oracle import FlowMixtureOracle
from ddpmlab.evaluation.oracle import MixtureOracle
from ddpmlab.models.diffusion_model import DiffusionModel
from ddpmlab.models.flow_model import FlowModel
from ddpmlab.models.guidance import Guided
from ddpmlab.models.registry import ARCHITECTURES
from ddpmlab.objectives import OBJECTIVES
from ddpmlab.runs.format import load_run, save_run
from ddpmlab.sampling import ODE_SOLVERS, SAMPLERS, sample
from ddpmlab.training.callbacks import Callback
from ddpmlab.training.trainer import Trainer

__all__ = [
    "ARCHITECTURES", "Callback", "Config", "DDPMLabError", "DiffusionModel", "FlowMixtureOracle", "FlowModel",
    "GaussianDiffusion", "GaussianMixture", "Guided", "LabelledMixtureOracle", "MEAN_TYPES", "MixtureOracle",
    "NonFiniteError", "NoiseSchedule", "OBJECTIVES", "ODE_SOLVERS", "PMeanVariance",
    "ReverseModel", "ReverseProcess", "SAMPLERS", "SCHEDULES", "Trainer", "TrainingData", "VAR_TYPES", "evaluate",
    "load_config", "load_run", "make_schedule", "objectives", "q_mean_variance", "q_posterior_mean_variance",
    "q_sample", "sample", "save_run",
]

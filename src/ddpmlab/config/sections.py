"""The run configuration's sections: one dataclass per TOML table, every field with its default and a comment.

Loaded and overridden by ``ddpmlab.config.schema``, checked by ``ddpmlab.config.validation``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class DataConfig:
    name: str = "seed_mixture"  # a named dataset (see `ddpmlab.data`), "file" with `path`, "mixture" with
    # [data.mixture], or "tensor" (your own tensor, given to ddpmlab.Trainer)
    path: str = ""  # .csv / .npy / .npz file when name = "file"
    n_train: int = 1000  # points drawn once from a named distribution; 0 = fresh draws every batch
    standardize: bool = True  # files only: train on standardised columns, map samples back
    labels: bool = False  # keep class labels: a mixture's component index (seed_mixture, eight_gaussians, ...)
    label_column: str = ""  # files only: the column (name or 0-based index) holding class labels
    max_classes: int = 100  # refuse labels with more distinct classes than this
    mixture: dict = field(default_factory=dict)  # [data.mixture] when name = "mixture": your Gaussian mixture,
    # weights = [K positive, summing to 1], means = [K x d], covariances = [K x d x d symmetric positive definite]


@dataclass
class ScheduleConfig:
    kind: str = "cosine"  # constant | linear | cosine
    steps: int = 250  # diffusion steps T
    beta: float = 0.02  # constant schedule's beta
    beta_start: float = 1e-4  # linear schedule's first beta
    beta_end: float = 0.02  # linear schedule's last beta


@dataclass
class ModelConfig:
    family: str = "ddpm"  # ddpm (the reverse chain of the noise schedule) | flow (a velocity field on the
    # linear path x_t = (1 - t) x_0 + t eps, trained by flow_matching, sampled by the ode sampler)
    arch: str = "mlp"  # seed (the tutorial's two small networks) | mlp | unet (images) | your own network
    # class as "package.module:Class", built with `net_kwargs` (loading such a run needs --trust-code)
    mean_type: str = "epsilon"  # registered (dl.MEAN_TYPES): previous_x | x0 | epsilon | v
    var_type: str = "fixed_small"  # registered (dl.VAR_TYPES): fixed_small | fixed_large | learned | learned_range
    hidden: int = 4  # seed networks' hidden width
    width: int = 128  # mlp width / unet base channels
    depth: int = 3  # mlp residual blocks
    time_dim: int = 32  # sinusoidal time-embedding size
    precondition: bool = False  # network sees unit-variance input, predicts the residual around the
    # data's Gaussian fit (Karras et al. 2022); epsilon | x0 | v mean types
    net_kwargs: dict = field(default_factory=dict)  # keyword arguments of a "package.module:Class" network
    num_classes: int = 0  # class-conditional mlp with this many classes (+ a null class); 0 = unconditional
    # (set from the data's labels when 0 and data.labels / data.label_column are given)


@dataclass
class TrainConfig:
    objective: str = "simple"  # registered (dl.OBJECTIVES): trajectory_bound (seed) | vlb | simple | hybrid |
    # flow_matching (the flow family's); or your own as "package.module:name" (needs --trust-code)
    hybrid_weight: float = 0.001  # weight of the bound in the hybrid loss (Nichol & Dhariwal)
    importance_sampling: bool = False  # sample t by the bound terms' second moment (vlb / hybrid)
    time_sampling: str = "uniform"  # flow_matching's density of t: uniform | logit_normal
    flow_target: str = "conditional"  # flow_matching's target: conditional | stable (Xu et al. 2023)
    reference_batch: int = 0  # the stable target's reference examples (the batch's first N); 0 = all
    objective_options: dict = field(default_factory=dict)  # [train.objective_options]: the objective's
    # other keyword arguments (flow_matching: loc, scale of logit_normal; your registered objective's own)
    iters: int = 2000  # optimisation steps; "auto": from the data (ddpmlab.config.budget)
    batch_size: int = 512  # examples per step; 0 = the whole training set
    lr: float = 2e-3  # AdamW learning rate
    weight_decay: float = 0.0  # AdamW weight decay
    warmup: int = 0  # linear learning-rate warm-up steps
    lr_decay: str = "none"  # none | cosine (to 0 at the last step)
    ema_decay: float = 0.0  # EMA of weights for sampling; 0 = off
    grad_clip: float = 0.0  # gradient-norm clipping; 0 = off
    seed: int = 0  # every random draw (data, initialisation, noise) comes from this seed
    checkpoint_every: int = 0  # write a checkpoint every N steps; 0 = only at the end
    keep_checkpoints: int = 3  # how many checkpoints to keep
    device: str = "cpu"  # cpu | cuda | auto
    threads: int = 0  # torch intra-op threads; 0 = chosen from the work's size and the usable cores
    label_dropout: float = 0.0  # classifier-free training: probability of replacing a label by the null class
    teacher: str = ""  # the directory of a finished run (any DDPM or flow run on the same data) that an
    # objective distilling a teacher needs (ddpmlab.training.teacher); "" = none


@dataclass
class SampleConfig:
    sampler: str = "ancestral"  # ancestral | ddim | ode; or your own as "package.module:function" (--trust-code)
    ode_solver: str = "dpm_solver"  # ode sampler: dpm_solver (DPM-Solver++ 2M, DDPM only) | euler | heun |
    # midpoint | rk45 (adaptive)
    time_shift: float = 1.0  # flow ode grid t = k u / (1 + (k - 1) u) for shift k, u uniform; 1 = uniform;
    # k in [0.01, 100]
    steps: int = 0  # sampling steps; 0 = all T
    grid: str = "uniform"  # the steps' time grid: uniform | shifted (flow, by time_shift) | karras (EDM,
    # rho = 7) | log_snr (evenly in log signal-to-noise ratio)
    eta: float = 0.0  # DDIM's eta in [0, 1] (0 deterministic, 1 = ancestral variance)
    n: int = 10_000  # samples drawn at the end of training


@dataclass
class PluginsConfig:
    modules: list = field(default_factory=list)  # your modules ("package.module", also found in the working
    # directory), imported before the rest is validated: the objectives, samplers, architectures and mean types
    # they register become names of this config and the CLI. Importing runs their code: --trust-code
    # (ddpmlab.config.plugins); `--import MODULE` adds one


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    plugins: PluginsConfig = field(default_factory=PluginsConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

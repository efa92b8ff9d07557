"""Everything the report shows about one finished run, gathered once: config, training curve, evaluation
(``evaluation.json`` when the run has one, else computed here), samples beside data, the per-step
diagnosis on mixture data, and the model's own reverse chain for the slider over t.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ddpmlab.config.checks import sampling_bytes
from ddpmlab.core.resources import check_memory
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.evaluation.finished import (draw_run_samples, evaluate_finished_run, reference_data, run_data,
                                         sampler_settings, to_model_space)
from ddpmlab.evaluation.per_step import eps_error_by_step, evaluate_bound_by_step
from ddpmlab.evaluation.summary import metric_rows
from ddpmlab.models.family import family_of
from ddpmlab.report.plots import MODEL_COLOR
from ddpmlab.report.run_files import EVALUATION_FILE, read_evaluation, read_training_curve
from ddpmlab.runs.format import load_run
from ddpmlab.sampling.api import sample
from ddpmlab.sampling.grids import build_grid


@dataclass
class ReportSettings:
    """How much the report computes where a run has no evaluation.json, and how much it draws."""
    seed: int = 0  # every random draw of the report
    n_bound: int = 2000  # data points for each bound (mixtures), when evaluation.json is missing
    n_ode: int = 64  # data points for the ODE likelihood then (0 skips it)
    n_samples: int = 2000  # samples for the sample metrics then
    n_eps: int = 1000  # data points for the noise-prediction error at each step (mixtures)
    n_chain: int = 1000  # samples of the model's reverse chain shown by the slider (images: 16)
    n_shown: int = 2000  # samples and data points drawn beside each other (images: 64)
    frames: int = 21  # steps t the slider visits (0 and T included)


@dataclass
class RunView:
    path: Path
    run: object  # ddpmlab.runs.format.Run
    kind: str  # mixture | distribution | digits | heldout
    dist: object  # the true distribution, or None (a file)
    evaluation: dict
    evaluation_source: str
    rows: list  # evaluation.summary.metric_rows
    metrics: list | None  # metrics.csv rows, None when the run has none
    per_step: dict | None = None  # mixtures: bound terms and noise-prediction errors for each t
    notes: list = field(default_factory=list)
    color: str = MODEL_COLOR  # the run's colour in every figure: its group's (``compare.group_runs``)
    # the pictures (``add_pictures``; only for the runs whose pictures are shown)
    samples: np.ndarray | None = None  # model samples in data units, (n, *dims)
    data: np.ndarray | None = None  # training data in data units, (m, *dims)
    chain_steps: list | None = None  # the steps t the slider visits
    chain: np.ndarray | None = None  # the model's reverse chain at those steps, model space: (frames, n, *dims)
    reference: np.ndarray | None = None  # forward-noised training data at those steps where q(x_t) is not
    # known exactly, model space
    picture_sampling: str = ""  # how the pictures' samples were drawn (``drawn_by``)

    @property
    def name(self) -> str:
        return self.path.name or str(self.path)

    @property
    def config(self) -> dict:
        return self.run.info["config"]

    @property
    def data_shape(self) -> tuple:
        return tuple(self.run.info["data"]["data_shape"])

    @property
    def sampling(self) -> str:
        """How the samples of the sample metrics were drawn (the evaluation's settings), in words."""
        return drawn_by(self.evaluation.get("settings") if isinstance(self.evaluation, dict) else None)

    @property
    def standardised(self) -> bool:
        """Whether the model's space is the data's standardised column by column (a user's file)."""
        return "scale" in self.run.info["data"]

    @property
    def model_units(self) -> str:
        """The units of the model's space, for an axis title."""
        return "model units: standardised columns" if self.standardised else "model units"

    @property
    def family(self):
        """The run's model family (``ddpmlab.models.family``): which sections the report shows."""
        return family_of(self.run.model)


def drawn_by(settings) -> str:
    """The sampler, its steps and eta (None: a sampler that takes none) of ``settings`` (an evaluation's, or
    ``evaluation.finished.sampler_settings``), in words; "sampler not recorded" for an older evaluation."""
    if not isinstance(settings, dict) or "sampler" not in settings:
        return "sampler not recorded"
    eta = settings.get("eta")
    text = lambda v: str(v)[:40]  # noqa: E731  (read from a file: any length)
    return f"{text(settings['sampler'])}, {text(settings.get('sampling_steps'))} steps, " \
           f"eta {'-' if eta is None else text(eta)}"


def chain_steps(T: int, frames: int) -> list[int]:
    """``frames`` steps evenly spread over 0..T, both ends included."""
    return sorted({int(round(v)) for v in np.linspace(0, T, max(2, min(frames, T + 1)))})


def chain_times(model, frames: int) -> tuple[list, list]:
    """(positions in a trajectory of the family's default sampler, the times there): ``frames`` of the
    grid's times spread evenly from the data (t = 0) to the prior, both ends included."""
    family = family_of(model)
    times = build_grid(model, "uniform", family.default_steps).flip(0).tolist()  # from the data up
    positions = chain_steps(len(times) - 1, frames)
    return positions, [times[i] for i in positions]


def _per_step(run, dist, ev: dict, s: ReportSettings, g: torch.Generator, notes: list) -> dict:
    """L_0..L_T of model and oracle (from the evaluation when it has them) and the eps errors."""
    model = run.model
    oracle = family_of(model).oracle(model, dist)
    mb, ob = ev["model"]["bound"], ev["oracle"]["bound"]
    if "terms_nats" not in mb or len(mb["terms_nats"]) != model.schedule.T + 1:
        notes.append(f"{EVALUATION_FILE} has no per-step terms (written by an older ddpmlab): the per-step bound "
                     f"is computed here on {s.n_bound} points, its totals beside the file's")
        mb = evaluate_bound_by_step(model, dist.sample, s.n_bound, g)
        ob = evaluate_bound_by_step(oracle, dist.sample, s.n_bound, g)
    x0 = dist.sample(s.n_eps, g, dtype=torch.float64).reshape((s.n_eps,) + tuple(model.data_shape))
    eps = eps_error_by_step(model, oracle, x0, g)
    return {"t": list(range(model.schedule.T + 1)),
            "model": {k: mb[k] for k in ("terms_nats", "terms_nats_se", "total_nats", "total_nats_se")},
            "oracle": {k: ob[k] for k in ("terms_nats", "terms_nats_se", "total_nats", "total_nats_se")},
            "eps": eps}


def _chain(run, kind: str, s: ReportSettings, g: torch.Generator):
    """The model's chain by its family's default sampler (a DDPM's ancestral chain over all T steps, a
    flow's ODE) at ``chain_times`` (model space), and the forward process applied to training data at the
    same times where q(x_t) is not known exactly."""
    model = run.model
    family = family_of(model)
    images = len(run.info["data"]["data_shape"]) == 3
    n = 16 if images else s.n_chain
    positions, times = chain_times(model, s.frames)
    traj = sample(model, n, family.default_sampler, family.default_steps, generator=g, keep_trajectory=True)
    chain = traj[positions].float().numpy()
    reference = None
    if kind != "mixture":
        x0 = to_model_space(run, reference_data(run, n, g)).double()
        ref = [model.q_sample(x0, t, torch.randn(x0.shape, generator=g, dtype=torch.float64)) if t > 0 else x0
               for t in times]
        reference = torch.stack(ref).float().numpy()
    return times, chain, reference


def _check_memory(run, s: ReportSettings) -> None:
    """Refuse, in one line naming the option, draws of the report's evaluation that memory cannot hold."""
    shape = run.info["data"]["data_shape"]
    for option, n, steps in (("--n-bound", s.n_bound, 2), ("--n-ode", s.n_ode, 2), ("--samples", s.n_samples, 0)):
        check_memory(sampling_bytes(run.cfg, n, shape, steps), f"{option} {n}", "the report's evaluation draws")


def collect_run(path, s: ReportSettings, run=None, trust_code: bool = False) -> RunView:
    """Gather what the report shows of the run in ``path`` (``run``: the run already loaded from it;
    ``trust_code``: import the run's own network class when it names one)."""
    path = Path(path)
    run = load_run(path, trust_code=trust_code) if run is None else run
    try:
        kind, dist = run_data(run)
    except DDPMLabError as exc:
        raise DDPMLabError(f"{path}: {exc}") from None
    g = torch.Generator().manual_seed(s.seed)
    notes: list = []
    ev = read_evaluation(path, kind, family_of(run.model).name)
    if ev is not None:
        source = f"{path / EVALUATION_FILE}"
    else:
        n = None if kind == "digits" else s.n_samples  # the Frechet floor's size: as many as training images
        _check_memory(run, s)
        ev = evaluate_finished_run(run, g, n_bound=s.n_bound, n_ode=s.n_ode, n_samples=n)
        source = (f"computed by the report (no {EVALUATION_FILE}; n_bound={s.n_bound}, n_ode={s.n_ode}, "
                  f"samples={ev['settings']['n_samples']}); `ddpmlab evaluate {path}` writes the full evaluation")
    per_step = _per_step(run, dist, ev, s, g, notes) if kind == "mixture" and "per_step" in \
        family_of(run.model).report_sections else None
    return RunView(path=path, run=run, kind=kind, dist=dist, evaluation=ev, evaluation_source=source,
                   rows=metric_rows(ev), metrics=read_training_curve(path), per_step=per_step, notes=notes)


def add_pictures(view: RunView, s: ReportSettings) -> None:
    """Draw what the pictures of ``view`` show: samples beside training data, and the model's reverse
    chain (with q(x_t)'s stand-in where it is not exact) for the slider."""
    run = view.run
    g = torch.Generator().manual_seed(s.seed + 1)
    n_shown = 64 if len(view.data_shape) == 3 else s.n_shown
    view.samples = run.to_data_units(draw_run_samples(run, n_shown, g)).float().numpy()
    view.picture_sampling = drawn_by(sampler_settings(run))
    view.data = reference_data(run, n_shown, g).float().numpy()
    view.chain_steps, view.chain, view.reference = _chain(run, view.kind, s, g)


def data_identity(run) -> str:
    """What must agree between runs compared in one report: the dataset (a file by its rows' hash where the
    run recorded it, else its path), shape and mixture."""
    d = run.info["data"]
    file = d.get("heldout", {}).get("file_sha256") or run.info["config"]["data"].get("path", "")
    return json.dumps({"name": d.get("name") if not file else "file", "file": file, "shape": d.get("data_shape"),
                       "mixture": d.get("mixture")}, sort_keys=True)

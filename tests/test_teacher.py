"""The teacher of the few-step objectives (``ddpmlab.training.teacher``): any family's velocity on the
linear path, and the one-line refusals of ``train.teacher``.

The oracle test: a DDPM's exact model (``MixtureOracle``, a score on the VP path) and a flow's
(``FlowMixtureOracle``, a velocity on the linear path) of the same mixture are the same probability flow,
so once the DDPM's score is carried onto the linear path the two velocities agree to float64 precision."""
import pytest
import torch

from ddpmlab.config.schema import load_config
from ddpmlab.config.sections import Config
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.core.schedule import make_schedule
from ddpmlab.core.utils import DDPMLabError
from ddpmlab.models.flow_map import exact_flow_map
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.training.teacher import TeacherFlow, load_teacher, teacher_velocity
from conftest import gen, mixture_2d

TIMES = (0.02, 0.2, 0.5, 0.8, 0.95)


def _mixture_1d():
    return GaussianMixture([0.3, 0.7], [[-1.5], [1.0]], [[[0.2]], [[0.4]]])


@pytest.mark.parametrize("dist", [_mixture_1d(), mixture_2d()], ids=["1d", "2d"])
@pytest.mark.parametrize("kind,steps", [("cosine", 250), ("linear", 1000)])
def test_ddpm_oracle_on_the_linear_path_is_the_flow_oracle(dist, kind, steps):
    ddpm = MixtureOracle(dist, make_schedule(kind, steps))  # alpha-bar_T below (1 - 0.95)^2 / (0.05^2 + 0.95^2)
    flow = FlowMixtureOracle(dist)
    x = torch.randn(64, dist.dim, generator=gen(1), dtype=torch.float64) * 2
    for t in TIMES:
        got = teacher_velocity(ddpm, x, t)
        want = teacher_velocity(flow, x, t)
        assert got.dtype == torch.float64 and got.shape == x.shape
        assert torch.allclose(got, want, atol=1e-5, rtol=0), (t, (got - want).abs().max())


def test_per_example_times_are_each_examples_own():
    dist = mixture_2d()
    ddpm, flow = MixtureOracle(dist, make_schedule("cosine", 250)), FlowMixtureOracle(dist)
    x = torch.randn(6, 2, generator=gen(2), dtype=torch.float64)
    t = torch.tensor([0.1, 0.1, 0.5, 0.7, 0.7, 0.9], dtype=torch.float64)
    rows = torch.stack([teacher_velocity(flow, x[i:i + 1], float(t[i]))[0] for i in range(6)])
    assert torch.allclose(teacher_velocity(flow, x, t), rows, atol=1e-12)
    assert torch.allclose(teacher_velocity(ddpm, x, t), rows, atol=1e-5)


def test_teacher_flow_transports_the_prior_like_the_exact_map():
    """The DDPM oracle's ODE on the linear path, by RK45, is the exact flow map from t = 1 to t = 0."""
    dist = _mixture_1d()
    z = torch.randn(32, 1, generator=gen(3), dtype=torch.float64)
    got = TeacherFlow(MixtureOracle(dist, make_schedule("linear", 1000))).transport(z, "rk45", 1)
    want = exact_flow_map(FlowMixtureOracle(dist), z, 1.0, 0.0)
    assert (got - want).abs().max() < 1e-2  # the DDPM's own range ends at t = 0.99: held beyond it


def _cfg_with_teacher(path) -> Config:
    cfg = Config()
    cfg.train.teacher = str(path)
    return cfg


def test_missing_or_garbage_teacher_is_one_line(tmp_path):
    for path, words in ((tmp_path / "nowhere", "not a finished run"), (tmp_path, "not a finished run")):
        with pytest.raises(DDPMLabError, match=words) as info:
            load_teacher(_cfg_with_teacher(path))
        assert "train.teacher" in str(info.value) and "\n" not in str(info.value)
    (tmp_path / "run.json").write_text("{not json")
    (tmp_path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(DDPMLabError) as info:
        load_teacher(_cfg_with_teacher(tmp_path))
    assert "train.teacher" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(DDPMLabError, match="needs a teacher"):
        load_teacher(Config())


def test_teacher_key_goes_with_a_teacher_objective_only():
    with pytest.raises(DDPMLabError, match="train.teacher applies"):
        load_config(None, ["train.teacher=somewhere"])

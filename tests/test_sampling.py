import torch

from ddpmlab.core.process import ReverseProcess
from ddpmlab.core.parameterisation import from_mean_variance
from ddpmlab.core.schedule import make_schedule
from ddpmlab.models.seed import SeedReverse
from ddpmlab.sampling.api import sample
from conftest import gen


def test_ancestral_shapes_and_trajectory():
    s = make_schedule("constant", 30, beta=0.05)
    for shape in [(1,), (2,), (1, 4, 4)]:
        model = SeedReverse(s, shape)
        x = sample(model, 17, "ancestral", generator=gen(0))
        assert x.shape == (17,) + shape
        traj = sample(model, 17, "ancestral", generator=gen(0), keep_trajectory=True)
        assert traj.shape == (31, 17) + shape
        assert torch.equal(traj[0], x)  # same generator, same draws: index 0 is the final sample


def test_ancestral_step_uses_the_model_moments():
    class Fixed(ReverseProcess):  # the contract's defaults, and its own reverse step
        schedule = make_schedule("constant", 1, beta=0.5)
        data_shape = (1,)

        def p_mean_variance(self, x, t, cond=None):
            return from_mean_variance(self.schedule, x, t, torch.full_like(x, 3.0), torch.full_like(x, 0.25))

    x = sample(Fixed(), 200_000, "ancestral", generator=gen(1))
    assert abs(float(x.mean()) - 3.0) < 4 * 0.5 / 200_000 ** 0.5
    assert abs(float(x.std()) - 0.5) < 0.005

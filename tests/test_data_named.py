"""Named datasets: shapes, scales and exact densities; every one trains a few steps and samples the
right shape; the 2-D figures (scatter, density, reverse.gif)."""
import argparse
import math

import numpy as np
import pytest
import torch

from conftest import gen
from ddpmlab.cli import main
from ddpmlab.config.sections import DataConfig
from ddpmlab.core.distributions import GaussianMixture
from ddpmlab.data.base import make_training_data
from ddpmlab.data.named import NAMED
from ddpmlab.runs.format import load_run

TINY = ["--set", "schedule.steps=10", "--set", "model.width=8", "--set", "model.depth=1", "--set",
        "model.time_dim=8", "--set", "train.iters=3", "--set", "train.batch_size=16", "--no-progress"]
TWO_D = ("moons", "swiss_roll", "eight_gaussians", "checkerboard")


@pytest.mark.parametrize("name", sorted(NAMED))
def test_sample_shape_and_determinism(name):
    dist = NAMED[name]()
    x = dist.sample(50, gen(0))
    assert x.shape == (50,) + tuple(dist.event_shape) and x.dtype == torch.float32
    assert torch.equal(x, dist.sample(50, gen(0)))
    assert torch.isfinite(x).all()


@pytest.mark.parametrize("name", TWO_D)
def test_two_d_sets_are_roughly_standardised(name):
    x = NAMED[name]().sample(20_000, gen(1))
    assert x.mean(0).abs().max() < 0.35 and torch.all((x.std(0) > 0.75) & (x.std(0) < 1.3))


def test_eight_gaussians_is_an_exact_mixture():
    dist = NAMED["eight_gaussians"]()
    assert isinstance(dist, GaussianMixture) and dist.num_components == 8
    assert torch.allclose(dist.means.norm(dim=1), torch.full((8,), math.sqrt(2), dtype=torch.float64))
    # the density integrates to 1 on a grid
    g = torch.linspace(-3, 3, 301, dtype=torch.float64)
    grid = torch.stack(torch.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    assert float(dist.log_prob(grid).exp().sum() * (g[1] - g[0]) ** 2) == pytest.approx(1.0, abs=1e-3)


def test_named_training_data_streams_or_draws_once():
    d = make_training_data(DataConfig(name="moons", n_train=0), gen(0))
    assert d.stream and d.data_shape == (2,) and d.batch(8, gen(1)).shape == (8, 2)
    d = make_training_data(DataConfig(name="checkerboard", n_train=64), gen(0))
    assert d.train.shape == (64, 2) and d.describe()["n_train"] == 64


@pytest.mark.parametrize("name", sorted(set(NAMED) - {"digits"}))  # digits: tests/test_digits.py
def test_each_named_dataset_trains_and_samples(tmp_path, name):
    run_dir, out = tmp_path / "run", tmp_path / "s.npy"
    assert main(["train", "--out", str(run_dir), "--set", f"data.name={name!r}", *TINY]) == 0
    assert main(["sample", str(run_dir), "-n", "9", "--out", str(out)]) == 0
    dist = NAMED[name]()
    s = np.load(out)
    assert s.shape == (9,) + tuple(dist.event_shape) and np.isfinite(s).all()
    run = load_run(run_dir)
    assert (run.dist is not None) == isinstance(dist, GaussianMixture)  # exact evaluation comes for free


def test_figures_command_writes_scatter_density_gif(tmp_path):
    from ddpmlab.cli.commands import figures

    run_dir = tmp_path / "run"
    assert main(["train", "--out", str(run_dir), "--set", "data.name='checkerboard'", *TINY]) == 0
    args = argparse.Namespace(run_dir=str(run_dir), n=200, seed=0, out=str(tmp_path / "fig"), trust_code=False)
    assert figures.run(args) == 0
    for name in ("scatter.png", "density.png"):
        assert (tmp_path / "fig" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    gif = (tmp_path / "fig" / "reverse.gif").read_bytes()
    assert gif[:6] in (b"GIF89a", b"GIF87a")
    from PIL import Image

    with Image.open(tmp_path / "fig" / "reverse.gif") as im:
        assert im.n_frames > 5
    assert not list((tmp_path / "fig").glob(".*tmp"))


def test_figures_command_refuses_one_feature(tmp_path, capsys):
    from ddpmlab.cli.commands import figures
    from ddpmlab.core.utils import DDPMLabError

    run_dir = tmp_path / "run"
    assert main(["train", "--out", str(run_dir), "--set", "data.name='gaussian'", *TINY]) == 0
    with pytest.raises(DDPMLabError, match="one feature"):
        figures.run(argparse.Namespace(run_dir=str(run_dir), n=20, seed=0, out=None, trust_code=False))


@pytest.mark.parametrize("n", [1, 5, 1024])
def test_one_dimensional_mixture_draws_equal_the_matrix_product(n):
    """A 1-D mixture draws m_k + L_k z as one product (no batch of 1 x 1 matrix products): the same numbers."""
    from ddpmlab.core.distributions import GaussianMixture
    mixture = GaussianMixture([0.3, 0.7], [-2.0, 1.5], [0.25, 0.6])
    x, comp = mixture.sample_labelled(n, torch.Generator().manual_seed(n))
    g = torch.Generator().manual_seed(n)
    k = torch.multinomial(mixture.weights, n, replacement=True, generator=g)
    z = torch.randn(n, 1, generator=g, dtype=torch.float64)
    expected = mixture.means.index_select(0, k) + (mixture.scale_tril.index_select(0, k) @ z[:, :, None])[:, :, 0]
    assert torch.equal(comp, k) and torch.equal(x, expected.float())

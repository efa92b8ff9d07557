"""8x8 digits: the split, the U-Net recipe trains and samples, the classifier cache (safetensors), the
Frechet distance's plumbing and the image figures."""
import argparse

import numpy as np
import pytest
import torch

from conftest import gen
from ddpmlab.cli import main
from ddpmlab.data.digits import Digits, digits_split, to_pixel_values
from ddpmlab.evaluation import digit_classifier as dc
from ddpmlab.evaluation.fid import evaluate_digit_samples
from ddpmlab.figures.plots2d import image_grid

TINY = ["--config", "digits", "--set", "schedule.steps=10", "--set", "sample.steps=0", "--set", "model.width=8",
        "--set", "model.time_dim=8", "--set", "train.iters=2", "--set", "train.batch_size=8", "--no-progress"]


def test_split_is_fixed_stratified_and_disjoint():
    xt, yt = digits_split("train")
    xh, yh = digits_split("heldout")
    assert xt.shape == (1438, 1, 8, 8) and xh.shape == (359, 1, 8, 8)
    assert xt.min() >= -1 and xt.max() <= 1 and float(xt.max()) == 1.0
    assert set(yt.tolist()) == set(yh.tolist()) == set(range(10))
    assert torch.equal(digits_split("train")[0], xt)
    assert torch.allclose(to_pixel_values(xt).round(), to_pixel_values(xt))  # 0..16 grey levels


def test_digits_distribution_draws_training_images():
    d = Digits()
    x = d.sample(20, gen(0))
    assert x.shape == (20, 1, 8, 8) and tuple(d.event_shape) == (1, 8, 8)
    assert not hasattr(d, "log_prob")


def test_digits_train_sample_and_figures(tmp_path):
    from ddpmlab.cli.commands import figures

    run_dir, out = tmp_path / "run", tmp_path / "s.npy"
    assert main(["train", "--out", str(run_dir), *TINY]) == 0
    assert main(["sample", str(run_dir), "-n", "4", "--out", str(out)]) == 0
    assert np.load(out).shape == (4, 1, 8, 8)
    assert figures.run(argparse.Namespace(run_dir=str(run_dir), n=16, seed=0, out=str(tmp_path / "fig"), trust_code=False)) == 0
    assert (tmp_path / "fig" / "samples.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "fig" / "reverse.gif").read_bytes()[:3] == b"GIF"


def test_image_grid(tmp_path):
    image_grid(torch.rand(23, 1, 8, 8) * 2 - 1, tmp_path / "g.png", nrow=5)
    assert (tmp_path / "g.png").read_bytes()[:4] == b"\x89PNG"


def test_frechet_plumbing_with_any_classifier():
    torch.manual_seed(0)
    clf = dc.DigitClassifier()
    train, _ = digits_split("train")
    r = evaluate_digit_samples(train, clf)
    assert r["fd_to_train"] == pytest.approx(0.0, abs=1e-6)
    assert r["fd"] == pytest.approx(r["fd_floor"], rel=1e-9)
    assert sum(r["class_histogram"]) == 1438 and r["n_samples"] == 1438
    noise = evaluate_digit_samples(torch.randn(500, 1, 8, 8, generator=gen(0)), clf)
    assert noise["fd"] > r["fd_floor"]


def test_classifier_is_cached_as_safetensors(tmp_path, monkeypatch):
    monkeypatch.setenv("DDPMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(dc, "EPOCHS", 1)
    first, acc = dc.load_classifier()
    files = list((tmp_path / "cache").glob("*.safetensors"))
    assert len(files) == 1 and 0.0 <= acc <= 1.0
    blob = files[0].read_bytes()
    assert blob[8:9] == b"{" and b"pickle" not in blob[:200]  # safetensors: 8-byte length, JSON header

    def no_training():
        raise AssertionError("retrained although cached")

    monkeypatch.setattr(dc, "train_classifier", no_training)
    second, acc2 = dc.load_classifier()
    assert acc2 == acc
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        assert torch.equal(a, b)
    # a corrupt cache file is retrained and rewritten
    files[0].write_bytes(b"garbage")
    monkeypatch.undo()
    monkeypatch.setenv("DDPMLAB_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(dc, "EPOCHS", 1)
    third, _ = dc.load_classifier()
    assert files[0].read_bytes()[8:9] == b"{"
    for a, b in zip(first.state_dict().values(), third.state_dict().values()):
        assert torch.equal(a, b)  # deterministic training

"""No silent failure (issue 23, deliverable 3): samples far outside the data's range are one warning line
from ``sample`` and ``evaluate`` and a field of evaluation.json; the run's recorded sampler options reach
only the sampler they were recorded for; a sampler without ``@torch.no_grad()`` works; ``dl.evaluate``
takes ``n_ode=0``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import ddpmlab as dl
from ddpmlab.evaluation.range_check import K_STD, data_stats, out_of_range
from ddpmlab.runs.format import load_run
from ddpmlab.sampling.registry import SAMPLERS
from hostile_support import run_main

SMALL = ["--no-progress", "--set", "train.iters=200", "--set", "model.width=16", "--set", "train.batch_size=256",
         "--set", "schedule.steps=100", "--set", "sample.steps=20"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A cosine schedule without preconditioning, sampled by DDIM (diverges), and the default recipe (healthy)."""
    root = tmp_path_factory.mktemp("silent")
    for name, extra in (("cosine", ["--set", "schedule.kind=cosine", "--set", "model.precondition=false",
                                    "--set", "sample.sampler=ddim"]),
                        ("healthy", ["--set", "sample.sampler=ddim"])):
        code, _, err = run_main("train", "--out", root / name, *SMALL, *extra)
        assert code == 0, err
    return root


def warning_lines(err: str, command: str) -> list[str]:
    return [line for line in err.splitlines() if line.startswith(f"ddpmlab {command}: warning:")]


def test_the_rule_counts_far_samples_only():
    data = torch.randn(1000, 2) * torch.tensor([1.0, 3.0]) + 5.0
    stats = data_stats(data)
    near = torch.full((4, 2), 5.0) + 2.0
    far = torch.tensor([[5.0, 5.0 + 3.0 * K_STD * 1.5], [float("nan"), 5.0]])
    assert out_of_range(near, stats)[0] == 0
    count, worst = out_of_range(torch.cat([near, far]), stats)
    assert count == 2 and worst > K_STD


class TestOutOfRangeWarning:
    def test_diverged_run_warns_from_sample(self, runs, tmp_path):
        code, _, err = run_main("sample", runs / "cosine", "-n", 1000, "--out", tmp_path / "x.npy")
        assert code == 0, err
        x = torch.from_numpy(np.load(tmp_path / "x.npy"))
        assert (x.abs() > 5).float().mean() > 0.5  # the samples do explode (the data lie within |x| < 3)
        lines = warning_lines(err, "sample")
        assert len(lines) == 1 and "outside the data's range" in lines[0], err
        assert len(err.strip().splitlines()) == 1

    def test_diverged_run_warns_from_evaluate_and_records_it(self, runs):
        code, out, err = run_main("evaluate", runs / "cosine", "--n-bound", 200, "--n-ode", 0, "--samples", 1000)
        assert code == 0, err
        assert len(warning_lines(err, "evaluate")) == 1, err
        ev = json.loads((runs / "cosine" / "evaluation.json").read_text())
        r = ev["samples_out_of_range"]
        assert r["of"] == 1000 and r["count"] > 500 and r["worst_std"] > K_STD and "standard deviations" in r["rule"]
        assert (ev["settings"]["sampler"], ev["settings"]["sampling_steps"], ev["settings"]["eta"]) == ("ddim", 20, 0.0)

    def test_report_shows_the_count(self, runs, tmp_path):
        run_main("evaluate", runs / "cosine", "--n-bound", 200, "--n-ode", 0, "--samples", 1000)
        code, _, err = run_main("report", runs / "cosine", "--out", tmp_path / "report.html")
        assert code == 0, err
        page = (tmp_path / "report.html").read_text()
        assert "samples lie far outside the data" in page and "standard deviations of the training data" in page

    def test_healthy_run_gets_no_warning(self, runs, tmp_path):
        code, _, err = run_main("sample", runs / "healthy", "-n", 1000, "--out", tmp_path / "x.npy")
        assert code == 0 and not warning_lines(err, "sample"), err
        code, _, err = run_main("evaluate", runs / "healthy", "--n-bound", 200, "--n-ode", 0, "--samples", 1000)
        assert code == 0 and not warning_lines(err, "evaluate"), err
        ev = json.loads((runs / "healthy" / "evaluation.json").read_text())
        assert ev["samples_out_of_range"]["count"] == 0


@pytest.fixture
def custom_sampler():
    """A stochastic sampler taking ``eta`` (default 1), written without ``@torch.no_grad()``; records the eta
    it was called with. Unregistered after the test."""
    seen = []

    def noisy(model, x, grid, generator=None, cond=None, callback=None, eta: float = 1.0):
        seen.append(eta)
        for t in grid.tolist()[:-1]:  # the network's posterior mean, step by step (kept a graph without no_grad)
            x = model.p_mean_variance(x, torch.full((x.shape[0],), int(t), dtype=torch.long), cond).mean
        return x

    SAMPLERS.register("silent_test_noisy", noisy)
    try:
        yield seen
    finally:
        SAMPLERS._items.pop("silent_test_noisy", None)


class TestSamplerOptions:
    def test_recorded_eta_does_not_reach_another_sampler(self, runs, tmp_path, custom_sampler):
        code, _, err = run_main("sample", runs / "healthy", "-n", 10, "--sampler", "silent_test_noisy",
                                "--out", tmp_path / "a.npy")
        assert code == 0, err
        assert custom_sampler == [1.0]  # its own default, not the run's ddim eta 0

    def test_given_eta_reaches_it(self, runs, tmp_path, custom_sampler):
        code, _, err = run_main("sample", runs / "healthy", "-n", 10, "--sampler", "silent_test_noisy", "--eta", 0.3,
                                "--out", tmp_path / "a.npy")
        assert code == 0, err
        assert custom_sampler == [0.3]

    def test_sampler_without_no_grad_works_through_the_api(self, runs, custom_sampler):
        model = load_run(runs / "healthy").model
        x = dl.sample(model, 8, "silent_test_noisy", steps=5, generator=torch.Generator().manual_seed(0))
        assert not x.requires_grad and x.shape == (8, 1)


def test_evaluate_api_skips_the_ode_with_n_ode_0(runs):
    run = load_run(runs / "healthy")
    ev = dl.evaluate(run.model, run.dist, n_samples=200, sampler="ddim", steps=10, n_bound=100, n_ode=0,
                     generator=torch.Generator().manual_seed(0))
    assert ev["settings"]["n_ode"] == 0 and "skipped" in ev["model"]["ode"]

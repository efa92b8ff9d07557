"""The post-training quality line of ``ddpmlab train`` (issue 24): the samples' distance to unseen data
beside a true sample's, the ratio, and a hint when the ratio is poor; skipped, with the reason, where
there is nothing unseen to measure against."""
from __future__ import annotations

import re
import shutil

import numpy as np
import pytest

from conftest import gen
from hostile_support import TINY, run_main, spoil_weights_with_nan, tree

from ddpmlab.data.named import NAMED
from ddpmlab.evaluation.quality import GOOD_RATIO, against_rows, against_truth, quality_line, run_quality
from ddpmlab.runs.format import load_run

NUMBER = r"([0-9.]+(?:e[-+]?\d+)?)"
LINE = re.compile(rf"^quality: (W1|sliced W1) {NUMBER} to (\d+) ([^;]+); a true sample's {NUMBER}; "
                  rf"([0-9.]+)x(.*)$", re.M)


def train(out, *args) -> str:
    code, stdout, err = run_main("train", "--out", out, *TINY, *args)
    assert code == 0, err
    return stdout


def parsed(stdout: str) -> dict:
    lines = [line for line in stdout.splitlines() if line.startswith("quality:")]
    assert len(lines) == 1, stdout
    m = LINE.match(lines[0])
    assert m, lines[0]
    metric, value, n_ref, against, floor, ratio, tail = m.groups()
    return {"metric": metric, "value": float(value), "floor": float(floor), "ratio": float(ratio),
            "against": f"{n_ref} {against}", "tail": tail, "line": lines[0]}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny runs trained once through the CLI, with what each printed."""
    root = tmp_path_factory.mktemp("quality")
    rng = np.random.default_rng(0)
    np.save(root / "data.npy", rng.normal(3.0, 2.0, (300, 2)))
    np.save(root / "few.npy", rng.normal(0.0, 1.0, (10, 2)))
    out = {"root": root}
    for name, args in {
        "eight": ("--set", "data.name='eight_gaussians'"),
        "file": ("--data", root / "data.npy"),
        "few": ("--data", root / "few.npy"),
        "flow": ("--config", "moons_flow", "--set", "sample.steps=4"),
        "digits": ("--set", "data.name='digits'"),
    }.items():
        out[name] = (root / name, train(root / name, *args))
    return out


class TestLine:
    def test_poor_run_prints_metric_floor_ratio_and_hint(self, runs):
        q = parsed(runs["eight"][1])
        assert q["metric"] == "sliced W1" and q["against"] == "20000 fresh draws"
        assert q["ratio"] > GOOD_RATIO
        assert q["ratio"] == pytest.approx(q["value"] / q["floor"], rel=0.06)  # printed to 4 digits
        assert q["tail"] == " a true sample's distance: try --set train.iters=1000"  # 4 x max(5, 250) steps

    def test_a_good_ratio_has_no_hint(self):
        dist = NAMED["seed_mixture"]()
        q = parsed(quality_line(against_truth(dist, dist.sample(4000, gen(1)), gen(2)), 1000))
        assert q["metric"] == "W1" and q["ratio"] <= GOOD_RATIO
        assert q["tail"] == f" (good: within {GOOD_RATIO:g}x)" and "try" not in q["line"]

    def test_file_run_is_measured_on_its_held_out_rows(self, runs):
        q = parsed(runs["file"][1])
        assert q["against"] == "30 held-out rows"  # 10 % of 300 rows

    def test_file_without_held_out_rows_is_skipped_with_the_reason(self, runs):
        lines = [x for x in runs["few"][1].splitlines() if x.startswith("quality:")]
        assert lines == ["quality: skipped ({}: no held-out rows to evaluate against (fewer than 20 rows: none "
                         "held out))".format(runs["root"] / "few.npy")]

    def test_flow_run_is_sampled_with_its_own_sampler(self, runs, monkeypatch):
        q = parsed(runs["flow"][1])
        assert q["metric"] == "sliced W1" and q["against"] == "20000 fresh draws"
        import ddpmlab.evaluation.quality as quality

        used = []
        real = quality.draw_run_samples
        monkeypatch.setattr(quality, "draw_run_samples", lambda run, n, g: used.append(run.cfg.sample.sampler)
                            or real(run, n, g))
        run_quality(load_run(runs["flow"][0]), gen(0), n=200)
        assert used == ["ode"]

    def test_digits_get_a_cheap_proxy(self, runs):
        q = parsed(runs["digits"][1])
        assert q["metric"] == "sliced W1" and q["against"].endswith("held-out digit images (pixels)")

    def test_the_line_changes_nothing_in_the_run_directory(self, runs):
        before = tree(runs["file"][0])
        run_quality(load_run(runs["file"][0]), gen(0), n=200)
        assert tree(runs["file"][0]) == before

    def test_broken_weights_are_skipped_not_a_traceback(self, runs, tmp_path):
        run = tmp_path / "nan"
        shutil.copytree(runs["eight"][0], run)
        spoil_weights_with_nan(run)
        line = quality_line(run_quality(load_run(run), gen(0), n=200), 5)
        assert line.startswith("quality: skipped (the samples hold NaN")


class TestYardstick:
    """The ratio itself: true samples score about 1, wrong ones far above."""

    @pytest.mark.parametrize("name, repeats", [("seed_mixture", 8), ("moons", 3)])  # 1-D W1 varies more
    def test_true_samples_score_the_floor_and_shifted_ones_do_not(self, name, repeats):
        dist = NAMED[name]()
        true = [against_truth(dist, dist.sample(4000, gen(s)), gen(100 + s))["ratio"] for s in range(repeats)]
        assert 0.6 < sum(true) / len(true) < 1.5  # one true sample's ratio varies (1-D: 0.4 - 2.0)
        assert against_truth(dist, dist.sample(4000, gen(1)) + 0.5, gen(2))["ratio"] > 5

    def test_held_out_rows_floor(self):
        rows = NAMED["moons"]().sample(6000, gen(3))
        train, held = rows[:5000], rows[5000:]
        fresh = NAMED["moons"]().sample(2000, gen(4))
        assert 0.5 < against_rows(fresh, train, held, gen(5))["ratio"] < 1.6
        assert against_rows(fresh * 1.5, train, held, gen(5))["ratio"] > 3

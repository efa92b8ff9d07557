"""The optimum distances in every evaluation of a run with a finite training set (issue 26): per t, the
model's distance to the population optimum and to the empirical optimum, on x_t of training points and of
held-out data, in evaluation.json (equal to a direct ``optimum_distances`` call from the recorded seed),
in the printed table (a few t and the crossover t) and in the report (a figure over t); a run without a
finite training set or without a population optimum says why it has none."""
import contextlib
import io
import json
import re

import pytest
import torch

import ddpmlab as dl
from ddpmlab.cli import main
from ddpmlab.core.paths import LinearPath
from ddpmlab.core.schedule import make_schedule
from ddpmlab.evaluation.finished import training_rows
from ddpmlab.evaluation.memorisation import crossover_t, distance_times, optimum_distances
from ddpmlab.evaluation.memorisation_run import distance_rows, distances_of
from ddpmlab.models.empirical_oracle import EmpiricalOracle
from ddpmlab.models.flow_oracle import FlowMixtureOracle
from ddpmlab.models.oracle import MixtureOracle

TINY = ["train.iters=5", "model.width=8", "model.depth=1", "schedule.steps=20", "train.batch_size=16"]
EVALUATE = ["--samples", "100", "--n-bound", "20", "--n-ode", "0"]
PAIRS = ("model_vs_population", "model_vs_empirical", "population_vs_empirical")


def _cli(args) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(args) == 0
    return out.getvalue()


def _evaluated(tmp, name, extra):
    """A tiny eight_gaussians run, its `ddpmlab evaluate` output, evaluation.json and report page."""
    run = tmp / name
    sets = [a for s in TINY + extra for a in ("--set", s)]
    _cli(["train", "--config", "eight_gaussians", *sets, "--out", str(run), "--no-progress"])
    printed = _cli(["evaluate", str(run), *EVALUATE])
    _cli(["report", str(run), "--out", str(tmp / f"{name}.html")])
    return run, printed, json.loads((run / "evaluation.json").read_text()), (tmp / f"{name}.html").read_text()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return _evaluated(tmp_path_factory.mktemp("optima"), "small", ["data.n_train=16"])


@pytest.fixture(scope="module")
def stream(tmp_path_factory):
    return _evaluated(tmp_path_factory.mktemp("optima"), "stream", ["data.n_train=0"])


def _figures(page: str) -> dict:
    m = re.search(r'<script type="application/json" id="ddpmlab-figures">(.*?)</script>', page, flags=re.S)
    return json.loads(m.group(1))


class TestEvaluationJson:
    def test_numbers_equal_a_direct_call(self, small):
        """From the recorded seed: 256 training points picked with replacement, 256 fresh true points, then
        the distances on the training points' x_t and the held-out ones', all from that one generator."""
        run, _, ev, _ = small
        od, loaded = ev["optimum_distances"], dl.load_run(run)
        model, dist, train = loaded.model, loaded.dist, training_rows(loaded).double()
        g = torch.Generator().manual_seed(od["seed"])
        picked = train[torch.randint(16, (256,), generator=g)]
        fresh = dist.sample(256, g, dtype=torch.float64)
        pop, emp = MixtureOracle(dist, model.schedule, (2,)), EmpiricalOracle(train, model.schedule, (2,))
        for key, x0 in (("training", picked), ("heldout", fresh)):
            direct = optimum_distances(model, pop, emp, x0, od[key]["t"], g)
            for name in PAIRS + tuple(f"{k}_se" for k in PAIRS) + ("difference_se", "n", "t"):
                assert od[key][name] == direct[name], (key, name)
            assert od[key]["crossover_t"] == crossover_t(direct)
        assert od["n_train"] == 16 and od["training"]["n"] == 256

    def test_times_are_geometric_over_the_steps(self, small):
        T = 20  # schedule.steps of the tiny run: round(20^(i / 13)), i = 0..13, each once
        expected = sorted({int(round(T ** (i / 13))) for i in range(14)})
        assert small[2]["optimum_distances"]["training"]["t"] == expected == [1, 2, 3, 4, 5, 6, 8, 10, 13, 16, 20]
        assert small[2]["optimum_distances"]["heldout"]["t"] == expected

    def test_a_flows_times_run_geometrically_to_one(self):
        flow = FlowMixtureOracle(dl.GaussianMixture([1.0], [[0.0]], [1.0]), LinearPath())
        times = distance_times(flow)
        assert times[0] == pytest.approx(0.002) and times[-1] == pytest.approx(1.0) and len(times) == 14
        ratios = [b / a for a, b in zip(times, times[1:])]
        assert max(ratios) == pytest.approx(min(ratios))

    def test_the_table_shows_a_few_t_and_the_crossover(self, small):
        _, printed, ev, _ = small
        od = ev["optimum_distances"]
        for where, key in (("training x_t", "training"), ("held-out x_t", "heldout")):
            for t in (1, 6, 20):  # the first, middle and last t
                i = od[key]["t"].index(t)
                line = next(s for s in printed.splitlines() if f"t={t} ({where})" in s)
                assert f"{od[key]['model_vs_population'][i]:.2e} / {od[key]['model_vs_empirical'][i]:.2e}" in line
                assert f"0 / {od[key]['population_vs_empirical'][i]:.2e}" in line
        assert sum("optimum, t=" in s for s in printed.splitlines()) == 6
        cross = next(s for s in printed.splitlines() if s.startswith("crossover t"))
        shown = ["none" if od[k]["crossover_t"] is None else str(od[k]["crossover_t"]) for k in ("training", "heldout")]
        assert cross.rstrip().endswith(" / ".join(shown))

    def test_the_rows_by_hand(self):
        d = {"t": [1, 2, 5, 9, 30], "model_vs_population": [0.5, 0.2, 0.1, 0.0, 3.0], "model_vs_empirical": [0.1] * 5,
             "population_vs_empirical": [0.25] * 5}
        ev = {"optimum_distances": {"training": {**d, "crossover_t": None}, "heldout": {**d, "crossover_t": 9}}}
        rows = distance_rows(ev)
        assert [r[0].split("t=")[1] for r in rows[:3]] == ["1 (training x_t)", "5 (training x_t)", "30 (training x_t)"]
        assert rows[2][1:] == ("3.00e+00 / 1.00e-01", "0 / 2.50e-01") and rows[-1][1] == "none / 9"
        assert len(rows) == 7 and distance_rows({}) == []
        assert distance_rows({"optimum_distances": {"skipped": "x"}}) == []


class TestReport:
    def test_the_page_plots_both_distances_over_t(self, small):
        _, _, ev, page = small
        od = ev["optimum_distances"]
        assert "Which optimum the model follows at each t" in page
        traces = {t["name"]: t for f in _figures(page).values() for t in f["data"] if "name" in t}
        for key, where in (("training", "training x_t"), ("heldout", "held-out x_t")):
            for pair, label in zip(PAIRS, ("model to the population optimum", "model to the empirical optimum",
                                           "population to empirical optimum")):
                trace = traces[f"{label} ({where})"]
                assert trace["x"] == od[key]["t"]
                assert trace["y"] == [float(f"{v:.4g}") for v in od[key][pair]]

    @pytest.mark.parametrize("bad", [{"skipped": 3}, {"n_train": "16"}, {"training": {"t": [1, 2]}}],
                             ids=["skipped", "n_train", "lengths"])
    def test_a_malformed_entry_is_refused(self, small, tmp_path, bad, capsys):
        run, _, ev, _ = small
        text = (run / "evaluation.json").read_text()
        ev = json.loads(text)
        if "training" in bad:
            ev["optimum_distances"]["training"]["t"] = [1, 2]
        else:
            ev["optimum_distances"].update(bad)
        (run / "evaluation.json").write_text(json.dumps(ev))
        try:
            assert main(["report", str(run), "--out", str(tmp_path / "r.html")]) == 2
            err = capsys.readouterr().err.strip().splitlines()
            assert len(err) == 1 and "optimum_distances" in err[0]
        finally:
            (run / "evaluation.json").write_text(text)


class TestSkipped:
    def test_fresh_draws_say_why(self, stream):
        _, printed, ev, page = stream
        reason = ev["optimum_distances"]["skipped"]
        assert "no finite training set" in reason and "data.n_train = 0" in reason
        assert f"optimum distances skipped: {reason}" in printed.splitlines()
        assert "optimum, t=" not in printed and "crossover t" not in printed
        assert "optimum distances skipped: no finite training set" in page
        assert "Which optimum the model follows" not in page

    def test_data_without_a_population_optimum_say_why(self):
        schedule = make_schedule("linear", 20)
        model = EmpiricalOracle(torch.randn(8, 2, dtype=torch.float64), schedule, (2,))
        train = torch.randn(8, 2, dtype=torch.float64)
        out = distances_of(model, None, train, torch.Generator().manual_seed(0))
        assert out == {"skipped": "no population optimum: it is exact only for Gaussian-mixture data"}
        assert "no finite training set" in distances_of(model, None, None, torch.Generator())["skipped"]
        assert "no finite training set" in distances_of(model, None, train[:1], torch.Generator())["skipped"]

    def test_a_moons_run_on_16_points_says_why(self, tmp_path):
        run = tmp_path / "moons"
        sets = [a for v in TINY + ["data.n_train=16"] for a in ("--set", v)]
        _cli(["train", "--config", "moons", *sets, "--out", str(run), "--no-progress"])
        printed = _cli(["evaluate", str(run), *EVALUATE])
        ev = json.loads((run / "evaluation.json").read_text())
        assert ev["optimum_distances"] == {"skipped": "no population optimum: it is exact only for "
                                                      "Gaussian-mixture data"}
        assert "memorisation" in ev  # a finite training set: its copies are counted all the same
        assert printed.splitlines()[-2] == f"optimum distances skipped: {ev['optimum_distances']['skipped']}"

"""``ddpmlab evaluate`` on every dataset (2-D sets, digits, the user's file), in the mixture evaluation's
layout; the held-out rows of a file; and the per-step bound terms and noise-prediction errors against
independent computations."""
import json
import math
import shutil

import numpy as np
import pytest
import torch

from _report_runs import QUICK_EVAL, build, cli, user_table
from conftest import gen, oracle_ode_nll_nats
from ddpmlab.config.build import build_model
from ddpmlab.config.schema import load_config
from ddpmlab.config.sections import DataConfig
from ddpmlab.core.distributions import seed_mixture
from ddpmlab.data.base import make_training_data
from ddpmlab.data.base import HELDOUT_FRACTION, split_heldout
from ddpmlab.data.named import gaussian_1d
from ddpmlab.evaluation.likelihood import evaluate_bound, vlb_terms, vlb_terms_by_step
from ddpmlab.evaluation.per_step import eps_error_by_step, evaluate_bound_by_step
from ddpmlab.models.oracle import MixtureOracle
from ddpmlab.runs.format import load_run


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return build(tmp_path_factory)


def evaluation(run_dir) -> dict:
    ev = json.loads((run_dir / "evaluation.json").read_text())
    assert ev["format"] == "ddpmlab-evaluation" and ev["version"] == 1
    assert {"settings", "data", "model"} <= set(ev)
    return ev


def finite(*values) -> bool:
    return all(isinstance(v, (int, float)) and math.isfinite(v) for v in values)


def test_moons_sample_metrics_beside_their_floors(runs):
    ev = evaluation(runs.moons)
    s = ev["model"]["samples"]
    assert ev["kind"] == "distribution" and ev["data"]["name"] == "moons" and s["n"] == 400
    assert finite(s["sliced_w1"], s["sliced_w1_noise_floor"], s["mmd"], s["mmd_noise_floor"])
    assert s["sliced_w1"] > s["sliced_w1_noise_floor"] > 0  # 40 training steps are far from the data
    assert "nll_nats" not in s and "skipped" in ev["model"]["ode"]  # no density for the moons
    assert "sliced W1" in runs.evaluate_out["moons"] and "floor" in runs.evaluate_out["moons"]


def test_checkerboard_has_the_exact_nll(runs):
    ev = evaluation(runs.checkerboard)
    s, d = ev["model"]["samples"], ev["data"]
    assert d["entropy_nats"] == pytest.approx(math.log(8), abs=1e-12) and d["entropy_method"] == "exact"
    assert s["nll_nats_floor"] == pytest.approx(math.log(8), abs=1e-9)  # uniform: -log q is log 8 on the support
    assert 0 < s["outside_support_fraction"] < 1 and finite(s["sliced_w1"], s["mmd"])
    ode = ev["model"]["ode"]
    assert ode["n"] == 8 and ode["status"] == "solved" and finite(ode["nll_nats"]), ode


def test_digits_frechet_distance_and_class_histogram(runs):
    ev = evaluation(runs.digits)
    s = ev["model"]["samples"]
    assert ev["kind"] == "digits" and s["n_samples"] == 400 and sum(s["class_histogram"]) == 400
    assert len(s["class_histogram"]) == 10 and sum(s["heldout_class_histogram"]) == ev["data"]["n_heldout"]
    assert finite(s["fd"], s["fd_floor"], s["sliced_w1"], s["sliced_w1_noise_floor"]) and s["fd"] > s["fd_floor"] > 0
    assert "Frechet" in runs.evaluate_out["digits"]


def test_user_file_against_its_heldout_rows(runs):
    info = json.loads((runs.user / "run.json").read_text())
    held = info["data"]["heldout"]
    n = len(user_table())
    assert held["n"] == round(HELDOUT_FRACTION * n) and info["data"]["n_train"] == n - held["n"]
    assert "never trained on" in held["rule"]
    ev = evaluation(runs.user)
    s = ev["model"]["samples"]
    assert ev["kind"] == "heldout" and ev["data"]["n_heldout"] == held["n"]
    assert finite(s["sliced_w1"], s["sliced_w1_noise_floor"], s["mmd"], s["mmd_noise_floor"])
    ode = ev["model"]["ode"]
    assert "data units" in ode["on"] and ode["status"] == "solved" and finite(ode["nll_nats"]), ode


def test_heldout_rows_are_fixed_disjoint_and_never_trained_on(tmp_path):
    x = torch.from_numpy(user_table(57)).float()
    train, held, desc = split_heldout(x)
    assert len(held) == 6 and len(train) == 51 and desc["n"] == 6
    rows = lambda a: sorted(map(tuple, a.tolist()))  # noqa: E731
    assert rows(torch.cat([train, held])) == rows(x)  # a partition of the file's rows
    train2, held2, _ = split_heldout(x)
    assert torch.equal(held, held2) and torch.equal(train, train2)  # the same rows every time
    np.save(tmp_path / "d.npy", x.numpy())
    for seed in (0, 1):  # the run's seed does not move the split
        data = make_training_data(DataConfig(name="file", path=str(tmp_path / "d.npy")), gen(seed))
        assert torch.allclose(data.to_data_units(data.train), train, atol=1e-5)
    small = split_heldout(x[:19])
    assert small[1] is None and small[2]["n"] == 0 and torch.equal(small[0], x[:19])


def test_a_changed_file_is_refused_in_one_line(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs.user, run)
    info = json.loads((run / "run.json").read_text())
    csv = tmp_path / "user.csv"
    table = user_table()
    table[0, 0] += 1.0
    np.savetxt(csv, table, delimiter=",", header="height,weight", comments="")
    info["config"]["data"]["path"] = str(csv)
    (run / "run.json").write_text(json.dumps(info))
    r = cli("evaluate", run, *QUICK_EVAL)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "differs from the one the run was trained on" in lines[0]
    assert not (run / "evaluation.json").exists() or (run / "evaluation.json").read_bytes() == \
        (runs.user / "evaluation.json").read_bytes()


def test_mixture_evaluation_keeps_its_numbers_and_adds_each_term(runs):
    ev = evaluation(runs.mix1d)
    assert ev["kind"] == "mixture"
    for who in ("model", "oracle"):
        b = ev[who]["bound"]
        assert len(b["terms_nats"]) == ev["settings"]["num_steps"] + 1
        assert sum(b["terms_nats"]) == pytest.approx(b["total_nats"], abs=1e-9)
        assert ev[who]["ode"]["status"] == "solved" and finite(ev[who]["ode"]["nll_nats"]), (who, ev[who]["ode"])
    # the exact oracle's ODE NLL: the entropy plus the prior's mismatch KL(q(x_T) || N(0, 1)), within its SE
    run, ode = load_run(runs.mix1d), ev["oracle"]["ode"]
    expected = oracle_ode_nll_nats(run.dist, float(run.model.schedule.alphas_cumprod[-1]))
    assert abs(ode["nll_nats"] - expected) < 4 * ode["nll_nats_se"], (ode, expected)


def _tiny_model(T: int = 15):
    model = build_model(load_config("default", [f"schedule.steps={T}", "model.width=16", "model.depth=1"]), (1,))
    model.set_data_moments(4 / 3, 3.9)  # preconditioned: the seed mixture's moments
    return model


@pytest.mark.parametrize("who", ["model", "oracle"])
def test_terms_by_step_draw_the_same_numbers_as_the_bound(who):
    """The per-step evaluator against likelihood.py's own: the same totals, example by example."""
    model = _tiny_model()
    dist = seed_mixture()
    if who == "oracle":
        model = MixtureOracle(dist, model.schedule, (1,))
    x0 = dist.sample(200, gen(1))
    a = vlb_terms(model, x0, gen(2), max_rows=700)  # chunks of 3 steps
    b = vlb_terms_by_step(model, x0, gen(2), max_rows=700)
    assert b["step_nats"].shape == (15, 200)
    torch.testing.assert_close(b["prior_nats"], a["prior_nats"], rtol=0, atol=0)
    torch.testing.assert_close(b["step_nats"][0], a["decoder_nats"], rtol=0, atol=1e-12)
    torch.testing.assert_close(b["step_nats"][1:].sum(0), a["steps_nats"], rtol=1e-12, atol=1e-12)
    e1 = evaluate_bound(model, dist.sample, 500, gen(3), batch=200)
    e2 = evaluate_bound_by_step(model, dist.sample, 500, gen(3), batch=200)
    for k, v in e1.items():
        assert e2[k] == pytest.approx(v, rel=1e-12, abs=1e-12), k
    assert sum(e2["terms_nats"]) == pytest.approx(e2["total_nats"], abs=1e-10)


def test_eps_error_of_the_exact_oracle_is_zero_and_its_floor_is_the_closed_form():
    """For N(1, 0.5^2) data E[eps | x_t] is linear and E||E[eps | x_t] - eps||^2 = Var(eps | x_t) =
    abar s^2 / (abar s^2 + 1 - abar) in closed form; the oracle's own error against it is 0."""
    dist = gaussian_1d()
    sched = _tiny_model(T=12).schedule
    oracle = MixtureOracle(dist, sched, (1,))
    n = 4000
    r = eps_error_by_step(oracle, oracle, dist.sample(n, gen(0), dtype=torch.float64), gen(1), max_rows=9000)
    assert max(r["model_vs_exact"]) < 1e-20
    assert r["model_vs_noise"] == pytest.approx(r["exact_vs_noise"], abs=1e-10)
    abar = sched.alphas_cumprod[1:].numpy()
    expected = abar * 0.25 / (abar * 0.25 + 1 - abar)
    se = expected * math.sqrt(2 / n)  # the squared error of a Gaussian: variance 2 sigma^4
    assert np.all(np.abs(np.array(r["exact_vs_noise"]) - expected) < 4.5 * se)
    model = _tiny_model(T=12)
    m = eps_error_by_step(model, oracle, dist.sample(n, gen(0), dtype=torch.float64), gen(1))
    assert min(m["model_vs_exact"]) > 0
    # same draws: E||model - eps||^2 = E||model - exact||^2 + floor + a cross term of zero mean
    gap = np.array(m["model_vs_noise"]) - np.array(m["model_vs_exact"]) - np.array(m["exact_vs_noise"])
    assert np.all(np.abs(gap) < 0.1 * (np.array(m["model_vs_noise"]) + 0.1))

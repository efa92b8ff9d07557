"""``ddpmlab report``: one self-contained file per run or comparison, the per-step bound terms summing to
the bounds of evaluation.json, seeds grouped, and one-line refusals of bad input."""
import json
import re
import shutil

import pytest

from _report_runs import QUICK_REPORT, build, cli

MAX_BYTES = 10_000_000


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return build(tmp_path_factory)


def scripts(text: str) -> list[str]:
    return re.findall(r"<script[^>]*>(.*?)</script>", text, flags=re.S)


def page_json(text: str, element_id: str):
    m = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', text, flags=re.S)
    return json.loads(m.group(1))


def series(figures: dict, name_part: str) -> list[list]:
    """The y values of every trace whose name contains ``name_part``."""
    return [t["y"] for f in figures.values() for t in f["data"] if name_part in t.get("name", "")]


@pytest.mark.parametrize("name", ["mix1d", "gauss8", "digits", "comparison"])
def test_each_report_is_one_self_contained_file(runs, name):
    path = runs.reports[name]
    text = path.read_text()
    assert 1_000_000 < path.stat().st_size < MAX_BYTES
    js = scripts(text)
    assert sum("Plotly" in s and len(s) > 1_000_000 for s in js) == 1  # plotly.js embedded once
    rest = text.replace(max(js, key=len), "")  # the page without the library
    assert "http://" not in rest and "https://" not in rest
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", text)  # nothing loaded from elsewhere
    figures = page_json(text, "ddpmlab-figures")
    sliders = page_json(text, "ddpmlab-sliders")
    assert figures and sliders and all(s["plot"] in figures for s in sliders.values())
    for s in sliders.values():
        assert len(s["frames"]) == len(s["labels"]) >= 2 and s["frames"][0] != s["frames"][-1]
    assert "training loss" in text and "samples beside data" in text.lower()


def test_per_step_terms_sum_to_the_bounds_of_evaluation_json(runs):
    ev = json.loads((runs.mix1d / "evaluation.json").read_text())
    text = runs.reports["mix1d"].read_text()
    figures = page_json(text, "ddpmlab-figures")
    (model,), (oracle,) = series(figures, "mix1d: model"), series(figures, "exact oracle")
    T = ev["settings"]["num_steps"]
    assert len(model) == len(oracle) == T + 1  # L_0 .. L_T
    assert sum(model) == pytest.approx(ev["model"]["bound"]["total_nats"], abs=1e-6)
    assert sum(oracle) == pytest.approx(ev["oracle"]["bound"]["total_nats"], abs=1e-6)
    assert oracle[-1] == pytest.approx(ev["oracle"]["bound"]["prior_nats"], abs=1e-8)  # L_T
    assert oracle[0] == pytest.approx(ev["oracle"]["bound"]["decoder_nats"], abs=1e-8)  # L_0
    assert sum(model[1:-1]) == pytest.approx(ev["model"]["bound"]["steps_nats"], abs=1e-6)
    data = page_json(text, "ddpmlab-data")
    assert data["runs"][0]["metrics"].endswith("evaluation.json")
    sums = data["runs"][0]["per_step_sums"]
    assert sums["oracle"]["bound"] == ev["oracle"]["bound"]["total_nats"]
    for who in ("model", "oracle"):
        assert sums[who]["sum_of_terms"] == pytest.approx(sums[who]["bound"], abs=1e-9)


def test_a_run_without_evaluation_json_is_evaluated_by_the_report(runs):
    assert not (runs.gauss8 / "evaluation.json").exists()  # the report writes nothing into a run
    text = runs.reports["gauss8"].read_text()
    data = page_json(text, "ddpmlab-data")["runs"][0]
    assert data["kind"] == "mixture" and "computed by the report" in data["metrics"]
    for who in ("model", "oracle"):
        assert data["per_step_sums"][who]["sum_of_terms"] == pytest.approx(data["per_step_sums"][who]["bound"],
                                                                         abs=1e-9)
    figures = page_json(text, "ddpmlab-figures")
    contours = [t for f in figures.values() for t in f["data"] if t["type"] == "contour"]
    assert contours and "exact q(x_t)" in contours[0]["name"]  # the 2-D slider's exact density
    assert "sliced W1" in text and "MMD" in text and "-E log q(samples)" in text  # 2-D sample metrics


def test_the_digits_report_shows_images_and_classes(runs):
    text = runs.reports["digits"].read_text()
    figures = page_json(text, "ddpmlab-figures")
    kinds = {t["type"] for f in figures.values() for t in f["data"]}
    assert "heatmap" in kinds and "Frechet distance" in text and "classes of the samples" in text


def test_seeds_are_grouped_with_mean_and_spread(runs):
    text = runs.reports["comparison"].read_text()
    data = page_json(text, "ddpmlab-data")
    groups = data["groups"]
    assert len(groups) == 2 and sorted(len(g["runs"]) for g in groups) == [5, 5]
    assert all("var_type" in g["label"] for g in groups)  # named by what differs
    figures = page_json(text, "ddpmlab-figures")
    bands = [t for f in figures.values() for t in f["data"] if t.get("fill") == "toself"]
    assert len(bands) >= 6  # L_t, nats lost and eps error: one band per group each
    assert "(n=5)" in text and "mean &plusmn; sd over seeds" in text
    assert not data["mixed_data"] and "different data" not in text


def _one_line_exit_2(r, *words):
    assert r.returncode == 2 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for w in words:
        assert w in lines[0]


def test_not_a_finished_run_is_refused(runs, tmp_path):
    (tmp_path / "empty").mkdir()
    out = tmp_path / "r.html"
    _one_line_exit_2(cli("report", runs.mix1d, tmp_path / "empty", "--out", out), "not a finished run")
    assert not out.exists()


def test_existing_output_is_refused_unless_forced(runs, tmp_path):
    out = tmp_path / "r.html"
    out.write_text("keep me")
    _one_line_exit_2(cli("report", runs.moons, "--out", out, *QUICK_REPORT), "exists", "--force")
    assert out.read_text() == "keep me"
    assert cli("report", runs.moons, "--out", out, "--force", *QUICK_REPORT).returncode == 0
    assert out.read_text().startswith("<!DOCTYPE html>") and "moons" in out.read_text()
    assert not list(tmp_path.glob(".*tmp"))  # written atomically


def test_runs_on_different_data_need_allow_mixed_data(runs, tmp_path):
    out = tmp_path / "r.html"
    _one_line_exit_2(cli("report", runs.mix1d, runs.moons, "--out", out), "different data", "--allow-mixed-data")
    assert not out.exists()
    r = cli("report", runs.mix1d, runs.moons, "--out", out, "--allow-mixed-data", *QUICK_REPORT)
    assert r.returncode == 0, r.stderr
    text = out.read_text()
    assert page_json(text, "ddpmlab-data")["mixed_data"] and "trained on different data" in text


def test_corrupt_evaluation_json_is_one_line(runs, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(runs.mix1d, run)
    (run / "evaluation.json").write_text('{"format": "ddpmlab-eval')
    _one_line_exit_2(cli("report", run, "--out", tmp_path / "r.html"), "evaluation.json", "unreadable")


def test_an_evaluation_json_without_per_step_terms_is_completed(runs, tmp_path):
    """An evaluation.json written before the terms were kept: the page computes them and says so."""
    run = tmp_path / "run"
    shutil.copytree(runs.mix1d, run)
    ev = json.loads((run / "evaluation.json").read_text())
    for who in ("model", "oracle"):
        for key in ("terms_nats", "terms_nats_se"):
            ev[who]["bound"].pop(key)
    (run / "evaluation.json").write_text(json.dumps(ev))
    out = tmp_path / "r.html"
    assert cli("report", run, "--out", out, *QUICK_REPORT).returncode == 0
    text = out.read_text()
    assert "has no per-step terms" in text
    sums = page_json(text, "ddpmlab-data")["runs"][0]["per_step_sums"]
    for who in ("model", "oracle"):
        assert sums[who]["sum_of_terms"] == pytest.approx(sums[who]["bound"], abs=1e-9)

"""A report that reads at a glance (issue 23, item 4): short group names that name only the settings the runs
use, the groups side by side, one colour per group in every figure, the samples that fall off a picture
counted, losses of different objectives on axes of their own, the sampler, steps and eta beside every sample
metric, and one unit system per picture, labelled.

The runs: two groups of two seeds on the 2-D moons (an MLP of width 16 sampled ancestrally; width 32 sampled
by DDIM at eta 0.5), a flow-matching run, a run of a network of the test's own, and a run on a user's file
(standardised columns), all trained for a few steps: their numbers mean nothing, the page is what is tested.
"""
from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from _report_runs import QUICK_REPORT, cli, user_table
from ddpmlab.evaluation.finished import run_data
from ddpmlab.report import plots
from ddpmlab.report.collect import ReportSettings, RunView, add_pictures
from ddpmlab.report.compare import group_runs, key_labels, objective_text, used_keys
from ddpmlab.report.marginals import marginal_slider
from ddpmlab.runs.format import load_run

SMALL = ["--set", "model.depth=1", "--set", "schedule.steps=10", "--set", "train.iters=20",
         "--set", "train.batch_size=128", "--no-progress"]
GROUPS = {  # group -> (its runs' extra settings, the name the report must give it, how its samples are drawn)
    "a": (["--set", "model.width=16"], "width=16, sampler=ancestral", "ancestral, 10 steps, eta -"),
    "b": (["--set", "model.width=32", "--set", "sample.sampler='ddim'", "--set", "sample.eta=0.5"],
          "width=32, sampler=ddim", "ddim, 10 steps, eta 0.5"),
}
OWN_NET = """\
import torch
from torch import nn


class Net(nn.Module):  # epsilon from (x, tau): a small MLP of the test's own
    def __init__(self, hidden=8):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(3, hidden), nn.SiLU(), nn.Linear(hidden, 2))

    def forward(self, x, tau):
        return self.body(torch.cat([x, tau.reshape(-1, 1).to(x.dtype)], 1))
"""


def _ok(r):
    assert r.returncode == 0, r.stderr
    return r


def _view(path, trust_code: bool = False) -> RunView:
    """A run as the report sees it, without its evaluation (what naming and pictures need)."""
    run = load_run(path, trust_code=trust_code)
    kind, dist = run_data(run)
    return RunView(path=Path(path), run=run, kind=kind, dist=dist, evaluation={}, evaluation_source="", rows=[],
                   metrics=None)


@pytest.fixture(scope="module")
def glance(tmp_path_factory):
    root = tmp_path_factory.mktemp("glance")
    out = SimpleNamespace(root=root, groups={})
    for g, (extra, _, _) in GROUPS.items():
        out.groups[g] = [root / f"{g}_s{seed}" for seed in (0, 1)]
        for seed, d in zip((0, 1), out.groups[g]):
            _ok(cli("train", "--config", "moons", *SMALL, *extra, "--set", f"train.seed={seed}", "--out", d))
    out.report = root / "report.html"
    _ok(cli("report", *out.groups["a"], *out.groups["b"], "--out", out.report, *QUICK_REPORT))
    out.text = out.report.read_text()
    return out


@pytest.fixture(scope="module")
def others(glance):
    """A flow run and a run of the test's own network on the same data, and a run on a user's file."""
    root = glance.root
    _ok(cli("train", "--config", "moons_flow", *SMALL, "--set", "model.width=16", "--out", root / "flow"))
    (root / "code").mkdir()
    (root / "code" / "glance_net.py").write_text(OWN_NET)
    with pytest.MonkeyPatch.context() as mp:
        mp.syspath_prepend(str(root / "code"))
        _ok(cli("train", "--config", "moons", *SMALL, "--set", "model.arch='glance_net:Net'", "--set",
                "model.net_kwargs={hidden=8}", "--trust-code", "--out", root / "own"))
        own = _view(root / "own", trust_code=True)
    csv = root / "user.csv"
    np.savetxt(csv, user_table(), delimiter=",", header="height,weight", comments="")
    _ok(cli("train", "--config", "default", "--data", csv, *SMALL, "--set", "model.width=16", "--out", root / "user"))
    return SimpleNamespace(flow=_view(root / "flow"), own=own, user=_view(root / "user"),
                           mlp=_view(glance.groups["a"][0]))


def page_json(text: str, element_id: str):
    m = re.search(rf'<script type="application/json" id="{element_id}">(.*?)</script>', text, flags=re.S)
    return json.loads(m.group(1))


class _GroupPlots(HTMLParser):
    """The ids of the figures inside each group's column (``<div class="group" id="groupN">``)."""

    def __init__(self):
        super().__init__()
        self.stack, self.plots = [], {}

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        group = next((g for _, g in reversed(self.stack) if g), None)
        if tag == "div" and "group" in (a.get("class") or "").split():
            group = a["id"]
            self.plots[group] = []
        if tag == "div" and a.get("class") == "plot" and group:
            self.plots[group].append(a["id"])
        if tag not in ("input", "meta"):  # elements with an end tag
            self.stack.append((tag, group))

    def handle_endtag(self, tag):
        while self.stack and self.stack.pop()[0] != tag:
            pass


def group_figures(text: str) -> dict:
    """group id -> the figures (each a list of its trace lists: the figure's, and a slider's every frame)."""
    parser = _GroupPlots()
    parser.feed(text.split("<body>", 1)[1].split('<script type="application/json"', 1)[0])
    figures, sliders = page_json(text, "ddpmlab-figures"), page_json(text, "ddpmlab-sliders")
    frames = {s["plot"]: s["frames"] for s in sliders.values()}
    return {g: [[figures[i]["data"], *frames.get(i, [])] for i in ids] for g, ids in parser.plots.items()}


def _colors(trace) -> set:
    return {c for c in ((trace.get("marker") or {}).get("color"), (trace.get("line") or {}).get("color"),
                        trace.get("fillcolor")) if isinstance(c, str)}


# --- short names ---------------------------------------------------------------------------------------------

class TestShortNames:
    def test_groups_are_named_by_the_keys_they_use_that_differ(self, glance):
        groups = page_json(glance.text, "ddpmlab-data")["groups"]
        assert [g["label"] for g in groups] == [GROUPS["a"][1], GROUPS["b"][1]]  # not eta: ancestral takes none
        assert [g["runs"] for g in groups] == [[p.name for p in glance.groups[k]] for k in "ab"]

    def test_a_flow_option_or_a_schedule_never_names_a_ddpm_or_a_flow_run(self, glance, others):
        ddpm = others.mlp
        assert {"train.time_sampling", "train.flow_target", "sample.ode_solver", "sample.eta"} \
            .isdisjoint(used_keys(ddpm))  # flow options; the ancestral sampler takes no solver and no eta
        assert "schedule.beta_end" in used_keys(ddpm) and "schedule.beta" not in used_keys(ddpm)  # linear
        assert not any(k.startswith("schedule.") for k in used_keys(others.flow))  # a flow has no schedule
        labels = key_labels([ddpm, others.flow])
        assert labels == ["family=ddpm, objective=simple, sampler=ancestral, steps=0",
                          "family=flow, objective=flow_matching, sampler=ode, steps=25"]
        assert [g.label for g in group_runs([ddpm, others.flow])] == [ddpm.name, "flow"]  # one run each: its name

    def test_your_own_network_is_not_named_by_the_mlp_s_unused_width(self, others):
        assert others.own.config["model"]["width"] != others.mlp.config["model"]["width"]  # differ, unused by one
        assert {"model.width", "model.depth", "model.time_dim"}.isdisjoint(used_keys(others.own))
        assert key_labels([others.own, others.mlp]) == ["arch=glance_net:Net", "arch=mlp"]


# --- side by side, one colour per group ----------------------------------------------------------------------

class TestColours:
    def test_every_figure_of_a_group_draws_its_model_in_the_group_s_colour(self, glance):
        groups = page_json(glance.text, "ddpmlab-data")["groups"]
        colours = [g["color"] for g in groups]
        assert len(set(colours)) == 2 and plots.DATA_COLOR not in colours and plots.ORACLE_COLOR not in colours
        columns = group_figures(glance.text)
        assert sorted(columns) == ["group0", "group1"]
        for i, colour in enumerate(colours):
            other = colours[1 - i]
            figures = columns[f"group{i}"]
            assert len(figures) >= 2  # samples beside data, the slider
            model = [t for fig in figures for traces in fig for t in traces
                     if t.get("name", "").startswith(("samples", "model's chain"))]
            assert model and all(_colors(t) == {colour} for t in model)  # B's samples in B's colour
            assert not any(other in _colors(t) for fig in figures for traces in fig for t in traces)

    def test_the_training_curves_and_tables_use_the_same_colours(self, glance):
        groups = page_json(glance.text, "ddpmlab-data")["groups"]
        curves = next(f for f in page_json(glance.text, "ddpmlab-figures").values()
                      if f["layout"]["title"]["text"].startswith("training loss"))
        for g in groups:
            mine = [t for t in curves["data"] if t.get("name", "").startswith(g["label"] + ":")]
            assert mine and all(_colors(t) == {g["color"]} for t in mine)
            assert f'<div class="group" id="group{groups.index(g)}" style="border-top-color:{g["color"]}">' \
                   in glance.text


# --- off-plot samples, units, objectives, samplers ------------------------------------------------------------

def _samples_figures(text: str) -> list[dict]:
    return [f for f in page_json(text, "ddpmlab-figures").values()
            if any(t.get("name") == "samples" for t in f["data"])]


def _outside_bounds(fig) -> tuple[int, int]:
    """How many of the figure's samples lie outside its axes' ranges: (narrowed, widened) by 1e-3 of the
    range, for the 4 significant digits the page keeps."""
    s = next(t for t in fig["data"] if t.get("name") == "samples")
    pts = np.array([s["x"], s["y"]], dtype=np.float64).T
    ranges = [fig["layout"]["xaxis"]["range"], fig["layout"]["yaxis"]["range"]]
    out = []
    for sign in (1, -1):
        inside = np.ones(len(pts), dtype=bool)
        for i, (lo, hi) in enumerate(ranges):
            pad = sign * 1e-3 * (hi - lo)
            inside &= (pts[:, i] >= lo + pad) & (pts[:, i] <= hi - pad)
        out.append(int((~inside).sum()))
    return out[1], out[0]


OFF = re.compile(r"(\d+) of (\d+) samples outside the plotted range")


class TestOffPlot:
    def test_the_count_of_samples_off_the_picture_is_the_count_drawn_outside(self, glance):
        figs = _samples_figures(glance.text)
        captions = OFF.findall(glance.text)
        assert len(figs) == len(captions) == 2
        counts = []
        for fig, (k, n) in zip(figs, captions):
            lo, hi = _outside_bounds(fig)
            assert lo <= int(k) <= hi and int(n) == len(fig["data"][1]["x"])
            assert fig["layout"]["annotations"][1]["text"] == f"samples: {k} of {n} off the plot"
            counts.append(int(k))
        assert max(counts) > 0  # these barely trained models do put samples off the data's picture

    def test_a_point_beyond_the_window_is_counted(self):
        window = [(-1.0, 1.0), (0.0, 2.0)]
        pts = np.array([[0.0, 1.0], [1.5, 1.0], [0.0, -0.1], [np.nan, 1.0], [1.0, 2.0]])
        assert plots.outside(pts, window) == 3


class TestUnits:
    def test_each_picture_has_one_labelled_unit_system(self, glance):
        figures = page_json(glance.text, "ddpmlab-figures")
        seen = set()
        for f in figures.values():
            titles = " ".join(str((v.get("title") or {}).get("text", "")) for k, v in f["layout"].items()
                              if k.startswith(("xaxis", "yaxis")) and isinstance(v, dict))
            units = {u for u in ("data units", "model units") if u in titles}
            assert len(units) <= 1, titles
            seen |= units
        assert seen == {"data units", "model units"}

    def test_a_standardised_file_shows_samples_in_data_units_and_the_chain_in_model_units(self, others):
        view = others.user
        add_pictures(view, ReportSettings(n_chain=200, n_shown=300, frames=3))
        fig = plots.samples_vs_data(view)
        assert {fig["layout"][a]["title"]["text"] for a in ("xaxis", "yaxis")} == {"x1 (data units)",
                                                                               "x2 (data units)"}
        samples = np.array(fig["data"][1]["x"], dtype=np.float64)
        assert abs(np.nanmedian(samples) - 50) < 15  # the file's first column: about 50 +- 10
        s = marginal_slider(view)
        assert "model units: standardised columns" in s["figure"]["layout"]["xaxis"]["title"]["text"]
        chain = next(t for t in s["frames"][0] if t["name"].startswith("model's chain"))
        assert abs(np.nanmedian(np.array(chain["x"], dtype=np.float64))) < 5  # standardised


class TestObjectives:
    def test_losses_of_different_objectives_get_axes_of_their_own(self):
        rows = lambda scale: [{"step": i, "loss": scale * (1 + 1 / (i + 1))} for i in range(40)]  # noqa: E731
        fig = plots.training_curves([("A", "#111111", [rows(1)], "simple"), ("B", "#222222", [rows(1000)], "vlb")])
        axes = {(t["name"].split(":")[0], t.get("yaxis")) for t in fig["data"]}
        assert axes == {("A", "y"), ("B", "y2")}
        assert "simple" in fig["layout"]["yaxis"]["title"]["text"] and "vlb" in fig["layout"]["yaxis2"]["title"]["text"]
        assert "not comparable" in fig["layout"]["title"]["text"]
        one = plots.training_curves([("A", "#111111", [rows(1)], "simple"), ("B", "#222222", [rows(2)], "simple")])
        assert {t.get("yaxis") for t in one["data"]} == {"y"} and "yaxis2" not in one["layout"]

    def test_the_objective_names_its_options_that_are_not_at_their_defaults(self, glance, others):
        assert objective_text(others.mlp) == "simple" and objective_text(others.flow) == "flow_matching"
        hybrid = _view(glance.groups["a"][0])
        hybrid.run.info["config"] = json.loads(json.dumps(hybrid.config))
        hybrid.config["train"].update(objective="hybrid", hybrid_weight=0.01)
        hybrid.config["model"]["var_type"] = "learned_range"
        assert objective_text(hybrid) == "hybrid (hybrid_weight=0.01)"


class TestSamplerLine:
    def test_every_sample_metric_of_each_group_names_its_sampler_steps_and_eta(self, glance):
        table = glance.text.split("Metrics by group", 1)[1].split("</table>", 1)[0]
        rows = re.findall(r"<tr>(.*?)</tr>", table, flags=re.S)[1:]
        sample_rows = [r for r in rows if re.match(r"<td>(sliced W1|MMD)</td>", r)]
        assert len(sample_rows) == 2
        for r in sample_rows:
            cells = re.findall(r"<td>(.*?)</td>", r, flags=re.S)
            for cell, g in zip(cells[1:3], "ab"):
                assert f'<div class="muted drawn">{GROUPS[g][2]}</div>' in cell

    def test_each_run_s_metrics_name_the_sampler_of_its_evaluation(self, glance):
        full = glance.text.split("every run in full", 1)[1]
        for g in "ab":
            assert full.count(f'<span class="drawn">{GROUPS[g][2]}</span>') == 2 * 2  # 2 runs x 2 metrics


# --- the browser test ---------------------------------------------------------------------------------------

try:  # Chromium started once per module as test_report_browser starts it, or the browser test skips and says why
    from test_report_browser import _open, browser  # noqa: F401
except pytest.skip.Exception as exc:
    _why_no_browser = str(exc)

    @pytest.fixture(scope="module")
    def browser():
        pytest.skip(_why_no_browser)


COLUMNS = """
return [...document.querySelectorAll('div.groups > div.group')].map(function (el) {
  const r = el.getBoundingClientRect(), svg = el.querySelector('div.plot .main-svg');
  const off = el.querySelector('p.off-plot'), fig = svg && svg.closest('div.plot');
  const samples = fig ? fig.data.find(t => t.name === 'samples') : null;
  return {name: el.querySelector('h3.group-name').textContent, left: r.left, right: r.right, top: r.top,
          width: r.width, height: r.height, drawn: !!svg, visible: getComputedStyle(el).visibility === 'visible',
          off: off && off.offsetParent !== null ? off.textContent : null,
          annotations: fig ? [...fig.querySelectorAll('.annotation-text')].map(a => a.textContent) : [],
          samples: samples ? {x: samples.x, y: samples.y} : null,
          ranges: fig ? [fig.layout.xaxis.range, fig.layout.yaxis.range] : null};
});"""


def test_two_groups_read_at_a_glance_in_headless_chromium(browser, glance):
    """Short names, both groups side by side in the window, the off-plot count shown and right."""
    browser.set_window_size(1280, 1600)
    _open(browser, glance.report)
    columns = browser.execute_script(COLUMNS)
    assert [c["name"] for c in columns] == [GROUPS["a"][1], GROUPS["b"][1]]
    assert all(len(c["name"]) <= 30 for c in columns)  # short: the keys that differ and are used
    a, b = columns
    width = browser.execute_script("return document.documentElement.clientWidth;")
    for c in columns:  # each column: a real width, inside the window, its pictures drawn
        assert c["visible"] and c["drawn"] and c["width"] > 300 and c["height"] > 300
        assert 0 <= c["left"] and c["right"] <= width
    assert a["right"] <= b["left"] and abs(a["top"] - b["top"]) < 2  # side by side, not one below the other
    for c in columns:
        (k, n), = OFF.findall(c["off"])
        fig = {"data": [{}, {"name": "samples", **c["samples"]}],
               "layout": {"xaxis": {"range": c["ranges"][0]}, "yaxis": {"range": c["ranges"][1]}}}
        lo, hi = _outside_bounds(fig)
        assert lo <= int(k) <= hi and int(n) == len(c["samples"]["x"])
        assert f"samples: {k} of {n} off the plot" in c["annotations"]  # drawn in the figure too
    assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []

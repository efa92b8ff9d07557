"""Hostile run files against ``ddpmlab report`` and ``ddpmlab figures`` (issue 21, classes 2 and 6).

- markup: strings read from a run directory (its name, data.name, config values, the held-out rule) reach
  the page as text, never as markup or script: each escape helper against every dangerous character, the
  built pages parsed for foreign elements and attributes, and the markup browser test, which opens them in
  headless Chromium, checks that no injected script ran and that every figure drew;
- report files: a malformed number or object in run.json, evaluation.json or metrics.csv (wrong type,
  NaN, infinity, a huge value, missing, nested wrong) ends in one line naming the file and the field, exit 2;
- options: invalid ``report`` and ``figures`` options are argparse's one line, exit 2;
- warnings: ``figures`` on a valid run (a constant column, a path with '$' and CJK characters) says
  nothing on stderr.
"""
from __future__ import annotations

import html
import json
import math
import re
import shutil
import warnings
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from _report_runs import QUICK_REPORT, TINY
from hostile_support import run_main
from ddpmlab.report.escape import esc, plotly_figure, script_json
from ddpmlab.report.page import Page
from ddpmlab.runs.fields import NUMBERS, read_field

DANGEROUS = ("<", ">", "&", '"', "'", "\u2028", "\u2029", "</script>", "<!--", "-->", "<script>", "<!--<script>",
             "</SCRIPT >", "<img src=x onerror=window.__pwned=1>", '"onload="window.__pwned=1')
PAYLOAD = ("</script><script>window.__pwned=1;document.title='pwned'</script><!--<script>\u2028\u2029"
           "'\"><img src=x onerror=window.__pwned=2> \"onload=window.__pwned=3 &amp; <b>bold</b> $\\frac{$")
NAMES = ("x<!--<script>", 'a"><img src=x onerror=window.__pwned=4>', "<b><svg onload=window.__pwned=5>\u2028")
DELETE = object()


def _one_line(code: int, err: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def _ok(*argv) -> str:
    code, out, err = run_main(*argv)
    assert code == 0 and err == "", err
    return out


def _edit(path: Path, key: str, value) -> None:
    """Set (or, with DELETE, remove) the dotted ``key`` of the JSON file ``path``."""
    obj = json.loads(path.read_text())
    *parents, last = key.split(".")
    node = obj
    for k in parents:
        node = node[k]
    if value is DELETE:
        del node[last]
    else:
        node[last] = value
    path.write_text(json.dumps(obj))  # NaN and Infinity as Python writes them


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict:
    """A 1-D mixture run and a run on a user's file (a constant column, in a directory named with '$' and CJK
    characters), each with a quick evaluation.json."""
    root = tmp_path_factory.mktemp("markup")
    folder = root / "données 日本 $\\frac{$"
    folder.mkdir()
    rng = np.random.default_rng(0)
    table = np.c_[rng.normal(size=240), np.full(240, 5.0)]
    np.savetxt(folder / "rows.csv", table, delimiter=",", header="a,b", comments="")
    short = ["--set", "schedule.steps=10", "--set", "train.iters=10"]
    _ok("train", "--config", "default", *TINY, *short, "--out", root / "mix")
    _ok("train", "--config", "default", "--data", folder / "rows.csv", *TINY, *short, "--out", root / "file")
    for name in ("mix", "file"):
        _ok("evaluate", root / name, "--n-bound", "200", "--n-ode", "0", "--samples", "200")
    return {"root": root, "mix": root / "mix", "file": root / "file"}


@pytest.fixture(scope="module")
def pages(base) -> dict:
    """Two reports from hostile run files: a comparison of three runs named ``NAMES`` (data.name, config
    values and the held-out rule all ``PAYLOAD``; one run with its evaluation.json, two evaluated by the
    report), and the file run alone (its name in the page's title)."""
    root = base["root"] / "hostile"
    root.mkdir()
    dirs = [root / n for n in NAMES]
    for i, (d, src) in enumerate(zip(dirs, ("mix", "mix", "file"))):
        shutil.copytree(base[src], d)
        _edit(d / "run.json", "data.name", PAYLOAD if src == "mix" else f"file:{PAYLOAD}")
        _edit(d / "run.json", "config.model.net_kwargs", {"note": f"{PAYLOAD}{i}"})  # the groups' labels
        if i > 0:
            (d / "evaluation.json").unlink()
    _edit(dirs[2] / "run.json", "data.heldout.rule", PAYLOAD)
    out = {"comparison": root / "comparison.html", "single": root / "single.html"}
    _ok("report", *dirs, "--allow-mixed-data", "--out", out["comparison"], *QUICK_REPORT)
    _ok("report", dirs[2], "--out", out["single"], *QUICK_REPORT)
    return out


# --- markup: the escape helpers -----------------------------------------------------------------------------

@pytest.mark.parametrize("text", DANGEROUS)
def test_esc_leaves_no_markup_character(text):
    out = esc(text)
    assert not set(out) & set("<>\"'") and html.unescape(out) == text


def test_script_json_is_inert_inside_a_script_element():
    obj = {f"key{text}": [text, {"nested": text}] for text in DANGEROUS}
    obj.update(nan=float("nan"), inf=float("-inf"), number=1.5)
    text = script_json(obj)
    assert not set(text) & {"<", ">", "&", "\u2028", "\u2029"}
    back = json.loads(text)
    assert back["nan"] is None and back["inf"] is None and back["number"] == 1.5  # JSON has no NaN: null
    assert {k: v for k, v in back.items() if k.startswith("key")} == {k: v for k, v in obj.items()
                                                                       if k.startswith("key")}


def test_plotly_figure_makes_every_string_plain_text():
    fig = {"data": [{"type": "scatter", "name": "<b>run</b> & <a href='javascript:x'>", "x": [1, 2.5, None]}],
           "layout": {"title": {"text": "</script><!--"}, "height": 340}}
    before = json.dumps(fig)
    out = plotly_figure(fig)
    assert json.dumps(fig) == before  # the caller's figure is left as it was
    assert out["data"][0]["name"] == "&lt;b&gt;run&lt;/b&gt; &amp; &lt;a href='javascript:x'&gt;"
    assert out["layout"]["title"]["text"] == "&lt;/script&gt;&lt;!--"
    assert out["data"][0]["x"] == [1, 2.5, None] and out["data"][0]["type"] == "scatter"
    assert out["layout"]["height"] == 340


class _Elements(HTMLParser):
    """Every element and attribute name of a page, as an HTML parser reads them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.attrs = [], set()

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.attrs |= {a for a, _ in attrs}


PAGE_TAGS = {"html", "head", "meta", "title", "style", "script", "body", "h1", "h2", "h3", "h4", "p", "b", "div",
             "span", "table", "thead", "tbody", "tr", "th", "td", "details", "summary", "label", "input", "code"}
PAGE_ATTRS = {"lang", "charset", "name", "content", "type", "id", "class", "style", "for", "min", "max", "step",
              "value", "data-plot", "data-shown", "open"}


def _check_markup(text: str) -> dict:
    """The page holds only the report's own elements and attributes, and its five scripts: plotly.js, three
    JSON islands with no '<', '>', '&' or line separator, and the page's script. Returns the islands."""
    page = _Elements()
    page.feed(text)
    assert set(page.tags) <= PAGE_TAGS and page.attrs <= PAGE_ATTRS, (set(page.tags) - PAGE_TAGS,
                                                                      page.attrs - PAGE_ATTRS)
    assert page.tags.count("script") == 5
    islands = re.findall(r'<script type="application/json" id="([\w-]+)">(.*?)</script>', text, flags=re.S)
    assert [k for k, _ in islands] == ["ddpmlab-figures", "ddpmlab-sliders", "ddpmlab-data"]
    for _, body in islands:
        assert not set(body) & {"<", ">", "&", "\u2028", "\u2029"}
    return {k: json.loads(body) for k, body in islands}


def test_a_page_of_hostile_strings_holds_them_as_text():
    page = Page(PAYLOAD)
    page.add(f"<h2>{esc(PAYLOAD)}</h2>")
    fig = {"data": [{"type": "scatter", "name": PAYLOAD, "x": [0, 1], "y": [1, 0]}], "layout": {"title": PAYLOAD}}
    page.add(page.figure(fig))
    page.add(page.slider({"figure": fig, "frames": [fig["data"], fig["data"]], "labels": [PAYLOAD, "t"],
                          "initial": 0}, what=PAYLOAD))
    page.data = {"runs": [{"name": n} for n in NAMES]}
    islands = _check_markup(page.render("/* plotly.js */"))
    assert [r["name"] for r in islands["ddpmlab-data"]["runs"]] == list(NAMES)
    assert islands["ddpmlab-sliders"]["slider0"]["labels"][0] == PAYLOAD  # shown by textContent: kept as is
    assert islands["ddpmlab-figures"]["fig0"]["data"][0]["name"] == html.escape(PAYLOAD, quote=False)


@pytest.mark.parametrize("name", ["comparison", "single"])
def test_reports_of_hostile_run_files_hold_them_as_text(pages, name):
    text = pages[name].read_text()
    islands = _check_markup(text)
    runs = islands["ddpmlab-data"]["runs"]
    assert [r["name"] for r in runs] == (list(NAMES) if name == "comparison" else [NAMES[2]])
    visible = html.unescape(re.sub(r"<[^>]+>", "", text.split("<body>", 1)[1]))
    assert PAYLOAD in visible and NAMES[-1] in visible  # shown, as written, not dropped


# --- markup: the markup browser test -------------------------------------------------------------------------

try:  # Chromium started once per module as test_report_browser starts it, or the browser test skips and says why
    from test_report_browser import _open, browser  # noqa: F401
except pytest.skip.Exception as exc:
    _why_no_browser = str(exc)

    @pytest.fixture(scope="module")
    def browser():
        pytest.skip(_why_no_browser)


def test_markup_in_headless_chromium(browser, pages):
    """The markup browser test: no injected script runs, and every figure draws (closed groups opened)."""
    from selenium.webdriver.support.ui import WebDriverWait

    for name, path in pages.items():
        _open(browser, path)  # data-ready: every visible figure drawn
        state = browser.execute_script(
            "document.querySelectorAll('details').forEach(function (d) { d.open = true; });"
            "return {pwned: window.__pwned === undefined ? null : window.__pwned, title: document.title,"
            " scripts: document.scripts.length, foreign: document.querySelectorAll('img, [onerror], [onload]').length,"
            " names: JSON.parse(document.getElementById('ddpmlab-data').textContent).runs.map(r => r.name)};")
        assert state["pwned"] is None and state["scripts"] == 5 and state["foreign"] == 0
        assert state["names"] == (list(NAMES) if name == "comparison" else [NAMES[2]])
        assert state["title"] == ("ddpmlab report: 3 runs in 3 groups" if name == "comparison"
                                  else f"ddpmlab report: {NAMES[2]}")
        WebDriverWait(browser, 60).until(lambda d: d.execute_script(  # every figure, the opened groups' too
            "return [...document.querySelectorAll('div.plot')].every(el => el.querySelector('.main-svg'));"))
        legends = browser.execute_script(
            "return [...document.querySelectorAll('.legendtext')].map(e => e.textContent);")
        assert any(t.startswith(NAMES[2]) for t in legends), legends  # plotly shows the name, <b> too
        assert browser.execute_script("return window.__pwned === undefined && document.title !== 'pwned';")
        assert [e for e in browser.get_log("browser") if e["level"] == "SEVERE"] == []


# --- report files: malformed numbers and objects --------------------------------------------------------------

NAN, INF = float("nan"), float("inf")
MALFORMED = [  # (id, run, file, dotted key, value or DELETE, the field the line names)
    ("summary-iters-markup", "mix", "run.json", "summary.iters", "<script>window.__pwned=1</script>", "summary.iters"),
    ("summary-iters-bool", "mix", "run.json", "summary.iters", True, "summary.iters"),
    ("summary-iters-huge", "mix", "run.json", "summary.iters", 10 ** 30, "summary.iters"),
    ("summary-iters-negative", "mix", "run.json", "summary.iters", -3, "summary.iters"),
    ("summary-loss-nan", "mix", "run.json", "summary.final_loss", NAN, "summary.final_loss"),
    ("summary-seconds-inf", "mix", "run.json", "summary.train_seconds", INF, "summary.train_seconds"),
    ("summary-seconds-text", "mix", "run.json", "summary.train_seconds", "1", "summary.train_seconds"),
    ("summary-a-list", "mix", "run.json", "summary", [1, 2], "summary"),
    ("summary-a-number", "mix", "run.json", "summary", 5, "summary"),
    ("n-train-fraction", "mix", "run.json", "data.n_train", 2.5, "data.n_train"),
    ("heldout-n-markup", "file", "run.json", "data.heldout.n", "<img src=x onerror=alert(1)>", "data.heldout.n"),
    ("heldout-n-a-list", "file", "run.json", "data.heldout.n", [30], "data.heldout.n"),
    ("heldout-a-string", "file", "run.json", "data.heldout", "all", "data.heldout"),
    ("heldout-rule-a-number", "file", "run.json", "data.heldout.rule", 5, "data.heldout.rule"),
    ("bound-total-text", "mix", "evaluation.json", "model.bound.total_nats", "a", "model.bound.total_nats"),
    ("bound-total-nan", "mix", "evaluation.json", "model.bound.total_nats", NAN, "model.bound.total_nats"),
    ("bound-total-inf", "mix", "evaluation.json", "oracle.bound.total_nats", -INF, "oracle.bound.total_nats"),
    ("bound-total-huge", "mix", "evaluation.json", "model.bound.total_nats", 10 ** 400, "model.bound.total_nats"),
    ("bound-total-bool", "mix", "evaluation.json", "model.bound.total_nats", False, "model.bound.total_nats"),
    ("bound-total-missing", "mix", "evaluation.json", "model.bound.total_nats", DELETE, "model.bound.total_nats"),
    ("model-a-number", "mix", "evaluation.json", "model", 5, "model"),
    ("bound-a-string", "mix", "evaluation.json", "model.bound", "abc", "model.bound"),
    ("terms-a-string", "mix", "evaluation.json", "model.bound.terms_nats", "abc", "model.bound.terms_nats"),
    ("terms-of-strings", "mix", "evaluation.json", "model.bound.terms_nats", ["a", "b"], "model.bound.terms_nats"),
    ("oracle-terms-short", "mix", "evaluation.json", "oracle.bound.terms_nats", [1.0], "oracle.bound.terms_nats"),
    ("oracle-missing", "mix", "evaluation.json", "oracle", DELETE, "oracle."),
    ("fractions-empty", "mix", "evaluation.json", "model.samples.component_fractions", [],
     "model.samples.component_fractions"),
    ("w1-nested", "mix", "evaluation.json", "model.samples.w1", [[1.0]], "model.samples.w1"),
    ("w1-floor-missing", "mix", "evaluation.json", "oracle.samples.w1_noise_floor", DELETE,
     "oracle.samples.w1_noise_floor"),
    ("ode-a-string", "mix", "evaluation.json", "model.ode", "solved", "model.ode"),
    ("entropy-missing", "mix", "evaluation.json", "data.entropy_nats", DELETE, "data.entropy_nats"),
    ("kind-of-other-data", "mix", "evaluation.json", "kind", "digits", "kind"),
    ("heldout-mmd-text", "file", "evaluation.json", "model.samples.mmd", "0.1", "model.samples.mmd"),
    ("heldout-sliced-w1-missing", "file", "evaluation.json", "model.samples.sliced_w1", DELETE,
     "model.samples.sliced_w1"),
    ("heldout-nll-inf", "file", "evaluation.json", "model.ode.nll_nats", INF, "model.ode.nll_nats"),
]


@pytest.mark.parametrize("case", MALFORMED, ids=[c[0] for c in MALFORMED])
def test_a_malformed_run_file_is_one_line_naming_the_file_and_field(base, tmp_path, case):
    _, src, file, key, value, names = case
    run = tmp_path / "run"
    shutil.copytree(base[src], run)
    _edit(run / file, key, value)
    out = tmp_path / "r.html"
    code, _, err = run_main("report", run, "--out", out, *QUICK_REPORT)
    _one_line(code, err, "ddpmlab report: error: ", str(run / file), names)
    assert not out.exists()


def test_a_metrics_row_of_a_huge_step_is_one_line(base, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base["mix"], run)
    with open(run / "metrics.csv", "a") as f:
        f.write(f"{10 ** 30},1.0,0.001,0.5\n")
    code, _, err = run_main("report", run, "--out", tmp_path / "r.html", *QUICK_REPORT)
    _one_line(code, err, str(run / "metrics.csv"), "step")


def test_an_evaluation_json_nested_too_deeply_is_one_line(base, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(base["mix"], run)
    (run / "evaluation.json").write_text("[" * 100_000)
    code, _, err = run_main("report", run, "--out", tmp_path / "r.html", *QUICK_REPORT)
    _one_line(code, err, str(run / "evaluation.json"), "nested too deeply")


def test_report_draws_that_memory_cannot_hold_are_refused_first(base, tmp_path):
    """Without an evaluation.json the report evaluates the run: sizes beyond memory are one line."""
    run = tmp_path / "run"
    shutil.copytree(base["mix"], run)
    (run / "evaluation.json").unlink()
    code, _, err = run_main("report", run, "--out", tmp_path / "r.html", "--n-bound", "1e15")
    _one_line(code, err, "--n-bound 1000000000000000 needs about")


@pytest.mark.parametrize("value, kind, shown", [
    (True, int, "an integer"), (2.0, int, "an integer"), (2 ** 63, int, "an integer"), (NAN, float, "finite"),
    (10 ** 400, float, "finite"), ("1", float, "finite"), ([1, "2"], NUMBERS, "list of finite numbers"),
    ([1, True], NUMBERS, "list of finite numbers"), (None, str, "a string")])
def test_read_field_refuses_a_value_of_another_kind(value, kind, shown):
    with pytest.raises(ValueError, match=f"^a.b must be .*{shown}"):
        read_field({"a": {"b": value}}, "a.b", kind)


def test_read_field_names_where_the_path_breaks():
    with pytest.raises(ValueError, match=r"^a must be an object, got 'x'$"):
        read_field({"a": "x"}, "a.b", int)
    with pytest.raises(ValueError, match=r"^a.b is missing$"):
        read_field({"a": {}}, "a.b", int)
    assert read_field({"a": {}}, "a.b", int, 7) == 7
    assert read_field({"a": {"b": None}}, "a.b", float, nullable=True) is None
    with pytest.raises(ValueError, match="at least 0"):
        read_field({"a": -1}, "a", int, low=0)
    assert read_field({"a": [1, 2.5]}, "a", NUMBERS) == [1, 2.5] and read_field({"a": 10 ** 18}, "a", int) == 10 ** 18


# --- options ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["report", "RUN", "--seed", "-1"], ["report", "RUN", "--seed", "1e400"], ["report", "RUN", "--n-bound", "0"],
    ["report", "RUN", "--n-bound", "-5"], ["report", "RUN", "--n-bound", "1"], ["report", "RUN", "--n-ode", "-1"],
    ["report", "RUN", "--n-ode", "1"], ["report", "RUN", "--samples", "0"], ["report", "RUN", "--samples", "2.5"],
    ["report", "RUN", "--n-bound", "nan"], ["figures", "RUN", "-n", "0"], ["figures", "RUN", "-n", "1"],
    ["figures", "RUN", "-n", "-3"], ["figures", "RUN", "--seed", "-1"], ["figures", "RUN", "--seed", "0.5"]],
    ids=lambda a: " ".join(a))
def test_an_invalid_option_is_argparses_one_line(tmp_path, argv):
    out = tmp_path / "out.html"
    code, _, err = run_main(*argv, *(["--out", out] if argv[0] == "report" else []))
    _one_line(code, err, f"ddpmlab {argv[0]}: error: argument {argv[2]}")
    assert not out.exists()


# --- warnings ----------------------------------------------------------------------------------------------------

def test_figures_of_a_valid_run_say_nothing_on_stderr(base, tmp_path):
    """A constant column (once bins of equal edges: 0 / 0) and a path with '$' (once a mathtext error) and
    CJK characters (once a warning per glyph no font has), with two samples."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, out, err = run_main("figures", base["file"], "-n", "2", "--out", tmp_path / "figs")
    assert code == 0 and err == "", err
    assert [str(w.message) for w in caught if not issubclass(w.category, DeprecationWarning)] == []
    assert {p.name for p in (tmp_path / "figs").iterdir()} >= {"scatter.png", "density.png", "reverse.gif"}


@pytest.mark.parametrize("value, dtype", [(5.0, np.float32), (1e10, np.float64)])
def test_a_constant_feature_gets_bins_and_no_point_inside_is_no_warning(value, dtype):
    """The figures' points are float32 (``_xy``): a constant column once gave bins of equal edges."""
    from ddpmlab.figures.plots2d import _density_2d, _limits

    pts = np.c_[np.arange(10.0), np.full(10, value)].astype(dtype)
    (x0, x1), (y0, y1) = _limits(pts)
    xe, ye = np.linspace(x0, x1, 61), np.linspace(y0, y1, 61)
    assert (np.diff(ye) > 0).all()  # distinct edges
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert not _density_2d(np.array([[x1 + 1.0, y1 + 1.0]]), xe, ye).any()  # nothing inside: zeros
        h = _density_2d(pts.astype(np.float64), xe, ye)
    assert float((h * np.outer(np.diff(xe), np.diff(ye))).sum()) == pytest.approx(1.0)
    assert math.isfinite(float(h.max()))

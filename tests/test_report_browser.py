"""The reports in a real browser: headless Chromium (Debian's ``chromium`` and ``chromium-driver``, which
.ci/run installs when missing) opens each report with the network blocked, draws every figure, follows
a move of the t slider, shows no console error, and leaves a screenshot in the test's directory."""
import shutil

import pytest

from _report_runs import build

selenium = pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[test]')")
from selenium import webdriver  # noqa: E402
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


@pytest.fixture(scope="module")
def browser():
    binary = next((b for b in map(shutil.which, BROWSERS) if b), None)
    driver_path = shutil.which("chromedriver")
    if binary is None or driver_path is None:
        pytest.skip("no Chromium and chromedriver on this machine (.ci/run installs Debian's chromium and "
                    "chromium-driver; this machine could not)")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1600", "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost"):
        options.add_argument(arg)  # no name resolves: a page that needed the network would show it
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        driver = webdriver.Chrome(options=options, service=Service(driver_path))
    except WebDriverException as exc:
        pytest.skip(f"Chromium does not start here: {str(exc).splitlines()[0]}")
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return build(tmp_path_factory)


def _open(driver, path):
    driver.get_log("browser")  # forget what an earlier page logged
    driver.get(path.as_uri())
    WebDriverWait(driver, 60).until(lambda d: d.execute_script("return document.body.dataset.ready") == "1")


def _drawn(driver, plot_id: str) -> str:
    """The figure's traces and its drawn SVG."""
    return driver.execute_script("const el = document.getElementById(arguments[0]);"
                                 "return JSON.stringify(el.data) + el.querySelector('.main-svg').outerHTML;", plot_id)


@pytest.mark.parametrize("name", ["mix1d", "gauss8", "digits", "comparison"])
def test_report_in_headless_chromium(browser, runs, name, tmp_path):
    _open(browser, runs.reports[name])
    missing = browser.execute_script(
        "return [...document.querySelectorAll('div.plot')].filter(el => !el.closest('details:not([open])'))"
        ".filter(el => !el.querySelector('.main-svg')).map(el => el.id);")
    assert missing == []  # every visible figure is drawn
    slider = next(s for s in browser.find_elements(By.CSS_SELECTOR, "input[type=range]") if s.is_displayed())
    plot, label = slider.get_attribute("data-plot"), browser.find_element(By.ID, slider.get_attribute("id") + "-label")
    before, label_before = _drawn(browser, plot), label.text
    assert label_before.startswith("t = 0 of")
    last = int(slider.get_attribute("max"))
    assert slider.get_attribute("data-shown") == "0"
    slider.send_keys(Keys.END)  # the keyboard moves it to t = T
    WebDriverWait(browser, 20).until(lambda d: slider.get_attribute("data-shown") == str(last))
    at_end, label_end = _drawn(browser, plot), label.text
    assert at_end != before
    assert label_end != label_before and label_end.startswith("t = ") and "alpha-bar" in label_end
    slider.send_keys(Keys.LEFT)  # and one step back
    WebDriverWait(browser, 20).until(lambda d: slider.get_attribute("data-shown") == str(last - 1))
    assert label.text not in (label_before, label_end) and _drawn(browser, plot) not in (before, at_end)
    if name == "comparison":  # a closed group is drawn when opened
        summary = browser.find_elements(By.CSS_SELECTOR, "body > details:not([open]) > summary")[0]
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'});", summary)
        WebDriverWait(browser, 20).until(lambda d: d.execute_script(  # nothing (a figure) lies over it
            "const r = arguments[0].getBoundingClientRect();"
            "return arguments[0].contains(document.elementFromPoint(r.left + r.width / 2, r.top + r.height / 2));",
            summary))
        summary.click()
        WebDriverWait(browser, 20).until(lambda d: d.execute_script(
            "return [...document.querySelectorAll('body > details[open] div.plot')].every("
            "el => el.closest('details:not([open])') || el.querySelector('.main-svg'));"))
    requests = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name);")
    assert not [r for r in requests if r.startswith(("http:", "https:"))]
    errors = [entry for entry in browser.get_log("browser") if entry["level"] == "SEVERE"]
    assert errors == []
    height = browser.execute_script("return document.body.scrollHeight")
    browser.set_window_size(1280, min(int(height) + 40, 9000))
    shot = tmp_path / f"report-{name}.png"
    assert browser.save_screenshot(str(shot)) and shot.read_bytes()[:4] == b"\x89PNG"
    assert shot.stat().st_size > 20_000
    browser.set_window_size(1280, 1600)

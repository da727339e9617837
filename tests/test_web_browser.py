"""The dashboard in a real browser: headless Chromium from the system's packages (Debian:
``chromium chromium-driver``) driven by Selenium with that browser and driver, nothing downloaded.

The page loads and draws the project; when a job finishes during the test (a new CtfFind job's
outputs written), the live figures change without a reload; a page opened without the token is
refused. Skipped where chromium or chromedriver is absent, unless VITRIFY_REQUIRE_BROWSER=1 (then
it fails). With VITRIFY_DASHBOARD_SCREENSHOTS=DIR it saves the screenshots docs/dashboard.md shows.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

pytest.importorskip("starlette")
pytest.importorskip("uvicorn")

import _web_project as wp  # noqa: E402
from _web_server import running_dashboard  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def _browser_paths() -> tuple[str | None, str | None]:
    browser = next((shutil.which(name) for name in BROWSERS if shutil.which(name)), None)
    return browser, shutil.which("chromedriver")


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("VITRIFY_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{reason} (VITRIFY_REQUIRE_BROWSER=1)")
    pytest.skip(reason)


@pytest.fixture
def driver():
    browser, chromedriver = _browser_paths()
    if browser is None or chromedriver is None:
        _skip_or_fail("no system chromium + chromedriver (Debian: apt-get install chromium chromium-driver)")
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        _skip_or_fail("selenium is not installed (pip install 'vitrify[webtest]')")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1400,1900", "--no-first-run", "--disable-extensions"):
        options.add_argument(argument)
    chrome = webdriver.Chrome(options=options, service=Service(executable_path=chromedriver))
    chrome.set_page_load_timeout(30)
    try:
        yield chrome
    finally:
        chrome.quit()


def _wait_for(condition, timeout_s: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _points(driver, metric: str) -> int:
    return int(driver.execute_script(
        f"return document.querySelectorAll('#plot-{metric} circle.point').length"))


def _screenshot(driver, name: str) -> None:
    folder = os.environ.get("VITRIFY_DASHBOARD_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(Path(folder) / name))


def test_page_loads_updates_live_and_needs_its_token(driver, tmp_path):
    project = wp.build_project(tmp_path / "project")
    with running_dashboard(project.root, poll_s=0.2) as server:
        driver.get(server.url("/"))
        _wait_for(lambda: driver.execute_script("return Number(document.body.dataset.refreshes || 0)") >= 1,
                  what="the first refresh")
        text = driver.find_element("tag name", "body").text
        assert "Extract/job009/" in text and "box size 7 is odd" in text               # what failed and why
        assert _points(driver, "defocus_angst") == 3 and _points(driver, "picks") == 3
        assert driver.execute_script(                                               # the scheme's threshold
            "return document.querySelector('#plot-ctf_max_resolution_angst line.threshold').dataset.value") == "7.5"
        framed = driver.execute_script(
            "return [...document.querySelectorAll('#class-gallery figure.class.selected')].map(f => f.dataset.class)")
        assert sorted(int(c) for c in framed) == sorted(wp.SELECTED)
        assert driver.execute_script("return document.querySelector('#maps svg.fsc path.curve') !== null")
        _wait_for(lambda: driver.execute_script(
            "const i = document.getElementById('mic-image'); return i.complete && i.naturalWidth > 0"),
            what="the micrograph picture")
        _wait_for(lambda: "live" in driver.find_element("id", "live-status").text, what="the event stream")
        url_before = driver.current_url
        _screenshot(driver, "dashboard.png")

        new_job = wp.add_ctffind(project, ["mov_c"])                       # a job finishes while we watch
        _wait_for(lambda: driver.execute_script(
            f"return document.querySelector('#jobs tr[data-job=\"{new_job}\"]')?.dataset.status") == "Succeeded",
            what="the new job in the jobs table")
        _wait_for(lambda: _points(driver, "defocus_angst") == 1, what="the defocus figure to follow the new job")
        assert _points(driver, "drift_angst") == 3                          # motion correction still has 3
        assert driver.current_url == url_before                              # no reload, no navigation

        driver.get(server.url("/", token=None))                              # no token: refused
        assert "401" in driver.find_element("tag name", "body").text
        assert driver.execute_script("return document.getElementById('jobs')") is None
        driver.get(server.url("/", token="not-the-token"))
        assert "403" in driver.find_element("tag name", "body").text

"""The page in a real browser: Debian's headless Chromium driven by Selenium against
`cnnzoo lab` served by uvicorn on a free port. The page loads without console
errors, the table follows the editor, an error is pinned to its line, a tiny net
trains with its curve getting points, two runs overlay, an image is answered.

With CNNZOO_LAB_SCREENSHOTS=docs/lab the screenshots in docs/lab.md are rewritten."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.helpers.runs import image_file
from tests.lab.conftest import tiny_config

CHROMIUM = shutil.which("chromium")
CHROMEDRIVER = shutil.which("chromedriver")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Debian's chromium and chromium-driver packages "
                              "(apt-get install chromium chromium-driver)"),
]
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--no-first-run", "--window-size=1400,1500"]
WAIT_S = 300  # a training on 2 busy cores; the waits end as soon as the page shows it


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def lab_url(tmp_path_factory: pytest.TempPathFactory):
    """`cnnzoo lab` as a process, on a free port, over an empty runs folder."""
    base = tmp_path_factory.mktemp("lab")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cnnzoo", "lab", "--runs", str(base / "runs"), "--port",
         str(port), "--no-browser"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    line = process.stdout.readline()
    assert f"http://127.0.0.1:{port}/" in line, line
    yield f"http://127.0.0.1:{port}"
    process.send_signal(2)
    assert process.wait(30) == 0
    rest = process.stdout.read()
    assert "Traceback" not in rest


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"]:
        options.add_argument(flag)
    options.binary_location = CHROMIUM
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def page(browser, lab_url: str):
    browser.get(lab_url + "/")
    wait_for(browser, lambda: browser.execute_script("return window.cnnzooLab.ready === true"))
    return browser


def wait_for(browser, condition, timeout: float = WAIT_S):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"the page did not get there in {timeout} s; console: "
                         f"{browser.get_log('browser')}")


def element(browser, testid: str):
    return browser.find_element("css selector", f"[data-testid={testid}]")


def shoot(browser, testid: str | None, name: str, tmp_path: Path) -> None:
    """A screenshot of one part of the page (or all of it), for docs/lab.md."""
    folder = Path(os.environ.get("CNNZOO_LAB_SCREENSHOTS", tmp_path))
    folder.mkdir(parents=True, exist_ok=True)
    if testid is None:
        browser.save_screenshot(str(folder / f"{name}.png"))
        return
    target = element(browser, testid)
    browser.execute_script("arguments[0].scrollIntoView()", target)  # else it is cut off
    target.screenshot(str(folder / f"{name}.png"))


def attribute(browser, testid: str, name: str) -> str | None:
    """An attribute read in one step: the charts are redrawn as points arrive, so a
    reference to one can go stale between finding it and reading it."""
    return browser.execute_script(
        "const e = document.querySelector(`[data-testid=${arguments[0]}]`); "
        "return e && e.getAttribute(arguments[1])", testid, name)


def set_text(browser, text: str) -> None:
    browser.execute_script("return window.cnnzooLab.setText(arguments[0])", text)


def plan(lab_url: str, text: str) -> dict:
    request = urllib.request.Request(f"{lab_url}/api/plan", data=text.encode(), method="POST")
    with urllib.request.urlopen(request) as answer:
        return json.loads(answer.read())


def severe(browser) -> list:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_the_page_loads_without_console_errors(page, tmp_path: Path) -> None:
    assert severe(page) == []
    text = page.execute_script("return window.cnnzooLab.getText()")
    assert "name: lenet5" in text
    rows = page.find_elements("css selector", "[data-testid=summary] tbody tr[data-path]")
    assert len(rows) > 5
    assert element(page, "total-params").text == "61,706"
    assert page.execute_script("return performance.getEntriesByType('resource')"
                               ".every(r => r.name.startsWith(location.origin))")
    shoot(page, None, "lab", tmp_path)


def test_the_table_follows_the_editor(page, lab_url: str, fake_data: Path,
                                      tmp_path: Path) -> None:
    text = tiny_config(fake_data)
    expected = plan(lab_url, text)
    set_text(page, text)
    rows = page.find_elements("css selector", "[data-testid=summary] tbody tr[data-path]")
    assert len(rows) == len(expected["layers"])
    assert element(page, "total-params").text == f"{expected['total_params']:,}"
    boxes = page.find_elements("css selector", "[data-testid=volumes] .box")
    assert len(boxes) == len(expected["layers"])
    boxes[1].click()  # the conv: its row and its line
    assert "picked" in rows[1].get_attribute("class")
    line = page.execute_script("const v = window.cnnzooLab.state.view; "
                               "return v.state.doc.lineAt(v.state.selection.main.head).number")
    assert line == 5
    assert severe(page) == []
    shoot(page, "volumes", "volumes", tmp_path)


def test_an_error_is_pinned_to_its_line(page, fake_data: Path, tmp_path: Path) -> None:
    good = tiny_config(fake_data)
    set_text(page, good.replace("pool: 4", "pool: 40"))
    error = element(page, "config-error")
    wait_for(page, error.is_displayed)
    assert error.get_attribute("data-line") == "6"
    assert "model.layers[2] (pool) at line 6: window 40x40 is larger" in error.text
    marked = page.execute_script(
        "return [...document.querySelectorAll('.cm-lint-marker-error')].length")
    assert marked == 1
    assert "stale" in element(page, "summary").get_attribute("class")
    assert element(page, "total-params").text != ""  # the last good table stays
    shoot(page, None, "error", tmp_path)
    set_text(page, good)
    assert not error.is_displayed()
    # The browser logs the plan's 422 answer itself; nothing else may be there.
    logged = severe(page)
    assert logged and all(e["source"] == "network" and "422" in e["message"] for e in logged)


def train_from_page(page, text: str) -> str:
    set_text(page, text)
    before = page.execute_script("return window.cnnzooLab.state.watched")
    element(page, "train").click()
    name = wait_for(page, lambda: page.execute_script(
        "const w = window.cnnzooLab.state.watched; return w !== arguments[0] && w", before))
    wait_for(page, lambda: element(page, "progress").get_attribute("data-status") == "finished"
             and name in element(page, "progress").text)
    return name


def test_training_draws_its_curve(page, fake_data: Path, tmp_path: Path) -> None:
    name = train_from_page(page, tiny_config(fake_data, epochs=3))
    assert int(attribute(page, "curve-loss", "data-points")) >= 6  # train, val: 3 epochs
    assert f"{name} val" in attribute(page, "curve-loss", "data-lines")
    assert int(attribute(page, "curve-accuracy", "data-points")) >= 6
    assert severe(page) == []
    shoot(page, "curves", "curves", tmp_path)


def test_two_selected_runs_overlay(page, fake_data: Path, tmp_path: Path) -> None:
    text = tiny_config(fake_data, epochs=2, name="wider").replace("filters: 8", "filters: 16")
    train_from_page(page, text)
    page.execute_script("window.cnnzooLab.state.watched = null")
    wait_for(page, lambda: page.execute_script(
        "const runs = window.cnnzooLab.state.runs; "
        "return runs.length === 2 && runs.every(r => r.status === 'finished')"))
    selector = "[data-testid=runs] [data-testid=select-run]"
    for k in range(2):  # looked up again: the list is redrawn when a run ends
        wait_for(page, lambda k=k: page.find_elements("css selector", selector)[k]).click()
    runs = page.execute_script("return window.cnnzooLab.state.runs.map(r => r.run)")
    wait_for(page, lambda: all(f"{run} val" in attribute(page, "curve-loss", "data-lines")
                               for run in runs))
    diff = element(page, "diff")
    wait_for(page, diff.is_displayed)
    assert "filters: 16" in diff.text and "filters: 8" in diff.text
    assert severe(page) == []
    shoot(page, "curves", "overlay", tmp_path)
    shoot(page, "runs", "runs", tmp_path)
    shoot(page, "diff", "diff", tmp_path)


def test_an_image_gets_its_top_classes(page, tmp_path: Path) -> None:
    from selenium.webdriver.support.ui import Select

    runs = page.execute_script("return window.cnnzooLab.state.runs.map(r => r.run)")
    Select(element(page, "predict-source")).select_by_value(f"run:{runs[0]}")
    element(page, "image").send_keys(str(image_file(tmp_path, label=2)))
    wait_for(page, lambda: page.find_elements("css selector", "[data-testid=answers] tr"))
    rows = page.find_elements("css selector", "[data-testid=answers] tr")
    assert len(rows) == 5 and "%" in rows[0].text
    assert severe(page) == []
    shoot(page, "predict", "predict", tmp_path)

"""`cas serve` in a real browser: headless Chromium (Debian's chromium + chromium-driver).

A real store, served by a real ``cas serve`` process on a free loopback port;
Selenium follows links from a work to a version to a diff, checks the chart
is drawn, and downloads a file. Set ``CAS_SCREENSHOT_DIR`` to keep screenshots
(the docs' images are made that way: ``CAS_SCREENSHOT_DIR=docs/img``).
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from conftest import write_tree
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import Select, WebDriverWait

from cas_storage import Store

pytestmark = pytest.mark.browser


CHROMEDRIVER = "/usr/bin/chromedriver"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, pathlib.Path]]:
    """A store with a path of 12 versions (a big file kept, small ones changing) and a drive."""
    root = tmp_path_factory.mktemp("served")
    store = Store.open(root / ".cas", state=str(root / "state.db"))
    src = write_tree(
        root / "ckpt",
        {"weights/base.bin": os.urandom(2_000_000), "config.json": '{"lr": 0.1}'},
    )
    for step in range(12):
        write_tree(
            src, {"step.txt": str(step), f"weights/delta-{step % 4}.bin": os.urandom(50_000)}
        )
        if step == 6:
            (src / "config.json").unlink()
        store.snapshot("root.train", "outputs/ckpt", src)
    store.snapshot("root.eval", "report", src / "step.txt")
    store.snapshot("drive:shared/root.train", "data", src / "weights")
    store.close()
    server = subprocess.Popen(
        [sys.executable, "-m", "cas_storage.cli", "--store", str(root / ".cas"), "serve"]
        + ["--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "CAS_STATE": str(root / "state.db")},
    )
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert found, line
        yield found.group(0), root
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    if not (os.path.exists(CHROMEDRIVER) and os.path.exists(CHROMIUM)):
        pytest.fail("install Debian's chromium and chromium-driver (make browser-deps)")
    downloads = tmp_path_factory.mktemp("downloads")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--window-size=1200,900",
        f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
    ):
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs",
        {"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    # The Service names the driver, so Selenium Manager never downloads one.
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.downloads = downloads  # type: ignore[attr-defined]
    try:
        yield driver
    finally:
        driver.quit()


def shot(driver: webdriver.Chrome, name: str, tmp_path: pathlib.Path) -> None:
    folder = pathlib.Path(os.environ.get("CAS_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    assert driver.save_screenshot(str(folder / f"serve-{name}.png"))


#: Counts the canvas's non-blank pixels (alpha > 0): a drawn chart has thousands.
DRAWN_PIXELS = """
const c = document.getElementById('usage-chart');
const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 3; i < d.length; i += 4) { if (d[i] > 0) n++; }
return n;
"""


def follow(browser: webdriver.Chrome, element: WebElement) -> None:
    """Click ``element`` and wait for the page it leads to. A click returns once the
    event is dispatched, at times before the browser has left the old page (a form's
    submit above all); a lookup then finds nothing, or the old page's elements."""
    old = browser.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(browser, 30).until(expected_conditions.staleness_of(old))
    WebDriverWait(browser, 30).until(
        lambda b: b.execute_script("return document.readyState") == "complete"
    )


def test_work_to_version_to_diff_with_chart_and_download(served, browser, tmp_path):
    base, root = served
    browser.get(base)
    assert "Works and their paths" in browser.page_source
    shot(browser, "works", tmp_path)
    follow(browser, browser.find_element(By.LINK_TEXT, "outputs/ckpt"))

    assert "root.train : outputs/ckpt" in browser.find_element(By.TAG_NAME, "h1").text
    drawn = browser.execute_script(DRAWN_PIXELS)
    assert drawn > 1000, f"chart canvas looks blank ({drawn} pixels drawn)"
    assert browser.find_element(By.ID, "usage-chart").get_attribute("data-drawn") == "yes"
    versions = [a.text for a in browser.find_elements(By.CSS_SELECTOR, "a.version-link")]
    assert versions == [str(n) for n in range(12, 0, -1)]
    shot(browser, "versions", tmp_path)

    follow(browser, browser.find_element(By.LINK_TEXT, "7"))
    assert "version 7" in browser.find_element(By.TAG_NAME, "h1").text
    names = browser.find_element(By.ID, "files").text
    assert "base.bin" in names and "config.json" not in names  # removed in version 7
    shot(browser, "version", tmp_path)

    link = browser.find_element(By.XPATH, "//tr[td[contains(., 'base.bin')]]//a[@class='download']")
    link.click()
    wanted = (root / "ckpt" / "weights" / "base.bin").read_bytes()
    target = browser.downloads / "base.bin"  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while not (target.exists() and target.stat().st_size == len(wanted)):
        assert time.monotonic() < deadline, (
            f"download did not arrive: {list(target.parent.iterdir())}"
        )
        time.sleep(0.1)
    assert target.read_bytes() == wanted

    follow(browser, browser.find_element(By.LINK_TEXT, "outputs/ckpt"))  # the breadcrumb
    Select(browser.find_element(By.ID, "diff-a")).select_by_visible_text("2")
    Select(browser.find_element(By.ID, "diff-b")).select_by_visible_text("9")
    follow(browser, browser.find_element(By.ID, "diff-go"))
    summary = browser.find_element(By.ID, "diff-summary").text
    assert "removed" in summary and "changed" in summary
    changes = browser.find_element(By.ID, "changes").text
    assert "config.json" in changes and "step.txt" in changes
    shot(browser, "diff", tmp_path)

    # a row's "since previous" link is the diff against the version before it
    follow(browser, browser.find_element(By.LINK_TEXT, "outputs/ckpt"))
    follow(browser, browser.find_elements(By.CSS_SELECTOR, "a.diff-link")[0])
    assert "11 → 12" in browser.find_element(By.TAG_NAME, "h1").text


def test_the_page_loads_nothing_from_outside(served, browser):
    base, _ = served
    browser.get(base + "path?work=root.train&path=outputs/ckpt")
    sources = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name)"
    )
    assert sources and all(s.startswith(base) for s in sources), sources

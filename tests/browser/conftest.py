"""A real headless Chromium driving the real web UI of a real ``watchkeeper serve``.

One server for the whole session (its ``[ui]`` on, on free ports, with a temporary data dir)
serving ``chaos``, ``cartoon`` and ``img2video`` (``img2video`` with ``device_memory_gb =
25.7``: the 24 GB profile, so 1024p and more than 24 frames are out of reach), and one
Chromium (Debian's ``chromium`` and ``chromedriver``, driven by Selenium). The tests are
skipped, with the reason, only when Chromium or its driver is absent.

:class:`Page` holds what the tests do to the page (open it, pick a tab, upload, choose,
record the progress bar, take screenshots); every wait is an explicit, bounded condition.
Screenshots go to ``docs/screenshots/`` when ``WK_SCREENSHOTS`` is set, else to pytest's
temporary directory (so a normal run leaves the tree clean).
"""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support import expected_conditions as ec
from selenium.webdriver.support.ui import WebDriverWait

from tests.integration.conftest import CHAOS, Server, free_port, toml_value, wait_for

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000")
WINDOW = (1280, 1000)
REPO = Path(__file__).resolve().parents[2]
SCREENSHOT_DIR = REPO / "docs" / "screenshots"

#: Every wait in the page is bounded by one of these (seconds).
SHORT_S = 10  # an element of a page already loaded, a click's effect
LOAD_S = 30  # a page load (Gradio's front end and the UI's first calls to the API)
JOB_S = 60  # a model run started from the page

MODELS: dict[str, dict[str, Any]] = {
    "chaos": {"app": CHAOS, "timeout_s": 10, "probe_interval_s": 0, "quarantine_s": 0},
    "cartoon": {"app": "watchkeeper.apps.cartoon:Cartoon", "probe_interval_s": 0},
    # 25.7 GB of device memory: the 24 GB profile (768p, 24 frames) and the note's figure.
    "img2video": {"app": "watchkeeper.apps.img2video:Img2Video", "probe_interval_s": 0,
                  "device_memory_gb": 25.7, "timeout_s": 120},
}


def _missing_browser() -> str | None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not path.exists():
            return f"{path} is absent (Debian package {package}; `make test` installs it)"
    return None


@pytest.fixture(scope="session")
def browser_present() -> None:
    """Skips every browser test, with the reason, when Chromium or chromedriver is absent."""
    reason = _missing_browser()
    if reason:
        pytest.skip(reason)


@dataclass
class Watchkeeper:
    """The server under test: its API (a :class:`Server`) and its UI's address."""

    api: Server
    ui_url: str

    def ui_livez(self) -> bool:
        try:
            return httpx.get(f"{self.ui_url}/livez", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def ui_pid(self) -> int | None:
        """The UI process's pid: from ``/health``'s ``ui`` section, else by its command line."""
        section = self.api.get("/health").json().get("ui")
        if isinstance(section, dict) and isinstance(section.get("pid"), int):
            return int(section["pid"])
        return self.ui_pid_by_cmdline()

    def ui_pid_by_cmdline(self) -> int | None:
        for child in self.api.children():
            try:
                if "watchkeeper.ui" in " ".join(child.cmdline()):
                    return child.pid
            except psutil.Error:
                continue
        return None


def write_config(path: Path, models: dict[str, dict[str, Any]], sections: dict[str, dict[str, Any]]) -> None:
    lines: list[str] = []
    for section, keys in sections.items():
        lines += [f"[{section}]"] + [f"{k} = {toml_value(v)}" for k, v in keys.items()] + [""]
    for name, keys in models.items():
        lines += [f"[models.{name}]"] + [f"{k} = {toml_value(v)}" for k, v in keys.items()] + [""]
    path.write_text("\n".join(lines))


@pytest.fixture(scope="session")
def wk(browser_present: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watchkeeper]:
    """``watchkeeper serve`` with the UI on (``[ui] enabled``), until the end of the session."""
    root = tmp_path_factory.mktemp("wk-ui")
    port, ui_port = free_port(), free_port()
    config = root / "watchkeeper.toml"
    write_config(config, MODELS, {
        "server": {"port": port, "data_dir": str(root / "data"), "cache_dir": str(root / "cache"),
                   "grace_period_s": 5},
        "ui": {"enabled": True, "port": ui_port},
    })
    log_path = root / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("WK_")}
    env["GRADIO_ANALYTICS_ENABLED"] = "False"
    proc = subprocess.Popen([sys.executable, "-m", "watchkeeper.cli", "serve", "--config", str(config)],
                            stdout=log_path.open("wb"), stderr=subprocess.STDOUT, env=env)
    server = Watchkeeper(Server(proc, f"http://127.0.0.1:{port}", log_path), f"http://127.0.0.1:{ui_port}")
    try:
        server.api.wait_ready(timeout_s=90)
        wait_for(server.ui_livez, 60, interval_s=0.2)
        yield server
    finally:
        server.api.stop()  # also checks that no worker (nor the UI) outlives the front


@pytest.fixture(scope="session")
def driver(browser_present: None) -> Iterator[WebDriver]:
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    chrome = webdriver.Chrome(options=options, service=Service(str(CHROMEDRIVER)))
    chrome.set_page_load_timeout(LOAD_S)
    chrome.set_script_timeout(SHORT_S)
    try:
        yield chrome
    finally:
        chrome.quit()


@pytest.fixture(scope="session")
def screenshot_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("WK_SCREENSHOTS"):
        SCREENSHOT_DIR.mkdir(parents=True, exist_ok=True)
        return SCREENSHOT_DIR
    return tmp_path_factory.mktemp("screenshots")


@pytest.fixture
def page(driver: WebDriver, wk: Watchkeeper, screenshot_dir: Path) -> Page:
    return Page(driver, wk.ui_url, screenshot_dir)


# --- the page ------------------------------------------------------------------------------

#: Records each distinct value of the ``<progress>`` under an element (and the step text) in
#: ``window.__wkProgress``, at every change of the DOM: catches updates faster than polling.
RECORD_PROGRESS_JS = """
const root = document.getElementById(arguments[0]);
const seen = window.__wkProgress = [];
const read = () => {
  const bar = root.querySelector('progress');
  if (!bar) return;
  const step = root.querySelector('.wk-step');
  const entry = [bar.getAttribute('value'), step ? step.textContent : ''];
  const last = seen[seen.length - 1];
  if (!last || last[0] !== entry[0] || last[1] !== entry[1]) seen.push(entry);
};
new MutationObserver(read).observe(root, {subtree: true, childList: true, attributes: true,
                                          characterData: true});
read();
"""

SELECTED_JS = """
const panel = document.getElementById('tab-' + arguments[0]);
const selector = "button[role=tab][aria-controls='tab-" + arguments[0] + "']";
const buttons = Array.from(document.querySelectorAll(selector));
return !!(panel && panel.offsetParent !== null
          && buttons.some(b => b.getAttribute('aria-selected') === 'true'));
"""

TEXT_JS = """
const el = document.getElementById(arguments[0]);
if (!el) return '';
const fields = Array.from(el.querySelectorAll('textarea, input[type=text]')).map(f => f.value);
return [el.textContent, ...fields].join(' ').trim();
"""

VIDEO_STATE_JS = """
const v = document.querySelector('#' + arguments[0] + ' video');
if (!v) return null;
return {src: v.currentSrc || v.getAttribute('src') || '', ready: v.readyState, duration: v.duration,
        width: v.videoWidth, height: v.videoHeight, error: v.error ? v.error.code : null};
"""


class Page:
    """The UI in the browser; every wait is an explicit condition with a bound."""

    def __init__(self, driver: WebDriver, url: str, shots: Path) -> None:
        self.driver = driver
        self.url = url
        self.shots = shots

    # waiting

    def wait(self, condition: Callable[[Any], Any], timeout_s: float = SHORT_S, what: str = "") -> Any:
        message = f"{what or 'condition'} not met within {timeout_s} s"
        return WebDriverWait(self.driver, timeout_s, poll_frequency=0.05,
                             ignored_exceptions=(StaleElementReferenceException,)).until(condition, message)

    def js(self, script: str, *args: Any) -> Any:
        return self.driver.execute_script(script, *args)

    def element(self, css: str, timeout_s: float = SHORT_S) -> Any:
        return self.wait(ec.presence_of_element_located((By.CSS_SELECTOR, css)), timeout_s, css)

    def elements(self, css: str) -> list[Any]:
        return list(self.driver.find_elements(By.CSS_SELECTOR, css))

    def text(self, elem_id: str) -> str:
        """The text of the element ``#elem_id`` and of the text fields in it ('' when it is not there)."""
        return str(self.js(TEXT_JS, elem_id) or "")

    def wait_text(self, elem_id: str, predicate: Callable[[str], bool], timeout_s: float = SHORT_S) -> str:
        found: str = self.wait(lambda _: (t := self.text(elem_id)) and predicate(t) and t, timeout_s,
                               f"text of #{elem_id}")
        return found

    # navigation

    def open(self, query: str = "", timeout_s: float = LOAD_S) -> None:
        """Load the page (with ``?query``) and wait for its tabs (built from GET /v1/models)."""
        self.driver.get(self.url + "/" + (f"?{query}" if query else ""))
        self.element("#tab-service-button, button[role=tab][data-tab-id='tab-service']", timeout_s)

    def tab(self, name: str) -> None:
        """Select the tab of model ``name`` (or ``service``) and wait until it shows."""
        button = self.element(f"#tab-{name}-button, button[role=tab][data-tab-id='tab-{name}']")
        if not button.is_displayed():  # a tab inside another tab: open that one first
            outer = self.js("const p = arguments[0].closest('[role=tabpanel]'); return p && p.id;", button)
            if outer:
                self.element(f"button[role=tab][aria-controls='{outer}']").click()
        button.click()
        self.wait(lambda _: self.selected(name), what=f"tab {name} selected")

    def selected(self, name: str) -> bool:
        """Whether the tab of ``name`` is the one selected and showing."""
        return bool(self.js(SELECTED_JS, name))

    # inputs

    def upload(self, elem_id: str, path: Path) -> None:
        """Upload a file to the upload component ``#elem_id``; wait for its preview."""
        self.element(f"#{elem_id} input[type=file]").send_keys(str(path))
        self.element(f"#{elem_id} img, #{elem_id} video", SHORT_S)

    def choose(self, elem_id: str, value: str) -> None:
        """Pick ``value`` in a radio group or a dropdown ``#elem_id``."""
        radios = self.elements(f"#{elem_id} input[type=radio]")
        if radios:
            self.element(f"#{elem_id} label:has(input[value='{value}'])").click()
            self.wait(lambda _: self.element(f"#{elem_id} input[value='{value}']").is_selected(),
                      what=f"{value} chosen in #{elem_id}")
            return
        box = self.element(f"#{elem_id} input")
        box.click()
        option = self.elements(f"#{elem_id} li[data-value='{value}'], ul.options li[data-value='{value}']")
        if option:
            option[0].click()
        else:
            box.send_keys(Keys.CONTROL, "a")
            box.send_keys(value, Keys.ENTER)
        self.wait(lambda _: self.element(f"#{elem_id} input").get_attribute("value") == value,
                  what=f"{value} chosen in #{elem_id}")

    def set_number(self, elem_id: str, value: float) -> None:
        """Type ``value`` into the number box of a slider or number field ``#elem_id``."""
        box = self.element(f"#{elem_id} input[type=number]")
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys(f"{value:g}", Keys.TAB)
        self.wait(lambda _: float(self.element(f"#{elem_id} input[type=number]").get_attribute("value")
                                  or "nan") == value, what=f"#{elem_id} = {value}")

    def click(self, elem_id: str) -> None:
        button = self.element(f"#{elem_id}")
        self.wait(ec.element_to_be_clickable(button), what=f"#{elem_id} clickable")
        button.click()

    # outputs

    def record_progress(self, elem_id: str) -> None:
        self.element(f"#{elem_id}")
        self.js(RECORD_PROGRESS_JS, elem_id)

    def progress_seen(self) -> list[tuple[float, str]]:
        entries = self.js("return window.__wkProgress || []")
        return [(float(value), step) for value, step in entries if value not in (None, "")]

    def video(self, elem_id: str) -> dict[str, Any] | None:
        state: dict[str, Any] | None = self.js(VIDEO_STATE_JS, elem_id)
        return state

    def image_src(self, elem_id: str) -> str:
        found = self.elements(f"#{elem_id} img")
        return str(found[0].get_attribute("src") or "") if found else ""

    def fetch(self, url: str) -> bytes:
        """The bytes at ``url`` as the page gets them (a ``data:`` URL or a GET from the page)."""
        if url.startswith("data:"):
            return base64.b64decode(url.split(",", 1)[1])
        return httpx.get(url, timeout=SHORT_S).raise_for_status().content

    def screenshot(self, name: str) -> Path:
        """The whole page (not just the window) as ``name``.png."""
        metrics = self.driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
        size = metrics["cssContentSize"]
        clip = {"x": 0, "y": 0, "width": max(WINDOW[0], size["width"]),
                "height": min(3000, max(size["height"], 600)), "scale": 1}
        shot = self.driver.execute_cdp_cmd("Page.captureScreenshot", {
            "format": "png", "captureBeyondViewport": True, "clip": clip})
        path = self.shots / f"{name}.png"
        path.write_bytes(base64.b64decode(shot["data"]))
        return path

"""The API's latency with the web UI idle against the same with people using it.

Issue 16 asks that the API's latency be unchanged while someone uses the UI. One
``watchkeeper serve`` with its UI on (``[ui] enabled``, set by ``WK_UI__ENABLED``) serves
``chaos`` (the measured no-op predict) and ``img2video``. Two states, measured in alternating
rounds (the order flips every round, so both see the same machine):

- ``idle``: the UI process runs, nobody is on it (both browsers show ``about:blank``);
- ``in use``: one headless Chromium shows the Service tab (its timer reads ``/health`` and
  ``/metrics`` every 2 s) and a second one runs img2video jobs from its tab in a loop (the
  photo uploaded once; Run, wait for the video, Run again; the UI's default params).

In each state of each round: ``--requests`` chaos ``ok`` predicts at concurrency 1 on one
keep-alive connection, then wrk at concurrency 8 for ``--seconds``. Prints p50 and p99 of each
(c=1: over all rounds' requests; c=8: the median of the rounds' wrk figures), the ratio in
use / idle, and the CPU that the UI process, the browsers and the img2video worker used in
each state. The img2video jobs run on the same two cores as the API, so part of any change
is the model's own work, not the UI's: the CPU columns say how much.

Here the browsers share the server's two cores, which a user's browser does not: with
``--browser-nice 19`` they get only what the server leaves, closer to a browser elsewhere.

Run: .venv/bin/python bench/ui_impact.py [--rounds 5] [--requests 1000] [--seconds 4] [--browser-nice 19]
(needs Debian's chromium and chromium-driver, and wrk.)
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
from PIL import Image, ImageDraw
from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import BenchServer, KeepAlivePost, free_port, machine, percentile, table
from loadgen import STEAL_CLEAN, alternate, parse_wrk, progress, tree, wrk, wrk_script
from servers import WK_CHAOS, chaos_body

CHROME_ARGS = ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,1000")
WARMUP = 200  # c=1 requests before the first round, not counted
ROUND_WARMUP = 20  # and on each round's new connection
SETTLE_S = 3.0  # after a state change: the pages loaded, the Service timer ticking, a job running
PAGE_S = 30  # bound of every wait in the pages
JOB_ID_JS = """
const el = document.getElementById('img2video-job');
if (!el) return '';
const m = [el.textContent, ...Array.from(el.querySelectorAll('textarea, input')).map(f => f.value)]
  .join(' ').match(/[0-9a-f]{32}/);
return m ? m[0] : '';
"""
DONE_JS = """
const bar = document.querySelector('#img2video-progress progress');
const video = document.querySelector('#img2video-output-video video');
return !!(bar && Number(bar.getAttribute('value')) >= 1 && video && video.getAttribute('src'));
"""


def chromium() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    driver.set_page_load_timeout(PAGE_S)
    return driver


def until(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    return WebDriverWait(driver, PAGE_S, poll_frequency=0.1,
                         ignored_exceptions=(StaleElementReferenceException,)).until(condition, what)


def open_tab(driver: WebDriver, url: str, name: str) -> None:
    driver.get(url)
    button = until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f"#tab-{name}-button"), f"tab {name}")
    button[0].click()


def photo(directory: Path) -> Path:
    image = Image.new("RGB", (320, 240), (90, 140, 200))
    ImageDraw.Draw(image).ellipse((40, 40, 140, 140), fill=(250, 200, 40))
    path = directory / "photo.png"
    image.save(path)
    return path


class JobLoop:
    """Runs img2video jobs from the page, one after the other, until stopped."""

    def __init__(self, driver: WebDriver, image: Path) -> None:
        self.driver, self.image = driver, image
        self.done = 0
        self.error: BaseException | None = None
        self.stopping = threading.Event()
        self.thread: threading.Thread | None = None

    def start(self, url: str) -> None:
        open_tab(self.driver, url, "img2video")
        upload = until(self.driver, lambda d: d.find_elements(
            By.CSS_SELECTOR, "#img2video-input-image input[type=file]"), "the image upload")
        upload[0].send_keys(str(self.image))
        until(self.driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#img2video-input-image img"),
              "the image preview")
        self.stopping.clear()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            while not self.stopping.is_set():
                before = self.driver.execute_script(JOB_ID_JS)
                self.driver.find_element(By.ID, "img2video-run").click()
                until(self.driver, self._finished(before), "a job's video")
                self.done += 1
        except BaseException as exc:  # raised again by stop(), in the measuring thread
            self.error = exc

    @staticmethod
    def _finished(before: str) -> Callable[[WebDriver], bool]:
        """True once the page shows a job other than ``before``, done, with its video."""
        return lambda d: bool((j := d.execute_script(JOB_ID_JS)) and j != before
                              and d.execute_script(DONE_JS))

    def stop(self) -> None:
        self.stopping.set()
        if self.thread is not None:
            self.thread.join(PAGE_S + 5)
        self.driver.get("about:blank")
        if self.error is not None:
            raise RuntimeError("the img2video loop in the page failed") from self.error


def ui_pid(server: BenchServer) -> int:
    for child in psutil.Process(server.proc.pid).children(recursive=True):
        if "watchkeeper.ui" in " ".join(child.cmdline()):
            return child.pid
    raise RuntimeError("no UI process among the server's children")


def renice(pids: list[int], nice: int) -> None:
    """Set the nice value of each process of these trees (0: leave them as they are)."""
    if not nice:
        return
    for pid in pids:
        for proc in tree(pid):
            try:
                proc.nice(nice)
            except psutil.Error:
                continue


def cpu_of(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        for proc in tree(pid):
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=1000, help="c=1 requests per state per round")
    parser.add_argument("--seconds", type=int, default=4, help="wrk at c=8, per state per round")
    parser.add_argument("--browser-nice", type=int, default=0,
                        help="run the browsers at this nice value (19: as if they ran on the users' "
                             "own machines, which is where browsers run; 0: compete for the cores)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="wk-ui-bench-"))
    image = photo(work)
    ui_port = free_port()
    env = {"WK_UI__ENABLED": "true", "WK_UI__PORT": str(ui_port), "GRADIO_ANALYTICS_ENABLED": "False"}
    models = {"chaos": WK_CHAOS, "img2video": {"app": "watchkeeper.apps.img2video:Img2Video",
                                               "probe_interval_s": 0, "timeout_s": 120}}
    server = BenchServer(models, env=env)
    browsers: list[webdriver.Chrome] = []
    try:
        server.wait_ready()
        ui_url = f"http://127.0.0.1:{ui_port}"
        deadline = time.monotonic() + 60
        while not _livez(ui_url):
            if time.monotonic() > deadline:
                raise TimeoutError(f"the UI at {ui_url} did not answer /livez")
            time.sleep(0.2)
        browsers = [chromium(), chromium()]
        browser_pids = [b.service.process.pid for b in browsers]
        renice(browser_pids, args.browser_nice)
        for driver in browsers:
            driver.get("about:blank")
        service_page, loop = browsers[0], JobLoop(browsers[1], image)
        url = f"{server.url}/v1/models/chaos/predict"
        body = json.dumps(chaos_body()).encode()
        warm = KeepAlivePost(url, body)
        warm.warm_up(WARMUP)
        warm.close()
        script = wrk_script(chaos_body(), work)
        watched = {"ui": [ui_pid(server)], "browsers": browser_pids,
                   "img2video worker": server.worker_pids("img2video")}

        def measure(in_use: bool) -> dict[str, Any]:
            if in_use:
                open_tab(service_page, ui_url, "service")
                loop.start(ui_url)
                renice(browser_pids, args.browser_nice)  # renderers started since
            try:
                time.sleep(SETTLE_S)
                jobs_before = loop.done
                cpu_before = {name: cpu_of(pids) for name, pids in watched.items()}
                started = time.perf_counter()
                client = KeepAlivePost(url, body)  # a new connection: an idle one is closed after 5 s
                client.warm_up(ROUND_WARMUP)
                c1 = [client.post_ms() for _ in range(args.requests)]
                client.close()
                out = wrk(url, script, 8, args.seconds)
                run = parse_wrk(out, 8, (0.0, 0.0, 0.0))
                wall = time.perf_counter() - started
                cpu = {name: (cpu_of(pids) - cpu_before[name]) / wall for name, pids in watched.items()}
                jobs = loop.done - jobs_before
            finally:
                if in_use:
                    loop.stop()
                    service_page.get("about:blank")
            if run.errors:
                raise RuntimeError(f"wrk had {run.errors} errors at c=8")
            progress(f"{'in use' if in_use else 'idle'}: c=1 p50 {percentile(c1, 50):.3f} ms, "
                     f"c=8 p50 {run.p50_ms:.3f} ms, {jobs} jobs")
            return {"c1": c1, "c8": (run.p50_ms, run.p99_ms, run.ok_per_s), "cpu": cpu, "jobs": jobs,
                    "wall": wall}

        rounds = alternate({"idle": lambda: measure(False), "in use": lambda: measure(True)}, args.rounds)
    finally:
        for driver in browsers:
            driver.quit()
        server.stop()
    report(args, rounds)
    return 0


def _livez(url: str) -> bool:
    try:
        return httpx.get(f"{url}/livez", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def report(args: argparse.Namespace, rounds: Any) -> None:
    states = ("idle", "in use")
    c1 = {s: [t for r in rounds[s] for t in r["c1"]] for s in states}
    c8 = {s: [r["c8"] for r in rounds[s]] for s in states}
    fig = {s: {"c=1 p50": percentile(c1[s], 50), "c=1 p99": percentile(c1[s], 99),
               "c=8 p50": statistics.median(x[0] for x in c8[s]),
               "c=8 p99": statistics.median(x[1] for x in c8[s])} for s in states}
    pairs = [statistics.median(b["c1"]) / statistics.median(a["c1"])
             for a, b in zip(rounds["idle"], rounds["in use"], strict=True)]
    steal = rounds.worst_by_round()
    print(f"# API latency, UI idle vs in use: chaos no-op predict, {args.rounds} alternating rounds "
          f"(c=1: {args.requests} requests a round; c=8: wrk {args.seconds} s a round); browsers at nice "
          f"{args.browser_nice}; {machine()}")
    print(f"# rounds with steal over {STEAL_CLEAN:.0%}: {sum(s > STEAL_CLEAN for s in steal)} "
          f"(worst {max(steal):.0%})\n")
    rows = [[name, f"{fig['idle'][name]:.3f}", f"{fig['in use'][name]:.3f}",
             f"{fig['in use'][name] / fig['idle'][name]:.2f}"] for name in fig["idle"]]
    print(table(["ms", "UI idle", "UI in use", "in use / idle"], rows))
    print(f"\nc=1 p50 ratio by round (in use / idle): {', '.join(f'{p:.2f}' for p in pairs)}; "
          f"median {statistics.median(pairs):.2f}")
    cpu_rows = [[name] + [f"{statistics.median(r['cpu'][name] for r in rounds[s]) * 100:.1f}" for s in states]
                for name in rounds["idle"][0]["cpu"]]
    print()
    print(table(["CPU % of one core (median of rounds)", "UI idle", "UI in use"], cpu_rows))
    jobs = [r["jobs"] for r in rounds["in use"]]
    walls = [r["wall"] for r in rounds["in use"]]
    print(f"\nimg2video jobs run from the page while measuring: {sum(jobs)} in {sum(walls):.0f} s "
          f"({sum(jobs) / sum(walls):.2f} a second)")


if __name__ == "__main__":
    sys.exit(main())

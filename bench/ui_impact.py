"""The API's latency with nobody on the UI, with the same work sent straight to the API, and through the UI.

Issue 16 asks that the API's latency be unchanged while someone uses the UI. One
``watchkeeper serve`` with its UI on (``[ui] enabled``, set by ``WK_UI__ENABLED``) serves
``chaos`` (the measured no-op predict) and ``img2video``. Five states, measured in alternating
rounds (the order flips every round, so each sees the same machine):

- ``idle``: the UI process runs, nobody is on it (both browsers show ``about:blank``);
- ``api``: the same work as ``ui``, sent straight to the API by a script (a process of its
  own, in the browsers' scheduling class), no page: img2video jobs one after the other
  (submit the photo, follow the job's events to the end, download the video) and a
  ``/health`` + ``/metrics`` read every 2 s, what an open Service tab reads;
- ``busy``: no work on the server; the two browsers spin on a blank page for ``--busy-share``
  of a core each (0.3), writing over ``--busy-mb`` of memory as they go (0: none): what the
  browsers' own CPU does to the API here, without the UI;
- ``control``: ``api`` and ``busy`` at once: everything of ``ui`` but the UI process;
- ``ui``: one headless Chromium shows the Service tab (its timer reads ``/health`` and
  ``/metrics`` every 2 s) and a second one runs img2video jobs from its tab in a loop (the
  photo uploaded once; Run, wait for the video, Run again; the UI's default params).

``ui / control`` is what the UI process costs the API (its CPU, and its requests where they
differ from the script's); ``ui / api`` adds the browsers' CPU where they share the server's
cores; ``api / idle`` is what the model work costs, which any client sending those jobs
would cost. The job loops start a job at most every ``--job-every`` seconds (2), so the
states run about as many. With ``--service-only``, no state runs jobs: ``api`` is the reads
alone, ``ui`` the Service tab alone.

In each state of each round: ``--requests`` chaos ``ok`` predicts at concurrency 1 on one
keep-alive connection, then wrk at concurrency 8 for ``--seconds``. Prints p50 and p99 of each
(c=1: over all rounds' requests; c=8: the median of the rounds' wrk figures), the ratios, and
the CPU that the UI process, the browsers and the img2video worker used in each state.

A user's browser runs on the user's machine; here the browsers share the server's two cores.
``--browser-idle`` starts them (chromedriver, and so every Chromium process under it) in the
kernel's idle scheduling class (SCHED_IDLE): they run only on CPU time nothing else wants and
give way at once when the server wakes, the nearest this machine has to a browser elsewhere.
``--browser-nice 19`` only lowers their share; 0 lets them compete. On a VM the c=1 figures
also depend on how often the cores halt (waking a halted vCPU is slow), which depends on what
else runs: ``--keep-awake`` keeps a SCHED_IDLE spinner on each core in every state, so no
core halts and a wake-up costs the same everywhere.

To look into the UI process: ``--ui-nice N`` renices it, ``--ui-idle`` puts it in SCHED_IDLE,
``--py-spy DIR`` records it while each ``ui`` state is measured (``DIR/ui-N.txt``, folded).

Run: .venv/bin/python bench/ui_impact.py [--rounds 5] [--requests 1000] [--seconds 4]
     [--browser-idle | --browser-nice 19] [--keep-awake] [--service-only] [--job-every 2]
     [--busy-share 0.3] [--busy-mb 0] [--states idle,api,busy,control,ui]
(needs Debian's chromium and chromium-driver, and wrk: `make bench-deps` installs them.)
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
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

from watchkeeper.ui.service_tab import REFRESH_S

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


def chromium(idle_class: bool) -> webdriver.Chrome:
    """A headless Chromium; with ``idle_class``, it and all its processes in SCHED_IDLE."""
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for arg in CHROME_ARGS:
        options.add_argument(arg)
    popen_kw = {"preexec_fn": _enter_idle_class} if idle_class else {}
    service = Service("/usr/bin/chromedriver", popen_kw=popen_kw)  # inherited by every child
    driver = webdriver.Chrome(options=options, service=service)
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

    def __init__(self, driver: WebDriver, image: Path, every_s: float, count: Any) -> None:
        self.driver, self.image, self.every_s, self.count = driver, image, every_s, count
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
                started = time.monotonic()
                before = self.driver.execute_script(JOB_ID_JS)
                self.driver.find_element(By.ID, "img2video-run").click()
                until(self.driver, self._finished(before), "a job's video")
                with self.count.get_lock():
                    self.count.value += 1
                self.stopping.wait(started + self.every_s - time.monotonic())
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
            raise RuntimeError(f"the img2video loop in the page failed: {self.error!r}")


class Browser:
    """A headless Chromium driven from a process of its own: the WebDriver calls (the job loop
    reads the page every 0.1 s) would otherwise take the GIL from the measuring loop here."""

    def __init__(self, idle_class: bool, nice: int, image: Path, every_s: float) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.count = ctx.Value("i", 0)
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_browser_main, daemon=True,
                                args=(child, idle_class, nice, str(image), every_s, self.count))
        self.proc.start()
        self.pid = int(self._call())  # chromedriver's: every Chromium process is under it

    def _call(self, *command: str) -> Any:
        if command:
            self.conn.send(command)
        if not self.conn.poll(PAGE_S * 3):
            raise TimeoutError(f"the browser process did not answer {command[:1]}")
        ok, value = self.conn.recv()
        if not ok:
            raise RuntimeError(f"the browser process failed: {value}")
        return value

    def get(self, url: str) -> None:
        self._call("get", url)

    def open_tab(self, url: str, name: str) -> None:
        self._call("open_tab", url, name)

    def start_jobs(self, url: str) -> None:
        self._call("start_jobs", url)

    def stop_jobs(self) -> None:
        self._call("stop_jobs")

    @property
    def done(self) -> int:
        return int(self.count.value)

    def quit(self) -> None:
        try:
            self._call("quit")
        except (OSError, RuntimeError, TimeoutError):
            pass
        self.proc.join(10)
        if self.proc.is_alive():
            self.proc.kill()


def _browser_main(conn: Any, idle_class: bool, nice: int, image: str, every_s: float, count: Any) -> None:
    """The browser's process: start Chromium, then carry out the commands until ``quit``.
    This process (the WebDriver client) runs in the browsers' class, as the API loop does."""
    _enter_class(idle_class, nice)
    try:
        driver = chromium(idle_class)
    except BaseException as exc:
        conn.send((False, repr(exc)))
        return
    conn.send((True, driver.service.process.pid))
    loop = JobLoop(driver, Path(image), every_s, count)
    commands: dict[str, Callable[..., None]] = {
        "get": driver.get, "open_tab": lambda *a: open_tab(driver, *a),
        "start_jobs": loop.start, "stop_jobs": loop.stop}
    try:
        while (command := conn.recv())[0] != "quit":
            try:
                commands[command[0]](*command[1:])
                conn.send((True, None))
            except BaseException as exc:  # said to the measuring process, which stops
                conn.send((False, f"{type(exc).__name__}: {exc}"))
        conn.send((True, None))
    finally:
        driver.quit()


def _enter_idle_class() -> None:
    os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))


def _enter_class(idle_class: bool, nice: int) -> None:
    """This process into the browsers' class: SCHED_IDLE, else ``nice`` (0: as it is)."""
    if idle_class:
        _enter_idle_class()
    elif nice:
        os.nice(nice)


class ApiLoop:
    """The ``ui`` state's work sent straight to the API: img2video jobs and the Service reads.

    It runs in a process of its own (spawned for each state), like a browser: its threads
    would otherwise take the GIL from the measuring loop in this process. With
    ``--browser-idle`` / ``--browser-nice`` it runs in the browsers' scheduling class.
    """

    def __init__(self, base: str, image: Path, jobs: bool, every_s: float, idle_class: bool,
                 nice: int) -> None:
        self.args = (base, image.read_bytes(), jobs, every_s, idle_class, nice)
        self.ctx = multiprocessing.get_context("spawn")
        self.count = self.ctx.Value("i", 0)
        self.stopping = self.ctx.Event()
        self.failures = self.ctx.SimpleQueue()
        self.proc: Any = None

    @property
    def done(self) -> int:
        return int(self.count.value)

    def start(self) -> None:
        self.stopping.clear()
        self.proc = self.ctx.Process(target=_api_loop, daemon=True,
                                     args=(*self.args, self.stopping, self.count, self.failures))
        self.proc.start()

    def stop(self) -> None:
        self.stopping.set()
        self.proc.join(PAGE_S + 5)
        if not self.failures.empty():
            raise RuntimeError(f"the API loop failed: {self.failures.get()}")


def _api_loop(base: str, png: bytes, jobs: bool, every_s: float, idle_class: bool, nice: int,
              stopping: Any, count: Any, failures: Any) -> None:
    """The API loop's process: the Service reads and (with ``jobs``) the job loop, in threads."""
    _enter_class(idle_class, nice)

    def guarded(target: Callable[[httpx.Client], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                with httpx.Client(base_url=base, timeout=PAGE_S) as client:
                    target(client)
            except BaseException as exc:  # reported by stop(), in the measuring process
                failures.put(f"{type(exc).__name__}: {exc}")
                stopping.set()
        return run

    def reads(client: httpx.Client) -> None:
        while not stopping.is_set():
            client.get("/health").raise_for_status()
            client.get("/metrics").raise_for_status()
            stopping.wait(REFRESH_S)

    def job_loop(client: httpx.Client) -> None:
        while not stopping.is_set():
            started = time.monotonic()
            _api_job(client, png)
            with count.get_lock():
                count.value += 1
            stopping.wait(started + every_s - time.monotonic())

    threads = [threading.Thread(target=guarded(t)) for t in [reads] + ([job_loop] if jobs else [])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def _api_job(client: httpx.Client, png: bytes) -> None:
    """One img2video job as a script runs it: submit, follow its events, fetch its video."""
    files = {"image": ("image.png", png, "image/png")}
    submitted = client.post("/v1/models/img2video/jobs", files=files, data={"inputs": "{}", "params": "{}"})
    submitted.raise_for_status()
    urls = submitted.json()["urls"]
    with client.stream("GET", urls["events"]) as events:
        for _ in events.iter_lines():  # until the stream ends, after the final state
            pass
    job = client.get(urls["self"]).json()
    if job["state"] != "succeeded":
        raise RuntimeError(f"an img2video job ended {job['state']}: {job.get('error')}")
    for entry in job["result"]["files"]:
        client.get(entry["url"]).raise_for_status()


def keep_awake() -> list[subprocess.Popen[bytes]]:
    """One SCHED_IDLE spinner per core, for the whole run: no core ever halts, so a wake-up
    costs the same in every state (on a VM, waking a halted vCPU is slow, and how often the
    cores halt depends on what else runs), and the spinners give way at once to anything else."""
    code = "import os\nos.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))\nwhile True:\n    pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 1)]


def record_ui(pid: int, directory: Path) -> subprocess.Popen[bytes]:
    """py-spy recording the UI process until SIGINT, to the next ``DIR/ui-N.txt``."""
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / f"ui-{len(list(directory.glob('ui-*.txt'))) + 1}.txt"
    spy = Path(sys.executable).with_name("py-spy")
    return subprocess.Popen([str(spy), "record", "-p", str(pid), "-r", "200", "-f", "raw", "-o", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


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


def cpu_of(pids: list[int], with_children: bool = True) -> float:
    """CPU seconds of these processes (and of their descendants alive now)."""
    total = 0.0
    for pid in pids:
        for proc in tree(pid) if with_children else tree(pid)[:1]:
            try:
                times = proc.cpu_times()
            except psutil.NoSuchProcess:
                continue
            total += times.user + times.system
    return total


STATES = ("idle", "api", "busy", "control", "ui")
#: The ``busy`` state's page: every 50 ms, spin for a share of it (the browsers' CPU, no UI).
BUSY_PAGE = ("data:text/html,<title>busy</title><script>var a = new Int32Array(%d), i = 0;"
             "setInterval(function () {var end = performance.now() + %.1f;"
             "while (performance.now() < end) {for (var k = 0; k < 64; k++) {"
             "i = (i + 4099) %% a.length; a[i]++;}}}, 50)</script>")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=1000, help="c=1 requests per state per round")
    parser.add_argument("--seconds", type=int, default=4, help="wrk at c=8, per state per round")
    parser.add_argument("--browser-nice", type=int, default=0,
                        help="run the browsers at this nice value (0: compete for the cores)")
    parser.add_argument("--browser-idle", action="store_true",
                        help="run the browsers in SCHED_IDLE: only on CPU time the server leaves")
    parser.add_argument("--service-only", action="store_true",
                        help="no jobs: the Service tab alone (ui) against its reads alone (api)")
    parser.add_argument("--job-every", type=float, default=2.0,
                        help="start a job at most every this many seconds, in both states (a job "
                             "that takes longer is followed at once by the next)")
    parser.add_argument("--ui-nice", type=int, default=0,
                        help="renice the UI process to this (0: as the server started it)")
    parser.add_argument("--ui-idle", action="store_true",
                        help="put every thread of the UI process in SCHED_IDLE")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                        help="record the UI process with py-spy while measuring each ui state "
                             "(raw folded stacks, DIR/ui-N.txt)")
    parser.add_argument("--keep-awake", action="store_true",
                        help="a SCHED_IDLE spinner on each core all along: no core halts in any state")
    parser.add_argument("--busy-mb", type=int, default=0,
                        help="in states busy and control, the MB of memory each page writes to "
                             "while it spins (0: it spins on nothing), as a page that draws does")
    parser.add_argument("--busy-share", type=float, default=0.3,
                        help="in state busy, the share of a core each browser's page spins for")
    parser.add_argument("--states", default=",".join(STATES), help="which states, of " + ",".join(STATES))
    args = parser.parse_args()
    args.states = [x for x in STATES if x in args.states.split(",")]
    work = Path(tempfile.mkdtemp(prefix="wk-ui-bench-"))
    image = photo(work)
    ui_port = free_port()
    env = {"WK_UI__ENABLED": "true", "WK_UI__PORT": str(ui_port), "GRADIO_ANALYTICS_ENABLED": "False"}
    models = {"chaos": WK_CHAOS, "img2video": {"app": "watchkeeper.apps.img2video:Img2Video",
                                               "probe_interval_s": 0, "timeout_s": 120}}
    server = BenchServer(models, env=env)
    browsers: list[Browser] = []
    spinners = keep_awake() if args.keep_awake else []
    try:
        server.wait_ready()
        ui_url = f"http://127.0.0.1:{ui_port}"
        wait_livez(ui_url)
        browsers = [Browser(args.browser_idle, args.browser_nice, image, args.job_every) for _ in range(2)]
        browser_pids = [b.pid for b in browsers]
        renice(browser_pids, args.browser_nice)
        for driver in browsers:
            driver.get("about:blank")
        service_page, job_page = browsers
        api_loop = ApiLoop(server.url, image, jobs=not args.service_only, every_s=args.job_every,
                           idle_class=args.browser_idle, nice=args.browser_nice)
        url = f"{server.url}/v1/models/chaos/predict"
        body = json.dumps(chaos_body()).encode()
        warm = KeepAlivePost(url, body)
        warm.warm_up(WARMUP)
        warm.close()
        script = wrk_script(chaos_body(), work)
        if args.ui_nice:
            psutil.Process(ui_pid(server)).nice(args.ui_nice)
        if args.ui_idle:
            for task in Path(f"/proc/{ui_pid(server)}/task").iterdir():
                os.sched_setscheduler(int(task.name), os.SCHED_IDLE, os.sched_param(0))
        watched = {"ui": [ui_pid(server)], "browsers": browser_pids,
                   "img2video worker": server.worker_pids("img2video")}

        def cpu_now() -> dict[str, float]:
            return {"front alone": cpu_of([server.proc.pid], with_children=False),
                    **{name: cpu_of(pids) for name, pids in watched.items()}}

        def load(state: str) -> tuple[Callable[[], None], Callable[[], int]]:
            """Start the state's work; return how to stop it and how many jobs it has run."""
            if state == "api":
                api_loop.start()
                return api_loop.stop, lambda: api_loop.done
            if state in ("busy", "control"):
                for driver in browsers:
                    driver.get(BUSY_PAGE % (max(1, args.busy_mb * 262144), args.busy_share * 50))
                renice(browser_pids, args.browser_nice)
                if state == "control":
                    api_loop.start()

                def stop_busy() -> None:
                    for driver in browsers:
                        driver.get("about:blank")
                    if state == "control":
                        api_loop.stop()
                return stop_busy, (lambda: api_loop.done) if state == "control" else (lambda: 0)
            if state == "ui":
                service_page.open_tab(ui_url, "service")
                if not args.service_only:
                    job_page.start_jobs(ui_url)
                renice(browser_pids, args.browser_nice)  # renderers started since

                def stop() -> None:
                    if not args.service_only:
                        job_page.stop_jobs()
                    service_page.get("about:blank")
                return stop, lambda: job_page.done
            return lambda: None, lambda: 0

        def measure(state: str) -> dict[str, Any]:
            stop, done = load(state)
            spy = None
            try:
                time.sleep(SETTLE_S)
                jobs_before = done()
                cpu_before = cpu_now()
                if args.py_spy and state == "ui":
                    spy = record_ui(ui_pid(server), args.py_spy)
                started = time.perf_counter()
                client = KeepAlivePost(url, body)  # a new connection: an idle one is closed after 5 s
                client.warm_up(ROUND_WARMUP)
                c1 = [client.post_ms() for _ in range(args.requests)]
                client.close()
                out = wrk(url, script, 8, args.seconds)
                run = parse_wrk(out, 8, (0.0, 0.0, 0.0))
                wall = time.perf_counter() - started
                cpu = {name: (value - cpu_before[name]) / wall for name, value in cpu_now().items()}
                jobs = done() - jobs_before
            finally:
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(30)
                stop()
            if run.errors:
                raise RuntimeError(f"wrk had {run.errors} errors at c=8")
            progress(f"{state}: c=1 p50 {percentile(c1, 50):.3f} ms, c=8 p50 {run.p50_ms:.3f} ms, "
                     f"{jobs} jobs")
            return {"c1": c1, "c8": (run.p50_ms, run.p99_ms, run.ok_per_s), "cpu": cpu, "jobs": jobs,
                    "wall": wall}

        rounds = alternate({state: (lambda s=state: measure(s)) for state in args.states}, args.rounds)
    finally:
        for browser in browsers:
            browser.quit()
        server.stop()
        for spinner in spinners:
            spinner.kill()
    report(args, rounds)
    return 0


def wait_livez(url: str, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while not _livez(url):
        if time.monotonic() > deadline:
            raise TimeoutError(f"the UI at {url} did not answer /livez")
        time.sleep(0.2)


def _livez(url: str) -> bool:
    try:
        return httpx.get(f"{url}/livez", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def report(args: argparse.Namespace, rounds: Any) -> None:
    states = args.states
    c1 = {s: [t for r in rounds[s] for t in r["c1"]] for s in states}
    c8 = {s: [r["c8"] for r in rounds[s]] for s in states}
    fig = {s: {"c=1 p50": percentile(c1[s], 50), "c=1 p99": percentile(c1[s], 99),
               "c=8 p50": statistics.median(x[0] for x in c8[s]),
               "c=8 p99": statistics.median(x[1] for x in c8[s])} for s in states}
    compared = (("api", "idle"), ("ui", "api"), ("ui", "busy"), ("ui", "control"), ("ui", "idle"))
    ratios = [(b, a) for b, a in compared if a in states and b in states]
    steal = rounds.worst_by_round()
    browsers = "in SCHED_IDLE" if args.browser_idle else f"at nice {args.browser_nice}"
    work = "the Service tab only, no jobs" if args.service_only else "img2video jobs and the Service reads"
    print(f"# API latency by state ({', '.join(states)}; {work}): chaos no-op predict, {args.rounds} "
          f"alternating rounds (c=1: {args.requests} requests a round; c=8: wrk {args.seconds} s a round); "
          f"browsers {browsers}; UI process at nice {args.ui_nice or 'as started'}; {machine()}")
    print(f"# rounds with steal over {STEAL_CLEAN:.0%}: {sum(s > STEAL_CLEAN for s in steal)} "
          f"(worst {max(steal):.0%})\n")
    rows = [[name] + [f"{fig[s][name]:.3f}" for s in states]
            + [f"{fig[b][name] / fig[a][name]:.2f}" for b, a in ratios] for name in fig[states[0]]]
    print(table(["ms", *states, *(f"{b} / {a}" for b, a in ratios)], rows))
    for b, a in ratios:
        pairs = [statistics.median(y["c1"]) / statistics.median(x["c1"])
                 for x, y in zip(rounds[a], rounds[b], strict=True)]
        print(f"c=1 p50 {b} / {a} by round: {', '.join(f'{p:.2f}' for p in pairs)}; "
              f"median {statistics.median(pairs):.2f}")
    cpu_rows = [[name] + [f"{statistics.median(r['cpu'][name] for r in rounds[s]) * 100:.1f}" for s in states]
                for name in rounds[states[0]][0]["cpu"]]
    print()
    print(table(["CPU % of one core (median of rounds)", *states], cpu_rows))
    for state in ("api", "control", "ui"):
        if state in states and not args.service_only:
            jobs, walls = [r["jobs"] for r in rounds[state]], [r["wall"] for r in rounds[state]]
            print(f"img2video jobs run in state {state} while measuring: {sum(jobs)} in {sum(walls):.0f} s "
                  f"({sum(jobs) / sum(walls):.2f} a second)")


if __name__ == "__main__":
    sys.exit(main())

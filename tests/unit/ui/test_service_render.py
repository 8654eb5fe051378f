"""The Service tab's HTML: the markup the browser tests rely on, and escaping of everything the
API says (a model name or a reason holding markup is shown as text, never run)."""

from __future__ import annotations

import re
from html.parser import HTMLParser
from typing import Any

from watchkeeper.ui.service_events import Event
from watchkeeper.ui.service_feed import Problem, Reading, ServiceFeed
from watchkeeper.ui.service_render import error_html, events_html, models_html, size, status_html

EVIL = "<script>alert(1)</script>"
ATTR = 'x" onmouseover="alert(2)'


class Tags(HTMLParser):
    """Every start tag, with its attributes, and the text inside each ``td`` by class."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.cells: list[dict[str, str]] = []
        self._cell: str | None = None
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.cells.append({})
        if tag == "td" and self.cells:
            self._cell = dict(attrs).get("class") or ""
            self.cells[-1][self._cell] = ""

    def handle_endtag(self, tag: str) -> None:
        if tag == "td":
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self.cells[-1][self._cell] += data


def replica(index: int, **changes: Any) -> dict[str, Any]:
    found: dict[str, Any] = {"index": index, "pid": 4100 + index, "state": "ready", "restarts": 0,
                             "last_exit": None, "last_exit_at": None, "last_load_error": None,
                             "rss_bytes": 37851136, "startup_ms": {"fork": 1.7, "warmup": 0.9}}
    found.update(changes)
    return found


def health(name: str = "chaos", **model: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "state": "ready", "reason": None, "ready_replicas": 2, "load_failures": 0,
        "replicas": [replica(0), replica(1, restarts=2, last_exit="signal SIGKILL",
                                         last_exit_at=990.0)],
        "queue_depth": 3, "overloaded": False, "in_flight": 1,
        "memory": [{"device": "cpu", "budget_bytes": 19607152230, "reserved_bytes": 1048576,
                    "free_bytes": 19606103654, "batches": 1}],
        "quarantined_inputs": 0,
        "probe": {"ok": True, "at": 995.0, "latency_ms": 0.13, "error": None, "skipped": None},
        "template": {"state": "ready", "pid": 4000, "deaths": 0}}
    entry.update(model)
    return {"status": "ok", "checked_at": 1000.0, "uptime_s": 125.0, "shutting_down": False,
            "models": {name: entry},
            "resources": {"status": "ok", "reasons": [], "gpus": [],
                          "memory": {"total_bytes": 25276194816, "used_bytes": 686878720, "percent": 2.7},
                          "disks": [{"path": "/data", "percent_used": 24.5}]}}


def fed(report: dict[str, Any], now: float = 2000.0) -> ServiceFeed:
    feed = ServiceFeed()
    feed.update(Reading(health=report), now=now)
    return feed


def test_one_row_per_replica_with_the_cells_the_tests_read() -> None:
    page = Tags(models_html(fed(health()), now=2004.0))
    rows = [attrs for tag, attrs in page.tags if tag == "tr" and attrs.get("class") == "wk-replica"]
    assert [(r["data-model"], r["data-replica"]) for r in rows] == [("chaos", "0"), ("chaos", "1")]
    second = next(c for c in page.cells if c.get("index") == "1")
    assert second["pid"] == "4101" and second["state"] == "ready" and second["restarts"] == "2"
    # the exit's age against the report's own clock: 10 s before it was read, read 4 s ago
    assert second["last-exit"] == "signal SIGKILL 14 s ago"
    assert second["rss"] == "36.1 MiB"
    model = next(c for c in page.cells if c.get("name") == "chaos")
    assert model["state"] == "ready" and model["ready"] == "2/2" and model["queue"] == "3"
    assert model["probe"] == "passed in 0.13 ms 9 s ago"
    assert model["memory"] == "cpu: 1.0 MiB reserved of 18.3 GiB"


def test_markup_from_the_api_is_shown_as_text() -> None:
    report = health(name=EVIL + ATTR, state="failed", reason=EVIL,
                    replicas=[replica(0, last_exit=EVIL, last_load_error=ATTR, state=EVIL)],
                    probe={"ok": False, "at": 999.0, "error": EVIL, "skipped": None})
    report["resources"]["reasons"] = [EVIL]
    feed = fed(report)
    feed.events.append(Event(1500.0, "crash", EVIL, EVIL + ATTR))
    feed.problem = Problem("auth", EVIL, ATTR, 403)
    for text in (models_html(feed, 2000.0), events_html(feed), error_html(feed.problem),
                 status_html(feed, 2000.0)):
        assert "<script" not in text and 'x" on' not in text, text
    page = Tags(models_html(feed, 2000.0))
    tags = {tag for tag, _ in page.tags}
    assert tags <= {"table", "thead", "tbody", "tr", "th", "td", "span", "br", "p"}
    row = next(attrs for tag, attrs in page.tags if tag == "tr" and attrs.get("class") == "wk-replica")
    assert row["data-model"] == EVIL + ATTR  # the attribute holds the name, quotes and all
    assert all(not name.startswith("on") for _, attrs in page.tags for name in attrs)
    assert EVIL in next(c for c in page.cells if "last-exit" in c)["last-exit"]
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in events_html(feed)


def test_the_status_word() -> None:
    feed = fed(health())
    assert re.match(r'<span class="wk-status wk-good">ok</span>', status_html(feed, 2000.0))
    assert "up 2 min" in status_html(feed, 2000.0)
    degraded = health()
    degraded["status"] = "degraded"
    assert ">degraded</span>" in status_html(fed(degraded), 2000.0)
    feed.update(Reading(problem=Problem("unreachable", "refused")), now=2002.0)
    shown = status_html(feed, 2002.0)
    assert ">unreachable</span>" in shown and not re.search(r"\bok\b", shown)
    assert "the API has not answered since" in models_html(feed, 2002.0)  # last rows kept, marked
    feed.update(Reading(problem=Problem("auth", "this key lacks the 'read' scope", "Use a key...", 403)),
                now=2004.0)
    assert ">forbidden</span>" in status_html(feed, 2004.0)


def test_the_error_box_has_the_apis_words() -> None:
    assert error_html(None) == ""
    box = error_html(Problem("auth", "this request needs an API key",
                             "Send an API key: Authorization: Bearer KEY (or X-API-Key: KEY).", 401))
    assert 'class="wk-error"' in box and "The API refused the key (401)" in box
    assert "this request needs an API key" in box and "Authorization: Bearer KEY" in box
    assert "<code>read</code> scope" in box
    gone = error_html(Problem("unreachable", "the API at http://127.0.0.1:1 cannot be reached"))
    assert "The API does not answer" in gone and "Traceback" not in gone


def test_events_newest_first_with_their_time() -> None:
    feed = fed(health())
    feed.events.extend([Event(1000.0, "crash", "chaos", "first"), Event(1010.0, "kill", "chaos", "second")])
    shown = events_html(feed)
    assert shown.index("second") < shown.index("first")
    assert 'class="wk-event wk-event-kill"' in shown and "<time>" in shown
    assert "Nothing has happened" in events_html(ServiceFeed())


def test_sizes() -> None:
    assert [size(0), size(1023), size(1536), size(37851136), size(19607152230), size(None)] == \
        ["0 B", "1023 B", "1.5 KiB", "36.1 MiB", "18.3 GiB", ""]

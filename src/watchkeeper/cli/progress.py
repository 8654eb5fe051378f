"""What ``watchkeeper jobs`` shows: a job's progress (on stderr) and the jobs table (on stdout),
drawn by rich on a terminal and written as plain lines anywhere else.

Runs in the user's shell, in the CLI process; no network (``watchkeeper.cli.jobs`` talks to the
server and feeds :class:`ProgressDisplay`). On a terminal the progress is a rich.progress bar
redrawn in place (rich's refresh thread moves its clock on between events) and ``jobs list`` a
rich.table, states in colour. When the stream is not a terminal (a pipe, a file, a CI log) the
output is what scripts read: one progress line per state change and per 10 % step, like
``[##########..........]  50%  frame 16/32  running 8.0s``, and the table as space-padded
columns, without colour or control codes. Whether a stream is a terminal is its ``isatty()``,
never rich's environment guesses (``FORCE_COLOR``), so a script's pipe stays plain.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TextIO

from rich.console import Console
from rich.progress import BarColumn, Progress, ProgressColumn, Task, TaskID, TextColumn
from rich.table import Column, Table
from rich.text import Text

__all__ = ["JOB_COLUMNS", "STATE_STYLES", "ProgressDisplay", "clean_message", "format_bar", "percent",
           "print_jobs"]

#: A job state's colour on a terminal.
STATE_STYLES = {"queued": "yellow", "running": "cyan", "succeeded": "green", "failed": "bold red",
                "cancelled": "magenta"}
JOB_COLUMNS = ("ID", "MODEL", "STATE", "PROGRESS", "ATTEMPTS", "CREATED")
_MAX_MESSAGE = 60
_EPSILON = 1e-9  # 0.29 * 100 is 28.999...: shown as 29 %


def _fraction(progress: float) -> float:
    return min(1.0, max(0.0, progress)) if progress == progress else 0.0


def percent(progress: float) -> int:
    """A job's progress (0..1, maybe out of bounds or NaN) as a whole percentage, rounded down."""
    return int(_fraction(progress) * 100 + _EPSILON)


def clean_message(message: str) -> str:
    """A job's message on one line: control characters and runs of blanks become one space,
    and it is cut to 60 characters (with ``…``)."""
    text = " ".join("".join(c if c.isprintable() else " " for c in message).split())
    return text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…"


def format_bar(progress: float, message: str, state: str, elapsed_s: float, width: int = 20) -> str:
    """The plain progress line: ``[##########..........]  50%  frame 16/32  running 12.3s``"""
    filled = int(_fraction(progress) * width + _EPSILON)
    parts = [f"[{'#' * filled}{'.' * (width - filled)}] {percent(progress):3d}%"]
    if text := clean_message(message):
        parts.append(text)
    parts.append(f"{state} {max(0.0, elapsed_s):.1f}s")
    return "  ".join(parts)


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except ValueError:  # closed
        return False


def _console(stream: TextIO) -> Console:
    """A rich console on a terminal ``stream`` (markup and highlighting off: text is data)."""
    return Console(file=stream, force_terminal=True, highlight=False, emoji=False)


# --- progress -----------------------------------------------------------------------------


class _StateColumn(ProgressColumn):
    """The task's description, a job state, in its colour."""

    def render(self, task: Task) -> Text:
        return Text(task.description, style=STATE_STYLES.get(task.description, ""))


class _InStateColumn(ProgressColumn):
    """Seconds since the job entered its state (the task's ``since`` field), like ``8.0s``."""

    def render(self, task: Task) -> Text:
        return Text(f"{max(0.0, task.get_time() - task.fields['since']):.1f}s", style="progress.elapsed")


def _live_bar(stream: TextIO, clock: Callable[[], float]) -> Progress:
    """``running ━━━━━━━━━━╸━━━━━━━━━  50% frame 16/32 8.0s``, redrawn 10 times a second."""
    return Progress(
        _StateColumn(),
        BarColumn(),
        TextColumn("{task.fields[percent]:>3d}%", markup=False),
        TextColumn("{task.fields[message]}", markup=False, table_column=Column(no_wrap=True)),
        _InStateColumn(),
        console=_console(stream),
        get_time=clock,
    )


class ProgressDisplay:
    """A job's progress on ``stream``: on a terminal a rich progress bar redrawn in place, else
    one plain line per state change and per 10 % step. The elapsed time counts from entering
    the state. ``tty`` overrides ``stream.isatty()``; ``clock`` is for tests."""

    def __init__(self, stream: TextIO, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.clock = stream, clock
        self.tty = _is_terminal(stream) if tty is None else tty
        self.state, self.progress, self.message = "", 0.0, ""
        self._since, self._decile = clock(), -1
        self._bar: Progress | None = None
        self._task = TaskID(0)

    def update(self, state: str, progress: float, message: str) -> None:
        changed = state != self.state
        if changed:
            self.state, self._since, self._decile = state, self.clock(), -1
        self.progress, self.message = progress, clean_message(message)
        if self.tty:
            self._draw()
        else:
            self._log()

    def close(self) -> None:
        """Stop the live bar (leaving its last state on screen); again is harmless."""
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def _log(self) -> None:
        decile = int(_fraction(self.progress) * 10 + _EPSILON)
        if decile > self._decile:
            line = format_bar(self.progress, self.message, self.state, self.clock() - self._since)
            self.stream.write(line + "\n")
            self.stream.flush()
        self._decile = max(decile, self._decile)

    def _draw(self) -> None:
        if self._bar is None:
            self._bar = _live_bar(self.stream, self.clock)
            self._task = self._bar.add_task(self.state, total=1.0, percent=0, message="", since=self._since)
            self._bar.start()
        self._bar.update(self._task, completed=_fraction(self.progress), description=self.state,
                         percent=percent(self.progress), message=self.message, since=self._since,
                         refresh=True)  # each event drawn when it comes; the thread moves the clock on


# --- jobs table ---------------------------------------------------------------------------


def _job_row(job: Mapping[str, Any]) -> tuple[str, ...]:
    created = job.get("created_at")
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(created)) if created else "-"
    return (str(job.get("id")), str(job.get("model")), str(job.get("state")),
            f"{percent(float(job.get('progress') or 0))}%",
            f"{job.get('attempts', 0)}/{job.get('max_attempts', '?')}", when)


def print_jobs(jobs: Iterable[Mapping[str, Any]], out: TextIO, tty: bool | None = None) -> None:
    """The ``jobs list`` table: a rich table on a terminal, else columns padded with spaces
    (a header line, then one line per job; ``split()`` reads them). ``tty`` overrides
    ``out.isatty()``."""
    rows = [_job_row(job) for job in jobs]
    if _is_terminal(out) if tty is None else tty:
        _console(out).print(_rich_table(rows))
        return
    lines = [JOB_COLUMNS, *rows]
    widths = [max(len(line[i]) for line in lines) for i in range(len(JOB_COLUMNS))]
    for line in lines:
        cells = (cell.ljust(width) for cell, width in zip(line, widths, strict=True))
        out.write("  ".join(cells).rstrip() + "\n")
    out.flush()


def _rich_table(rows: list[tuple[str, ...]]) -> Table:
    """One line per job; on a narrow terminal the other columns are cut short (``…``), never
    the id: it is copied into other commands."""
    table = Table(box=None, pad_edge=False, header_style="bold")
    id_width = max((len(row[0]) for row in rows), default=2)
    for name in JOB_COLUMNS:
        table.add_column(name, no_wrap=True, min_width=id_width if name == "ID" else None)
    state = JOB_COLUMNS.index("STATE")
    for row in rows:  # Text, not str: a model name is not rich markup
        table.add_row(*(Text(cell, style=STATE_STYLES.get(cell, "") if i == state else "")
                        for i, cell in enumerate(row)))
    return table

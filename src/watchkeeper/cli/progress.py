"""The pure pieces of ``watchkeeper jobs``: ``NAME=VALUE`` parsing, server-sent events,
the progress bar and its display.

Runs in the user's shell, in the CLI process (the CLI talks to the server over HTTP only;
see ``watchkeeper.cli.jobs``). Nothing here does I/O except :class:`ProgressDisplay`, which
writes to the stream it is given: every piece can be tested without a server or a network.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, NamedTuple, TextIO

__all__ = ["ProgressDisplay", "SseEvent", "SseParser", "format_bar", "parse_assignment",
           "parse_file_assignment", "parse_value", "percent"]

_MAX_MESSAGE = 60
_EPSILON = 1e-9  # 0.29 * 100 is 28.999...: shown as 29 %

# --- NAME=VALUE ---------------------------------------------------------------------------


def parse_value(text: str) -> Any:
    """``5``, ``true``, ``"x"``, ``[1,2]`` as JSON; anything else (``512p``, ``NaN``) as a string."""
    try:
        return json.loads(text, parse_constant=_not_json)
    except ValueError:
        return text


def _not_json(name: str) -> Any:
    raise ValueError(name)


def parse_assignment(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` (an argparse ``type``), the value read by :func:`parse_value`."""
    name, value = parse_file_assignment(text, allow_empty=True)
    return name, parse_value(value)


def parse_file_assignment(text: str, allow_empty: bool = False) -> tuple[str, str]:
    """``NAME=FILE`` (an argparse ``type``): the value is kept as it is."""
    name, equals, value = text.partition("=")
    if not equals or not name.strip() or not (value or allow_empty):
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value


# --- server-sent events -------------------------------------------------------------------


class SseEvent(NamedTuple):
    id: str | None
    event: str
    data: str


class SseParser:
    """Server-sent events fed one line at a time: an event is dispatched at the blank line
    ending it; comments (``: keep-alive``) are skipped; the last ``id`` is kept."""

    def __init__(self, last_id: str | None = None) -> None:
        self.last_id = last_id
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> SseEvent | None:
        line = line.rstrip("\r\n")
        if not line:
            data, event = self._data, self._event or "message"
            self._data, self._event = [], ""
            return SseEvent(self.last_id, event, "\n".join(data)) if data else None
        field, _, value = line.partition(":")
        value = value[1:] if value.startswith(" ") else value
        if field == "data":
            self._data.append(value)
        elif field == "event":
            self._event = value
        elif field == "id" and "\0" not in value:
            self.last_id = value
        return None  # a comment has an empty field name

    def feed_lines(self, lines: Iterable[str]) -> Iterator[SseEvent]:
        for line in lines:
            if (event := self.feed(line)) is not None:
                yield event


# --- progress -----------------------------------------------------------------------------


def _fraction(progress: float) -> float:
    return min(1.0, max(0.0, progress)) if progress == progress else 0.0


def percent(progress: float) -> int:
    """A job's progress (0..1, maybe out of bounds or NaN) as a whole percentage, rounded down."""
    return int(_fraction(progress) * 100 + _EPSILON)


def format_bar(progress: float, message: str, state: str, elapsed_s: float, width: int = 20) -> str:
    """``[##########..........]  50%  frame 16/32  running 12.3s``"""
    filled = int(_fraction(progress) * width + _EPSILON)
    parts = [f"[{'#' * filled}{'.' * (width - filled)}] {percent(progress):3d}%"]
    text = " ".join("".join(c if c.isprintable() else " " for c in message).split())
    if text:
        parts.append(text if len(text) <= _MAX_MESSAGE else text[: _MAX_MESSAGE - 1] + "…")
    parts.append(f"{state} {max(0.0, elapsed_s):.1f}s")
    return "  ".join(parts)


class ProgressDisplay:
    """A job's progress on ``stream``: on a TTY one line redrawn in place, else one line per
    state change and per 10 % step. The elapsed time counts from entering the state."""

    def __init__(self, stream: TextIO, tty: bool | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stream, self.clock = stream, clock
        self.tty = stream.isatty() if tty is None else tty
        self.state, self.progress, self.message = "", 0.0, ""
        self._since, self._decile, self._drawn = clock(), -1, False

    def update(self, state: str, progress: float, message: str) -> None:
        changed, decile = state != self.state, int(_fraction(progress) * 10 + _EPSILON)
        if changed:
            self.state, self._since, self._decile = state, self.clock(), -1
        self.progress, self.message = progress, message
        if self.tty:
            self.refresh()
        elif decile > self._decile:
            self._write(self._line() + "\n")
        self._decile = max(decile, self._decile)

    def refresh(self) -> None:
        """Redraw the TTY line (its elapsed time moves on between events)."""
        if self.tty and self.state:
            width = max(10, shutil.get_terminal_size().columns - 1)
            self._write("\r" + self._line()[:width] + "\x1b[K")
            self._drawn = True

    def close(self) -> None:
        if self._drawn:
            self._write("\n")
            self._drawn = False

    def _line(self) -> str:
        return format_bar(self.progress, self.message, self.state, self.clock() - self._since)

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()

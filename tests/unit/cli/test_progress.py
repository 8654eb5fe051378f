"""What ``watchkeeper jobs`` shows (``watchkeeper.cli.progress``): the plain progress lines and
table that scripts read when the stream is not a terminal, and the rich bar and table (colours,
redrawn in place) when it is one. The "terminal" is a StringIO said to be one (``tty=True``)."""

from __future__ import annotations

import io
import re

import pytest

from watchkeeper.cli.progress import ProgressDisplay, clean_message, format_bar, percent, print_jobs

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


# --- the plain line -----------------------------------------------------------------------


def test_format_bar_looks_like_the_spec() -> None:
    assert format_bar(0.5, "frame 16/32", "running", 12.34) == \
        "[##########..........]  50%  frame 16/32  running 12.3s"


@pytest.mark.parametrize(("progress", "bar", "shown"), [
    (0.0, "." * 20, "  0%"), (1.0, "#" * 20, "100%"), (1.7, "#" * 20, "100%"), (-0.2, "." * 20, "  0%"),
    (float("nan"), "." * 20, "  0%"), (0.29, "#" * 5 + "." * 15, " 29%"), (0.999, "#" * 19 + ".", " 99%"),
])
def test_format_bar_clamps_and_rounds_down(progress: float, bar: str, shown: str) -> None:
    assert format_bar(progress, "", "queued", 0) == f"[{bar}] {shown}  queued 0.0s"


@pytest.mark.parametrize(("progress", "shown"), [
    (0.0, 0), (0.29, 29), (0.999, 99), (1.0, 100), (2.0, 100), (-1.0, 0), (float("nan"), 0)])
def test_percent_clamps_and_rounds_down(progress: float, shown: int) -> None:
    assert percent(progress) == shown


def test_messages_are_cleaned_and_shortened() -> None:
    assert clean_message("a\nb\x1b[2J\r\tc") == "a b [2J c"
    assert clean_message("x" * 100) == "x" * 59 + "…"
    line = format_bar(0.1, "a\nb\x1b[2J\r\tc " + "x" * 100, "running", 1, width=10)
    assert line.startswith("[#.........]  10%  a b [2J c xxx")
    assert "\n" not in line and "\x1b" not in line and "\r" not in line
    assert "…  running 1.0s" in line and len(line) < 100


# --- progress, not on a terminal ----------------------------------------------------------


def test_progress_without_a_tty_prints_state_changes_and_ten_percent_steps() -> None:
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, tty=False, clock=clock)
    display.update("queued", 0.0, "")
    clock.now += 2
    display.update("running", 0.0, "")
    for step in range(1, 33):
        clock.now += 0.5
        display.update("running", step / 32, f"frame {step}/32")
    display.update("succeeded", 1.0, "done")
    display.close()
    lines = out.getvalue().splitlines()
    assert lines[0] == "[....................]   0%  queued 0.0s"
    assert lines[1] == "[....................]   0%  running 0.0s"
    assert [line.split("%")[0][-3:].strip() for line in lines[2:-1]] == [
        "12", "21", "31", "40", "50", "62", "71", "81", "90", "100"]
    assert lines[6] == "[##########..........]  50%  frame 16/32  running 8.0s"
    assert lines[-1] == "[####################] 100%  done  succeeded 0.0s"


def test_a_pipe_is_not_a_terminal_even_when_colour_is_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich would take FORCE_COLOR as a terminal; a script's pipe must stay plain."""
    monkeypatch.setenv("FORCE_COLOR", "1")
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    out = io.StringIO()
    display = ProgressDisplay(out, clock=Clock())
    display.update("running", 0.5, "half")
    display.close()
    assert not display.tty
    assert out.getvalue() == "[##########..........]  50%  half  running 0.0s\n"


# --- progress, on a terminal: rich ----------------------------------------------------------


def test_progress_on_a_tty_is_a_rich_bar_redrawn_in_place() -> None:
    out, clock = io.StringIO(), Clock()
    display = ProgressDisplay(out, tty=True, clock=clock)
    display.update("queued", 0.0, "")
    clock.now += 3
    display.update("running", 0.25, "frame [b]8[/b]/32")  # not rich markup: shown as it is
    clock.now += 1.5
    display.update("running", 0.5, "frame 16/32")
    display.close()
    display.close()
    text = out.getvalue()
    assert "\x1b[?25l" in text and text.endswith("\x1b[?25h")  # cursor hidden, then shown again
    assert "\x1b[36mrunning" in text  # in colour
    assert "[" + "#" * 10 not in text  # not the plain bar
    frames = [ANSI.sub("", frame).strip() for frame in re.split(r"\r|\n", text)]
    last = [frame for frame in frames if frame][-1]
    assert re.fullmatch(r"running [━╸╺ ]+ 50% frame 16/32 1\.5s", last), last
    assert any(re.fullmatch(r"running .* 25% frame \[b\]8\[/b\]/32 0\.0s", f) for f in frames), frames


# --- jobs table ---------------------------------------------------------------------------

JOBS = [
    {"id": "a" * 32, "model": "chaos", "state": "succeeded", "progress": 1.0, "attempts": 1,
     "max_attempts": 3, "created_at": None},
    {"id": "b" * 32, "model": "img2video[x]", "state": "failed", "progress": 0.299, "attempts": 3,
     "max_attempts": 3},
]


def test_the_jobs_table_is_plain_columns_when_not_a_terminal() -> None:
    out = io.StringIO()
    print_jobs(JOBS, out, tty=False)
    assert out.getvalue() == (
        "ID                                MODEL         STATE      PROGRESS  ATTEMPTS  CREATED\n"
        f"{'a' * 32}  chaos         succeeded  100%      1/3       -\n"
        f"{'b' * 32}  img2video[x]  failed     29%       3/3       -\n")


def test_an_empty_jobs_table_is_its_header() -> None:
    out = io.StringIO()
    print_jobs([], out, tty=False)
    assert out.getvalue() == "ID  MODEL  STATE  PROGRESS  ATTEMPTS  CREATED\n"


@pytest.mark.parametrize("columns", [120, 60])
def test_the_jobs_table_on_a_terminal_colours_states_and_keeps_ids_whole(
        columns: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    out = io.StringIO()
    print_jobs(JOBS, out, tty=True)
    text = out.getvalue()
    assert "\x1b[1;31m" in text and "\x1b[32m" in text  # failed in red, succeeded in green
    lines = ANSI.sub("", text).splitlines()
    assert len(lines) == 3 and all(len(line) <= columns for line in lines)
    assert lines[0].startswith("ID ")
    assert lines[1].startswith("a" * 32 + "  ") and lines[2].startswith("b" * 32 + "  ")
    if columns == 120:
        assert lines[0].split() == ["ID", "MODEL", "STATE", "PROGRESS", "ATTEMPTS", "CREATED"]
        assert lines[2].split() == ["b" * 32, "img2video[x]", "failed", "29%", "3/3", "-"]  # not markup

"""`watchkeeper doctor [LOGFILE|-]`: reads a server's JSON log and prints a diagnosis.

Runs in the CLI process; reads a file (or stdin with ``-``, the default), never the network.
The analysis is ``watchkeeper.cli.diagnosis``; this module only reads and prints: on a
terminal a rich table with the kinds in colour, in a pipe plain lines (one per finding, then
its suggestion), and with ``--json`` one JSON object. Exit code 0 when nothing was found,
1 when there are findings, 2 when the log cannot be read.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from rich.console import Console
from rich.table import Table
from rich.text import Text

from watchkeeper.cli.diagnosis import Report, diagnose, parse_lines

__all__ = ["add_doctor_command", "doctor", "print_report"]

EXIT_CLEAN, EXIT_FINDINGS, EXIT_UNREADABLE = 0, 1, 2
#: A finding kind's colour on a terminal.
KIND_STYLES = {"model": "bold red", "jobs": "bold red", "restart": "red", "out_of_memory": "red",
               "error": "yellow", "probe": "yellow", "slowdown": "magenta", "degraded": "cyan"}


def add_doctor_command(commands: Any) -> None:
    """Register ``doctor`` on the ``watchkeeper`` command's subparsers."""
    doctor_cmd = commands.add_parser("doctor", help="diagnose a server from its JSON log")
    doctor_cmd.add_argument("logfile", nargs="?", default="-", help="the log file (default -: stdin)")
    doctor_cmd.add_argument("--json", action="store_true", help="one JSON object, for machines")
    doctor_cmd.add_argument("--top", type=int, default=5, help="how many slowest requests to show")
    doctor_cmd.set_defaults(run=doctor)


def doctor(args: argparse.Namespace) -> int:
    try:
        if args.logfile == "-":
            records, bad = parse_lines(sys.stdin)
        else:
            with open(args.logfile, encoding="utf-8", errors="replace") as lines:
                records, bad = parse_lines(lines)
    except OSError as exc:
        print(f"watchkeeper doctor: cannot read {args.logfile}: {exc}", file=sys.stderr)
        return EXIT_UNREADABLE
    report = diagnose(records, bad, top=args.top)
    if args.json:
        sys.stdout.write(json.dumps(report.to_dict(), default=str) + "\n")
    else:
        print_report(report, sys.stdout)
    return EXIT_FINDINGS if report.findings else EXIT_CLEAN


def print_report(report: Report, out: TextIO, tty: bool | None = None) -> None:
    """The diagnosis: a rich table on a terminal, plain lines elsewhere (``tty`` overrides)."""
    if out.isatty() if tty is None else tty:
        _print_rich(report, Console(file=out, force_terminal=True, highlight=False))
    else:
        out.write("\n".join(plain_lines(report)) + "\n")
    out.flush()


def _summary(report: Report) -> str:
    unreadable = f", {report.unreadable} unreadable line(s)" if report.unreadable else ""
    return (f"{report.records} log records, {report.requests} requests{unreadable}: "
            f"{len(report.findings) or 'no'} finding(s)")


def plain_lines(report: Report) -> list[str]:
    """The report as plain text: a summary, each finding and its suggestion, the slowest requests."""
    lines = [_summary(report)]
    for f in report.findings:
        lines.append(f"{f.kind.upper():<14} {f.model:<12} {f.cause}: {f.detail}")
        lines.append(f"{'':<14} suggestion: {f.suggestion}")
    if report.slowest:
        lines.append("slowest requests:")
        lines += [f"  {_slow_text(row)}" for row in report.slowest]
    return lines


def _slow_text(row: dict[str, Any]) -> str:
    return (f"{row.get('total_ms')} ms  {row.get('model')}  params {json.dumps(row.get('params'))}"
            f"  queue {row.get('queue_ms')} ms  request {row.get('request_id')}")


def _print_rich(report: Report, console: Console) -> None:
    console.print(Text(_summary(report), style="bold"))
    if report.findings:
        table = Table(header_style="bold", show_lines=True)
        for name in ("KIND", "MODEL", "CAUSE", "COUNT", "WHAT", "SUGGESTION"):
            table.add_column(name, overflow="fold")
        for f in report.findings:  # Text, not str: log values are not rich markup
            table.add_row(Text(f.kind, style=KIND_STYLES.get(f.kind, "")), Text(f.model), Text(f.cause),
                          Text(str(f.count)), Text(f.detail), Text(f.suggestion, style="dim"))
        console.print(table)
    if report.slowest:
        console.print(Text("slowest requests", style="bold"))
        for row in report.slowest:
            console.print(Text("  " + _slow_text(row)))

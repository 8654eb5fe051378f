"""The ``watchkeeper`` command: ``serve`` (the front process) and ``check`` (a health probe).

``watchkeeper serve`` is the front process's entry point: it loads the configuration,
configures logging (JSON lines on stderr) and hands over to ``watchkeeper.front.server`` (uvicorn,
the runtime, and the shutdown sequence on SIGTERM / Ctrl-C). ``serve --ui`` also serves the web
UI (``[ui] enabled``), a process of its own; with it on, the addresses of the API and of the UI
are printed on stdout at start-up.

``watchkeeper check [URL] [--deep]`` asks a running server and exits 0 when healthy,
1 when unhealthy and 2 when it cannot be reached: for cron jobs and monitoring scripts.

``watchkeeper jobs ...`` (submit, status, wait, cancel, result, list) drives durable jobs
through the HTTP API; see ``watchkeeper.cli.jobs``. ``watchkeeper keys ...`` (add, list,
revoke) edits the API key file; see ``watchkeeper.cli.keys``. ``watchkeeper models list|check``
shows the configured models' files in the model cache; see ``watchkeeper.cli.models``.
``watchkeeper doctor [LOGFILE|-]`` diagnoses a server from its JSON log; see ``watchkeeper.cli.doctor``.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from collections.abc import Sequence
from typing import Any

import httpx

from watchkeeper.cli.doctor import add_doctor_command
from watchkeeper.cli.jobs import add_job_commands
from watchkeeper.cli.keys import add_key_commands
from watchkeeper.cli.models import add_model_commands
from watchkeeper.config import Config
from watchkeeper.errors import ConfigError

__all__ = ["main"]

EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_UNREACHABLE = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    result: int = args.run(args)
    return result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="watchkeeper", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="serve the configured models (no config: built-in apps)")
    serve.add_argument("--config", help="TOML file (default: $WK_CONFIG, else the built-in apps)")
    serve.add_argument("--host", help="listen address (overrides server.host)")
    serve.add_argument("--port", type=int, help="listen port (overrides server.port)")
    serve.add_argument("--ui", action="store_true",
                       help="also serve the web UI, a process of its own (sets ui.enabled)")
    serve.set_defaults(run=_serve)

    check = commands.add_parser("check", help="exit 0 if a server is healthy, 1 if not, 2 if unreachable")
    check.add_argument("url", nargs="?", default="http://127.0.0.1:8000", help="server base URL")
    check.add_argument("--deep", action="store_true",
                       help="read /health (models, probes, resources) instead of /readyz")
    check.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")
    check.set_defaults(run=_check)

    add_job_commands(commands)
    add_doctor_command(commands)
    add_key_commands(commands)
    add_model_commands(commands)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from watchkeeper.config_loading import load_config, resolve_config_path
    from watchkeeper.front.server import run_front
    from watchkeeper.logs import configure_logging

    try:
        config = load_config(resolve_config_path(args.config))
    except ConfigError as exc:
        print(f"watchkeeper: configuration refused:\n{exc.message}", file=sys.stderr)
        return 2
    server = config.server.model_copy(
        update={k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    )
    ui = config.ui.model_copy(update={"enabled": True}) if args.ui else config.ui
    config = config.model_copy(update={"server": server, "ui": ui})
    if ui.enabled and importlib.util.find_spec("gradio") is None:
        print("watchkeeper: the web UI needs Gradio: install the `ui` extra "
              "(pip install 'watchkeeper[ui]'), or serve without --ui / [ui] enabled", file=sys.stderr)
        return 2
    configure_logging(server.log_level, process="front")
    if ui.enabled:
        _print_addresses(config)
    try:
        run_front(config)
    except ConfigError as exc:  # e.g. the data dir is locked by another server
        print(f"watchkeeper: cannot start: {exc.message}\n{exc.suggestion}", file=sys.stderr)
        return 2
    return 0


def _print_addresses(config: Config) -> None:
    """The API's and the web UI's addresses, for the person who started the server."""
    from watchkeeper.supervision.ui_keeper import api_url, ui_url

    api = api_url(config.server)
    print(f"watchkeeper: API    {api}  (docs: {api}/docs)\n"
          f"watchkeeper: web UI {ui_url(config.ui, config.server)}  (also {api}/ui)", flush=True)


def _check(args: argparse.Namespace) -> int:
    base = args.url.rstrip("/")
    path = "/health" if args.deep else "/readyz"
    try:
        response = httpx.get(base + path, timeout=args.timeout)
    except httpx.HTTPError as exc:
        print(f"UNREACHABLE {base}: {exc}")
        return EXIT_UNREACHABLE
    try:
        body = response.json()
    except ValueError:
        body = {}
    healthy = response.status_code == 200
    print(("HEALTHY" if healthy else "UNHEALTHY") + f" {base}{path} {response.status_code}")
    for line in _summary(body, deep=args.deep):
        print("  " + line)
    return EXIT_HEALTHY if healthy else EXIT_UNHEALTHY


def _summary(body: dict[str, Any], deep: bool) -> list[str]:
    if not deep:
        return [f"{name}: {state}" for name, state in body.get("models", {}).items()]
    lines = [f"status: {body.get('status')}"]
    for name, model in body.get("models", {}).items():
        probe = model.get("probe") or {}
        if not probe:
            probe_text = "no probe yet"
        else:
            probe_text = "ok" if probe.get("ok") else f"FAILED {probe.get('error')}"
        reason = f" ({model['reason']})" if model.get("reason") else ""
        lines.append(f"{name}: {model.get('state')}{reason}; probe {probe_text}; "
                     f"queue {model.get('queue_depth')}")
    lines.extend(f"resources: {r}" for r in body.get("resources", {}).get("reasons", []))
    return lines


"""The ``watchkeeper keys`` commands: add (prints a new key once), list, revoke.

Runs in the CLI process, on the key file itself (``server.api_keys_file``, or
``$WK_API_KEYS_FILE``, or ``--file``); a running server picks changes up within a second
(``front.api_keys.RELOAD_INTERVAL_S``). Exit codes: 0 done, 1 nothing to revoke, 2 bad usage
or an unreadable file.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from watchkeeper.errors import ConfigError
from watchkeeper.front.api_keys import KeyFile, KeyLimits, Scope, parse_scopes

__all__ = ["add_key_commands", "key_file_path"]

EXIT_OK, EXIT_NOTHING, EXIT_USAGE = 0, 1, 2


def add_key_commands(commands: Any) -> None:
    keys = commands.add_parser("keys", help="API keys: add, list, revoke")
    keys.add_argument("--file", help="the key file (default: $WK_API_KEYS_FILE, else "
                      "server.api_keys_file of --config / $WK_CONFIG)")
    keys.add_argument("--config", help="TOML configuration to read server.api_keys_file from")
    sub = keys.add_subparsers(required=True, metavar="ACTION")
    add = sub.add_parser("add", help="make a key; it is printed once, on stdout")
    add.add_argument("name", help="who or what the key is for, e.g. web-frontend")
    add.add_argument("--scopes", required=True,
                     help=f"comma-separated: {', '.join(s.value for s in Scope)}")
    add.add_argument("--requests-per-s", type=float, help="this key's request rate")
    add.add_argument("--max-queued-jobs", type=int, help="this key's queued or running jobs at most")
    add.add_argument("--max-result-mb", type=float, help="this key's stored job results, MiB")
    add.set_defaults(run=_add)
    listing = sub.add_parser("list", help="names, ids, scopes and limits (never the keys)")
    listing.set_defaults(run=_list)
    revoke = sub.add_parser("revoke", help="stop a key from working (a running server: within 1 s)")
    revoke.add_argument("name")
    revoke.set_defaults(run=_revoke)


def key_file_path(args: argparse.Namespace) -> Path:
    """--file, else $WK_API_KEYS_FILE, else the configuration's ``server.api_keys_file``."""
    if args.file:
        return Path(args.file).expanduser()
    if os.environ.get("WK_API_KEYS_FILE"):
        return Path(os.environ["WK_API_KEYS_FILE"]).expanduser()
    from watchkeeper.config_loading import load_config, resolve_config_path

    configured = load_config(resolve_config_path(args.config)).server.api_keys_file
    if configured is None:
        raise ConfigError("no key file: pass --file, set WK_API_KEYS_FILE, or set "
                          "server.api_keys_file in the configuration")
    return configured


def _run(action: Any, args: argparse.Namespace) -> int:
    try:
        result: int = action(KeyFile(key_file_path(args)), args)
        return result
    except ConfigError as exc:
        print(f"watchkeeper keys: {exc.message}", file=sys.stderr)
        return EXIT_USAGE


def _add(args: argparse.Namespace) -> int:
    def add(keys: KeyFile, args: argparse.Namespace) -> int:
        limits = KeyLimits(args.max_queued_jobs, args.max_result_mb, args.requests_per_s)
        key = keys.add(args.name, parse_scopes(args.scopes), limits)
        print(key)
        print(f"key {args.name!r} added to {keys.path}; it is shown only now: keep it safe",
              file=sys.stderr)
        return EXIT_OK
    return _run(add, args)


def _list(args: argparse.Namespace) -> int:
    def show(keys: KeyFile, args: argparse.Namespace) -> int:
        for r in keys.read():
            when = time.strftime("%Y-%m-%d", time.gmtime(r.created_at))
            state = "active" if r.active else "revoked"
            limits = ", ".join(f"{k}={v}" for k, v in vars(r.limits).items() if v is not None)
            print(f"{r.name}\t{r.id}\t{','.join(r.scopes)}\t{state}\tcreated {when}\t{limits or '-'}")
        return EXIT_OK
    return _run(show, args)


def _revoke(args: argparse.Namespace) -> int:
    def revoke(keys: KeyFile, args: argparse.Namespace) -> int:
        if keys.revoke(args.name):
            print(f"key {args.name!r} revoked", file=sys.stderr)
            return EXIT_OK
        print(f"no active key named {args.name!r}", file=sys.stderr)
        return EXIT_NOTHING
    return _run(revoke, args)

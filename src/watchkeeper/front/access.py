"""Who may reach this server: the key ring it checks keys against, and the start-up refusal
to serve a network anonymously.

Runs in the front process, once at start-up (before the port is bound or a worker started):
``open_access(server)`` returns the ``KeyRing`` of ``server.api_keys_file`` (None: no keys,
the anonymous mode) or raises ``ConfigError``, which ``watchkeeper serve`` prints with what to
do and exits 2:

- keys are configured but the file is missing or unreadable;
- no keys, and ``server.host`` is not a loopback address, and ``server.allow_anonymous`` is
  not set (with it, the server starts and logs ``server.anonymous`` as a warning).
"""

from __future__ import annotations

import ipaddress
import logging

from watchkeeper.config import ServerConfig
from watchkeeper.errors import ConfigError
from watchkeeper.front.api_keys import KeyRing
from watchkeeper.logs import log_event

__all__ = ["is_loopback", "open_access"]

log = logging.getLogger("watchkeeper.keys")


def is_loopback(host: str) -> bool:
    """``127.0.0.1``, ``::1``, ``localhost``: only this machine can connect."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def open_access(server: ServerConfig) -> KeyRing | None:
    """The key ring to check callers against, or None for anonymous mode (see module doc)."""
    if server.api_keys_file is not None:
        if not server.api_keys_file.is_file():
            raise ConfigError(
                f"server.api_keys_file {server.api_keys_file} does not exist",
                suggestion=f"Make a key: watchkeeper keys add NAME --scopes predict,jobs,read "
                f"--file {server.api_keys_file}",
            )
        ring = KeyRing(server.api_keys_file)
        log_event(log, "keys.loaded", path=str(server.api_keys_file), keys=len(ring))
        return ring
    if is_loopback(server.host):
        return None
    if not server.allow_anonymous:
        raise ConfigError(
            f"server.host {server.host} is reachable from other machines and no API keys are "
            "configured: anyone who can reach the port could run models, read and cancel jobs, "
            "and restart models",
            suggestion="Make a key (watchkeeper keys add NAME --scopes predict,jobs,read --file "
            "PATH) and set server.api_keys_file = PATH (or WK_API_KEYS_FILE); or, to serve "
            "anonymously anyway, set server.allow_anonymous = true.",
        )
    log_event(log, "server.anonymous", logging.WARNING, host=server.host,
              suggestion="Anyone who can reach the port may do anything: configure API keys.")
    return None

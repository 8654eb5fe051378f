"""Host names from ``Host`` headers, and the loopback names every server answers to.

Runs in the front process (``http.guard``: DNS-rebinding refusals, the ``/ui`` redirect) and
in the UI process (``ui.server``: the same refusal for the page). Standard library only, so
the UI, a client of the API, can use it without loading any of the server.
"""

from __future__ import annotations

__all__ = ["LOOPBACK_HOSTS", "host_name"]

#: Host names always allowed, whatever the bind address.
LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")


def host_name(host: str) -> str:
    """The name part of a ``Host`` header, lower-cased: ``Example.COM:8000`` -> ``example.com``,
    ``[::1]:8000`` -> ``::1``."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].partition("]")[0]
    return host.rpartition(":")[0] if host.count(":") == 1 else host

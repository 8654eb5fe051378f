"""One server per data dir: an exclusive lock taken at start-up and held for the process's life.

Runs in the front process, once, when the job runner is built: before the job store is
opened, the port bound or a worker started. The lock is ``flock(LOCK_EX | LOCK_NB)`` on
``<data_dir>/watchkeeper.lock``, opened close-on-exec (no worker inherits it) and held open
until :meth:`DataDirLock.release` after the store is closed; the kernel releases it when the
process dies, however it dies, so a stale lock file never blocks a restart. The file holds
the holder's pid, for the error a second server gets (a :class:`ConfigError`: the server
exits non-zero, naming the dir and that pid). No waits: the lock is tried once.

Two servers on one data dir would each recover the other's running jobs and run them twice,
and overwrite each other's result files; this lock is what stops an overlapping restart
(the new server started before the old one exited) from doing that.
"""

from __future__ import annotations

import fcntl
import logging
import os
from pathlib import Path

from watchkeeper.errors import ConfigError
from watchkeeper.logs import log_event

__all__ = ["LOCK_FILE", "DataDirLock"]

log = logging.getLogger("watchkeeper.jobs")

#: The lock file's name in the data dir.
LOCK_FILE = "watchkeeper.lock"


class DataDirLock:
    """The exclusive lock of one data dir, held by this process until released."""

    def __init__(self, data_dir: Path, fd: int) -> None:
        self.data_dir = data_dir
        self.path = data_dir / LOCK_FILE
        self._fd = fd

    @classmethod
    def acquire(cls, data_dir: Path) -> DataDirLock:
        """Lock ``data_dir`` (created if missing, mode 0700: only the server's user may read
        the jobs' inputs and results) or raise ConfigError naming its holder."""
        data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(data_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            log_event(log, "jobs.data_dir_in_use", logging.ERROR, data_dir=str(data_dir),
                      holder_pid=holder)
            raise ConfigError(
                f"data dir {data_dir} is in use by another watchkeeper server (pid {holder}): "
                "two servers on one data dir would run its jobs twice",
                suggestion="Stop that server first (its jobs are kept), or give this one "
                "another server.data_dir.",
            ) from None
        except OSError as exc:
            os.close(fd)
            raise ConfigError(f"data dir {data_dir} cannot be locked: {exc}",
                              suggestion="Put the data dir on a local filesystem.") from exc
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(data_dir, fd)

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def release(self) -> None:
        """Unlock (closing the file); the file itself stays, for the next holder."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def _holder(fd: int) -> str:
    """The pid written in the lock file by its holder ('unknown' if it has not written it)."""
    text = os.pread(fd, 32, 0).decode(errors="replace").strip()
    return text if text.isdigit() else "unknown"

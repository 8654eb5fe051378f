"""One server per data dir (``watchkeeper.jobs.data_dir_lock``): real flock, real processes."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from watchkeeper.errors import ConfigError
from watchkeeper.jobs.data_dir_lock import LOCK_FILE, DataDirLock

HOLD = """
    import sys, time
    from pathlib import Path
    from watchkeeper.jobs.data_dir_lock import DataDirLock

    lock = DataDirLock.acquire(Path(sys.argv[1]))
    print("locked", flush=True)
    time.sleep(60)
"""


def test_a_second_holder_is_refused_naming_the_dir_and_the_holders_pid(tmp_path: Path) -> None:
    data = tmp_path / "data"
    holder = subprocess.Popen([sys.executable, "-c", textwrap.dedent(HOLD), str(data)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(ConfigError) as refused:
            DataDirLock.acquire(data)
        assert str(data) in refused.value.message and f"pid {holder.pid}" in refused.value.message
        holder.kill()  # however the holder dies, the kernel releases its lock
        holder.wait(10)
        lock = DataDirLock.acquire(data)
        assert (data / LOCK_FILE).read_text() == f"{os.getpid()}\n"
        lock.release()
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait()


def test_release_lets_the_next_server_in_and_creates_the_dir(tmp_path: Path) -> None:
    first = DataDirLock.acquire(tmp_path / "new" / "data")
    assert first.held and (tmp_path / "new" / "data" / LOCK_FILE).is_file()
    with pytest.raises(ConfigError, match="in use"):
        DataDirLock.acquire(tmp_path / "new" / "data")  # another open file: flock refuses it too
    first.release()
    first.release()  # twice is fine
    assert not first.held
    DataDirLock.acquire(tmp_path / "new" / "data").release()


def test_a_child_process_does_not_keep_the_lock(tmp_path: Path) -> None:
    """A process started while the lock is held (without closing fds) does not inherit it:
    once the server releases it (or dies), a new server gets in even if that child lives on."""
    lock = DataDirLock.acquire(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"],
                             close_fds=False, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline() == "up\n"  # exec'd: fds closed
        lock.release()
        DataDirLock.acquire(tmp_path).release()
    finally:
        child.kill()
        child.wait()


def test_a_new_data_dir_and_its_lock_are_the_servers_alone(tmp_path: Path) -> None:
    data_dir = tmp_path / "fresh" / "data"
    lock = DataDirLock.acquire(data_dir)
    try:
        assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
        assert stat.S_IMODE((data_dir / LOCK_FILE).stat().st_mode) == 0o600
    finally:
        lock.release()

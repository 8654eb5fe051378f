"""The model cache: the files models declare (``Model.files``), copied into ``cache_dir`` and
checked against their digests before a model's ``setup``.

Runs in template and worker processes (:func:`prepare`, in the load stage ``prepare``) and
in the ``watchkeeper models`` command (:func:`check_file`). A model's files live in
``cache_dir/models/NAME/``. A file missing there is copied from its ``source`` (e.g. weights
shipped in the package) through a temporary file and a rename, so a reader never sees half
a file; when the cache cannot be written (read-only or full), the source is used where it
is, with a warning. A file is hashed once: its digest is remembered in the model's folder
(``.verified.json``, by the file's path, size, mtime and inode), so a restart does not read
gigabytes again; a cache that cannot be written only means hashing at every load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from watchkeeper.contract import ModelFile
from watchkeeper.errors import ConfigError
from watchkeeper.logs import log_event

__all__ = ["FileCheck", "check_file", "model_folder", "prepare", "sha256_of"]

log = logging.getLogger("watchkeeper.model_cache")

MEMO = ".verified.json"


@dataclass(frozen=True)
class FileCheck:
    """What one declared file looks like now."""

    name: str
    path: Path
    size: int | None  # bytes; None when the file is missing
    expected: str | None  # the declared sha256 (None: not checked)
    actual: str | None  # the file's sha256 (None: missing, or not hashed as none is expected)
    problem: str | None  # None when the file is there and matches

    @property
    def ok(self) -> bool:
        return self.problem is None


def model_folder(cache_dir: Path, model: str) -> Path:
    """Where the model configured as ``model`` keeps its files."""
    return cache_dir / "models" / model


def located(file: ModelFile, folder: Path) -> Path:
    """The path a declared file is read from: its own ``path``, else its place in the cache."""
    return file.path if file.path is not None else folder / file.name


def check_file(file: ModelFile, folder: Path) -> FileCheck:
    """The file as it is (nothing copied): there or missing, and whether its digest matches."""
    path = located(file, folder)
    try:
        size = path.stat().st_size
    except OSError:
        where = f"; it would be copied from {file.source}" if file.source is not None else ""
        return FileCheck(file.name, path, None, file.sha256, None,
                         f"{file.name}: missing at {path} (expected sha256 "
                         f"{file.sha256 or 'not declared'}){where}")
    if file.sha256 is None:
        return FileCheck(file.name, path, size, None, None, None)
    actual = sha256_of(path, memo_in=folder)
    problem = None if actual == file.sha256.lower() else (
        f"{file.name}: {path} has sha256 {actual}, expected {file.sha256}")
    return FileCheck(file.name, path, size, file.sha256, actual, problem)


def prepare(files: Iterable[ModelFile], folder: Path) -> dict[str, Path]:
    """Each declared file's checked path by name (copied into ``folder`` first when missing
    there); ConfigError naming the file and its expected digest when one cannot be had."""
    paths: dict[str, Path] = {}
    for file in files:
        if file.path is None and file.source is not None and not (folder / file.name).exists():
            file = _cached_copy(file, folder)
        check = check_file(file, folder)
        if not check.ok:
            raise ConfigError(check.problem or file.name,
                              suggestion="Put the right file there, or fix the model's options; "
                                         "`watchkeeper models check` lists every file.")
        if check.expected is None:
            log_event(log, "model_file.unchecked", logging.WARNING, file=file.name, path=str(check.path))
        paths[file.name] = check.path
    return paths


def _cached_copy(file: ModelFile, folder: Path) -> ModelFile:
    """Copy ``file.source`` into the cache; when that fails, the file read from its source."""
    assert file.source is not None
    target = folder / file.name
    temp = folder / f".{file.name}.{os.getpid()}.tmp"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with file.source.open("rb") as src, temp.open("wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, target)
    except OSError as exc:
        _discard(temp)
        if not file.source.exists():
            return file  # no source either: check_file says the file is missing
        # a read-only or full cache: serve from the source
        log_event(log, "model_file.not_cached", logging.WARNING, file=file.name,
                  cache=str(folder), error=str(exc), using=str(file.source))
        return ModelFile(file.name, file.sha256, path=file.source)
    log_event(log, "model_file.cached", file=file.name, path=str(target), source=str(file.source))
    return file


def _discard(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # its folder is not there (or not a folder): nothing to remove


def sha256_of(path: Path, memo_in: Path | None = None) -> str:
    """The file's sha256 in hex; with ``memo_in`` (the model's cache folder: nothing is
    written beside a file that lives elsewhere), from that folder's memo when the file is
    unchanged since it was hashed (same size, mtime and inode)."""
    if memo_in is None:
        with path.open("rb") as handle:
            return hashlib.file_digest(handle, "sha256").hexdigest()
    stat = path.stat()
    stamp = [stat.st_size, stat.st_mtime_ns, stat.st_ino]
    memo_path = memo_in / MEMO
    memo_of = _read_memo(memo_path)
    key = str(path.resolve())
    known = memo_of.get(key)
    if isinstance(known, dict) and known.get("stamp") == stamp and isinstance(known.get("sha256"), str):
        return str(known["sha256"])
    digest = sha256_of(path)
    memo_of[key] = {"stamp": stamp, "sha256": digest}
    _write_memo(memo_path, memo_of)
    return digest


def _read_memo(path: Path) -> dict[str, object]:
    try:
        memo = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def _write_memo(path: Path, memo: dict[str, object]) -> None:
    """Best effort: a memo that cannot be written only means hashing again next time."""
    temp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp.write_text(json.dumps(memo, indent=1))
        os.replace(temp, path)
    except OSError:
        _discard(temp)

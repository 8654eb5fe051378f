"""A job's result on disk: output files written atomically, the rest kept as JSON.

Front process only, called from a worker thread (every call blocks on the disk). A job's
outputs come back from its worker as a dict; :meth:`ResultFiles.write` turns each
:class:`~watchkeeper.contract.Blob` (and raw bytes) into a file under ``root/<job_id>/`` and
returns a :class:`ResultMeta` describing the files plus the other outputs as plain JSON,
which the job store keeps in the job's row.

Each file is written to a hidden temporary name in its final directory, flushed, fsynced,
renamed over the final name and the directory fsynced, so a reader (or a crash) sees the
old file or the new one, never half of one. A crash mid-write leaves only a temporary file,
removed at the next start-up by :meth:`ResultFiles.sweep_partial`.

Order, and what a crash leaves: the job's old manifest (``.result.json``) is removed, its
files are written, then the manifest (the :class:`ResultMeta` and ``degraded``) is written
the same way; the job store's commit comes after. A directory with a manifest whose files are
all there is a complete result: recovery adopts it for a job left ``running``
(:meth:`ResultFiles.complete`); any other directory of a job not ``succeeded`` is removed.

The root is created once, by :meth:`ResultFiles.open`, never again: when it is gone (the
data dir was deleted) writes fail instead of re-creating it, and :meth:`ResultFiles.probe`
says so (it also writes a small file, to find a full or read-only disk).
"""

from __future__ import annotations

import base64
import errno
import mimetypes
import os
import re
import secrets
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from watchkeeper.protocol.blob import Blob

__all__ = ["MANIFEST", "ResultFile", "ResultFiles", "ResultMeta", "TEMP_MARKER"]

#: Job ids and output field names: one safe path component.
_SAFE_NAME = re.compile(r"[A-Za-z0-9_-]{1,128}")
#: A result file: a safe name and an extension (never hidden, never a path).
_SAFE_FILE = re.compile(r"[A-Za-z0-9_-]{1,128}(\.[A-Za-z0-9_+-]{1,16})?")
_SAFE_EXTENSION = re.compile(r"\.[A-Za-z0-9_+-]{1,16}")
#: In every temporary file's name (``.<file>.tmp-<pid>-<random>``) and in no final one.
TEMP_MARKER = ".tmp-"
#: A complete result's description, written after its files (hidden: never served).
MANIFEST = ".result.json"
_PROBE = f".probe{TEMP_MARKER}"
_OCTET_STREAM = "application/octet-stream"
_MIB = 1024 * 1024


@dataclass(frozen=True)
class ResultFile:
    """One output written as a file: ``name`` is the output field, ``file`` its file name."""

    name: str
    file: str
    media_type: str
    size: int


@dataclass(frozen=True)
class ResultMeta:
    """What a job produced: its files, in output order, and its other outputs as JSON."""

    files: tuple[ResultFile, ...]
    outputs: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        files = [{"name": f.name, "file": f.file, "media_type": f.media_type, "size": f.size}
                 for f in self.files]
        return {"files": files, "outputs": self.outputs}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ResultMeta:
        files = tuple(ResultFile(str(f["name"]), str(f["file"]), str(f["media_type"]), int(f["size"]))
                      for f in data.get("files", ()))
        return cls(files, dict(data.get("outputs", {})))


class ResultFiles:
    """The result files of every job, one directory per job under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._identity: tuple[int, int] | None = None
        self._fd = -1  # held open: a deleted root's inode cannot be reused by a new directory

    def open(self) -> None:
        """Create the root (once, at start-up) and remember which directory it is."""
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.close()
        self._fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        st = os.fstat(self._fd)
        self._identity = (st.st_dev, st.st_ino)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def write(self, job_id: str, outputs: dict[str, Any],
              degraded: dict[str, Any] | None = None) -> ResultMeta:
        """Write the job's file outputs (replacing any earlier result), then its manifest;
        describe them all.

        Raises ValueError (unsafe id or file output name, an output that is not JSON-able)
        before writing anything, or OSError (the disk; the root gone) with no temporary
        file left behind.
        """
        directory = self._directory(job_id)
        blobs = {name: blob for name, value in outputs.items() if (blob := _as_blob(value)) is not None}
        for name in blobs:
            _check_name(name, "output field name")
        rest = {str(name): to_json(value) for name, value in outputs.items() if name not in blobs}
        if not blobs:
            self.remove(job_id)
            return ResultMeta((), rest)
        self._make_directory(directory)
        _unlink_synced(directory / MANIFEST)  # an earlier run's: this one is not complete yet
        files = tuple(self._write_one(directory, name, blob) for name, blob in blobs.items())
        _remove_stale(directory, {f.file for f in files})
        meta = ResultMeta(files, rest)
        manifest = {"result": meta.to_dict(), "degraded": degraded}
        _write_atomic(directory, MANIFEST, orjson.dumps(manifest))
        return meta

    def complete(self, job_id: str) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
        """The job's result as its manifest describes it, (result, degraded), when the
        manifest is there and every file it names has its size; else None."""
        try:
            manifest = orjson.loads((self._directory(job_id) / MANIFEST).read_bytes())
            meta = ResultMeta.from_dict(manifest["result"])
            whole = all(self.path(job_id, f.file).stat().st_size == f.size for f in meta.files)
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return (meta.to_dict(), manifest.get("degraded")) if whole and meta.files else None

    def job_ids(self) -> list[str]:
        """The jobs that have a directory under the root."""
        if not self.root.is_dir():
            return []
        return [p.name for p in self.root.iterdir() if p.is_dir() and _SAFE_NAME.fullmatch(p.name)]

    def probe(self) -> None:
        """Raise OSError unless the root is the directory opened and takes a new file."""
        self._check_root()
        probe = self.root / f"{_PROBE}{os.getpid()}"
        try:
            with open(probe, "wb") as out:
                out.write(b"w")
                out.flush()
        finally:
            probe.unlink(missing_ok=True)

    def path(self, job_id: str, file: str) -> Path:
        """Where one of the job's files is (it may not exist); refuses names that escape."""
        if not isinstance(file, str) or not _SAFE_FILE.fullmatch(file):
            raise ValueError(f"not a result file name: {file!r}")
        return self._directory(job_id) / file

    def remove(self, job_id: str) -> None:
        """Delete the job's files and directory (nothing to delete is fine)."""
        try:
            shutil.rmtree(self._directory(job_id))
        except FileNotFoundError:
            pass

    def sweep_partial(self) -> int:
        """Delete the temporary files a crash mid-write left behind; return how many.

        Run at start-up, before any job writes (it cannot tell a live writer's file).
        """
        removed = 0
        for temp in [*_temp_files(self.root), *self.root.glob(f"{_PROBE}*")]:
            try:
                temp.unlink()
            except FileNotFoundError:
                continue
            removed += 1
        return removed

    def free_mb(self) -> float:
        """Free space, in MiB, of the filesystem holding ``root``; OSError when it is gone."""
        self._check_root()
        return shutil.disk_usage(self.root).free / _MIB

    def _check_root(self) -> None:
        try:
            st = os.stat(self.root)
        except FileNotFoundError:
            raise FileNotFoundError(errno.ENOENT, "the results directory is gone",
                                    str(self.root)) from None
        if self._identity is not None and (st.st_dev, st.st_ino) != self._identity:
            raise FileNotFoundError(errno.ENOENT, "the results directory was replaced",
                                    str(self.root))

    def _make_directory(self, directory: Path) -> None:
        """The job's directory, in the root as it is (never re-created: see the module)."""
        if directory.is_dir():
            return
        self._check_root()
        directory.mkdir(exist_ok=True)
        _fsync_directory(directory.parent)

    def _directory(self, job_id: str) -> Path:
        _check_name(job_id, "job id")
        return self.root / job_id

    def _write_one(self, directory: Path, name: str, blob: Blob) -> ResultFile:
        file = name + extension_for(blob.media_type)
        _write_atomic(directory, file, blob.data)
        return ResultFile(name, file, blob.media_type, len(blob.data))


def extension_for(media_type: str) -> str:
    """The file extension of a media type (``video/mp4`` -> ``.mp4``), else ``.bin``."""
    bare = media_type.split(";", 1)[0].strip().lower()
    extension = mimetypes.guess_extension(bare) if bare else None
    return extension if extension and _SAFE_EXTENSION.fullmatch(extension) else ".bin"


def to_json(value: Any) -> Any:
    """An output as plain JSON: numpy arrays as lists, numpy scalars as Python numbers,
    nested bytes as base64 (as a predict answer sends them); ValueError for anything else."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, Blob):
        return base64.b64encode(value.data).decode("ascii")
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    if type(value).__module__ == "numpy" and hasattr(value, "tolist"):
        return value.tolist()  # ndarray -> nested lists; numpy scalar -> int/float/bool
    if value is None or isinstance(value, str | int | float | bool):
        return value
    raise ValueError(f"an output of type {type(value).__name__} is not JSON serialisable")


def _as_blob(value: Any) -> Blob | None:
    if isinstance(value, Blob):
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return Blob(bytes(value), _OCTET_STREAM)
    return None


def _check_name(name: Any, what: str) -> None:
    if not isinstance(name, str) or not _SAFE_NAME.fullmatch(name):
        raise ValueError(f"unsafe {what} {name!r}: use 1-128 letters, digits, '-' or '_'")


def _write_atomic(directory: Path, file: str, data: bytes) -> None:
    temp = directory / f".{file}{TEMP_MARKER}{os.getpid()}-{secrets.token_hex(6)}"
    try:
        with open(temp, "xb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, directory / file)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)


def _remove_stale(directory: Path, keep: set[str]) -> None:
    """Files of an earlier run this run did not produce: one result, never two."""
    stale = [p for p in directory.iterdir() if p.name not in keep and not p.name.startswith(".")]
    for path in stale:
        path.unlink(missing_ok=True)
    if stale:
        _fsync_directory(directory)


def _unlink_synced(path: Path) -> None:
    try:
        path.unlink()
    except FileNotFoundError:
        return
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _temp_files(root: Path) -> Iterator[Path]:
    if not root.is_dir():
        return
    for job_dir in root.iterdir():
        if job_dir.is_dir() and not job_dir.is_symlink():
            yield from (p for p in job_dir.iterdir() if p.name.startswith(".") and TEMP_MARKER in p.name)


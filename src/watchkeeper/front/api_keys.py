"""API keys: the file that holds them (salted scrypt hashes) and the check of a presented key.

Runs in the front process (``KeyRing``: read the file, verify keys, on the event loop with the
slow hash in a thread) and in the ``watchkeeper keys`` command (``KeyFile``: add, list,
revoke). A key is shown once, when it is made: ``wk_<id>_<secret>``. The file keeps its
``id`` (to find the entry without hashing), a random salt and ``scrypt(secret, salt)``; the
secret itself is never stored. A presented key is checked by hashing its secret with the
entry's salt and comparing in constant time (``hmac.compare_digest``).

Hashing costs tens of milliseconds by design, so the ring remembers keys it has verified
(by the SHA-256 of the whole key, at most ``CACHE_SIZE``) and keys it has refused, and
re-reads the file when it changes (checked at most every ``RELOAD_INTERVAL_S``): a revoked
key stops working within that interval. The file is written whole to a temporary name and
renamed, with mode 0600.
"""

from __future__ import annotations

import asyncio
import base64
import enum
import hashlib
import hmac
import json
import logging
import os
import secrets
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from watchkeeper.errors import ConfigError
from watchkeeper.logs import log_event

__all__ = ["CACHE_SIZE", "KEY_PREFIX", "MAX_KEY_CHARS", "RELOAD_INTERVAL_S", "KeyFile", "KeyLimits",
           "KeyRecord", "KeyRing", "Scope", "parse_scopes", "split_key"]

log = logging.getLogger("watchkeeper.keys")

KEY_PREFIX = "wk_"
#: Longer "keys" are refused without a look (ours are about 60 characters).
MAX_KEY_CHARS = 200
#: Verified (and refused) keys remembered, so a request costs a dictionary lookup, not a hash.
CACHE_SIZE = 1024
#: How often the ring looks at the file's modification time (a revocation applies within it).
RELOAD_INTERVAL_S = 1.0
#: scrypt's cost: 16 MiB of memory and ~50 ms of one core per hash.
_SCRYPT = {"n": 2**14, "r": 8, "p": 1, "dklen": 32}
_FILE_VERSION = 1


class Scope(enum.StrEnum):
    PREDICT = "predict"  # POST /v1/models/{name}/predict (and /v2 inference)
    JOBS = "jobs"  # submit, follow, fetch and cancel one's own jobs
    READ = "read"  # /health detail, model descriptions, /metrics, /docs
    ADMIN = "admin"  # restart models; see every job; errors in full


def parse_scopes(text: str) -> frozenset[Scope]:
    """``"predict,jobs"`` -> the scopes; a ConfigError naming the allowed ones otherwise."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    allowed = ", ".join(s.value for s in Scope)
    if not names:
        raise ConfigError(f"no scopes given (allowed: {allowed})")
    unknown = [n for n in names if n not in {s.value for s in Scope}]
    if unknown:
        raise ConfigError(f"unknown scope(s) {', '.join(unknown)} (allowed: {allowed})")
    return frozenset(Scope(n) for n in names)


@dataclass(frozen=True)
class KeyLimits:
    """A key's limits; None: the server's default (``server.default_requests_per_s``,
    ``default_max_queued_jobs``, ``default_max_result_mb``)."""

    max_queued_jobs: int | None = None
    max_result_mb: float | None = None
    requests_per_s: float | None = None


@dataclass(frozen=True)
class KeyRecord:
    """One key as the file keeps it (no secret)."""

    name: str
    id: str
    salt: str
    hash: str
    scopes: tuple[str, ...]
    limits: KeyLimits = field(default_factory=KeyLimits)
    created_at: float = 0.0
    revoked_at: float | None = None

    def allows(self, scope: Scope) -> bool:
        return scope.value in self.scopes

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def matches(self, secret: str) -> bool:
        """The slow check: scrypt of ``secret`` with this key's salt, compared in constant time."""
        return hmac.compare_digest(_hash(secret, base64.b64decode(self.salt)), base64.b64decode(self.hash))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> KeyRecord:
        limits = KeyLimits(**data.get("limits") or {})
        return cls(name=data["name"], id=data["id"], salt=data["salt"], hash=data["hash"],
                   scopes=tuple(data["scopes"]), limits=limits,
                   created_at=float(data.get("created_at", 0.0)), revoked_at=data.get("revoked_at"))


def _hash(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, **_SCRYPT)  # type: ignore[arg-type]


def split_key(key: str) -> tuple[str, str] | None:
    """``wk_<id>_<secret>`` -> (id, secret), or None when it is not of that shape."""
    if not key.startswith(KEY_PREFIX) or len(key) > MAX_KEY_CHARS:
        return None
    key_id, sep, secret = key[len(KEY_PREFIX):].partition("_")
    if not sep or not key_id or not secret or not key_id.isalnum():
        return None
    return key_id, secret


class KeyFile:
    """The key file, for the ``watchkeeper keys`` command: read, add, revoke, write."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[KeyRecord]:
        """Every key in the file ([] when there is no file); ConfigError when it is unreadable."""
        try:
            data = json.loads(self.path.read_text())
            return [KeyRecord.from_dict(entry) for entry in data["keys"]]
        except FileNotFoundError:
            return []
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"the API key file {self.path} cannot be read: {exc}") from None

    def add(self, name: str, scopes: frozenset[Scope], limits: KeyLimits | None = None) -> str:
        """Make a key, store its hash, and return the key (the only time it is shown)."""
        records = self.read()
        if any(r.name == name and r.active for r in records):
            raise ConfigError(f"a key named {name!r} exists already (revoke it first)")
        key_id, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
        salt = secrets.token_bytes(16)
        record = KeyRecord(name, key_id, base64.b64encode(salt).decode(),
                           base64.b64encode(_hash(secret, salt)).decode(),
                           tuple(sorted(s.value for s in scopes)), limits or KeyLimits(), time.time())
        self._write([*records, record])
        return f"{KEY_PREFIX}{key_id}_{secret}"

    def revoke(self, name: str) -> int:
        """Mark every active key named ``name`` revoked; how many were."""
        records = self.read()
        now = time.time()
        hits = sum(1 for r in records if r.name == name and r.active)
        if hits:
            self._write([replace(r, revoked_at=now) if r.name == name and r.active else r
                         for r in records])
        return hits

    def _write(self, records: list[KeyRecord]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        body = json.dumps({"version": _FILE_VERSION, "keys": [asdict(r) for r in records]}, indent=1)
        temp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(body + "\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(temp, self.path)


class KeyRing:
    """The front's view of the key file: which record a presented key belongs to."""

    def __init__(self, path: Path) -> None:
        self.file = KeyFile(path)
        self._by_id: dict[str, KeyRecord] = {}
        self._verified: OrderedDict[bytes, KeyRecord | None] = OrderedDict()
        self._stamp: tuple[int, int] | None = None
        self._checked_at = 0.0
        self.reload()

    def reload(self) -> None:
        """Read the file now (ConfigError when it is unreadable: at start-up, a refusal)."""
        records = self.file.read()
        self._by_id = {r.id: r for r in records if r.active}
        self._verified.clear()
        self._stamp = self._file_stamp()
        self._checked_at = time.monotonic()

    def __len__(self) -> int:
        return len(self._by_id)

    def _file_stamp(self) -> tuple[int, int] | None:
        try:
            st = self.file.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_ino

    def _reload_if_changed(self) -> None:
        now = time.monotonic()
        if now - self._checked_at < RELOAD_INTERVAL_S:
            return
        self._checked_at = now
        if self._file_stamp() != self._stamp:
            try:
                self.reload()
            except ConfigError as exc:  # a broken file: keep the keys we had, and say so
                self._stamp = self._file_stamp()
                log_event(log, "keys.unreadable", logging.ERROR, error=exc.message,
                          suggestion="Fix the key file; the keys read before still work.")

    def cached(self, key: str) -> tuple[bool, KeyRecord | None]:
        """(known, record) from the cache alone: known False means it must be verified."""
        self._reload_if_changed()
        digest = hashlib.sha256(key.encode()).digest()
        if digest in self._verified:
            self._verified.move_to_end(digest)
            return True, self._verified[digest]
        return False, None

    async def verify(self, key: str) -> KeyRecord | None:
        """The record of ``key``, or None (unknown, revoked or wrong); slow checks off the loop."""
        known, record = self.cached(key)
        if known:
            return record
        parts = split_key(key)
        candidate = self._by_id.get(parts[0]) if parts else None
        ok = False
        if parts is not None and candidate is not None:
            ok = await asyncio.to_thread(candidate.matches, parts[1])
        result = candidate if ok else None
        self._verified[hashlib.sha256(key.encode()).digest()] = result
        while len(self._verified) > CACHE_SIZE:
            self._verified.popitem(last=False)
        return result

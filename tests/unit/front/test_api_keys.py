"""API keys (``watchkeeper.front.api_keys``): the file, the hash check, the ring's cache."""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path

import pytest

from watchkeeper.errors import ConfigError
from watchkeeper.front import api_keys
from watchkeeper.front.api_keys import KeyFile, KeyLimits, KeyRing, Scope, parse_scopes, split_key


def test_a_new_key_is_shown_once_and_only_its_hash_is_stored(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    key = keys.add("web", frozenset({Scope.PREDICT}), KeyLimits(max_queued_jobs=3))
    parts = split_key(key)
    assert parts is not None
    text = (tmp_path / "keys.json").read_text()
    assert parts[1] not in text and key not in text
    [record] = keys.read()
    assert (record.name, record.id, record.scopes) == ("web", parts[0], ("predict",))
    assert record.limits.max_queued_jobs == 3
    assert record.matches(parts[1]) and not record.matches(parts[1] + "x")
    assert stat.S_IMODE((tmp_path / "keys.json").stat().st_mode) == 0o600


def test_two_keys_have_different_salts_and_ids(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    keys.add("a", frozenset({Scope.READ}))
    keys.add("b", frozenset({Scope.READ}))
    a, b = keys.read()
    assert a.salt != b.salt and a.id != b.id and a.hash != b.hash


def test_a_name_in_use_is_refused_until_revoked(tmp_path: Path) -> None:
    keys = KeyFile(tmp_path / "keys.json")
    keys.add("a", frozenset({Scope.READ}))
    with pytest.raises(ConfigError, match="exists already"):
        keys.add("a", frozenset({Scope.READ}))
    assert keys.revoke("a") == 1
    assert keys.revoke("a") == 0
    keys.add("a", frozenset({Scope.ADMIN}))
    assert [r.active for r in keys.read()] == [False, True]


@pytest.mark.parametrize("text, error", [("", "no scopes"), ("predict,root", "unknown scope")])
def test_scopes_are_checked(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        parse_scopes(text)
    assert parse_scopes(" predict , jobs") == {Scope.PREDICT, Scope.JOBS}


@pytest.mark.parametrize("key", ["", "wk_", "wk_abc", "wk__secret", "xx_abc_secret",
                                 "wk_a-b_secret", "wk_abc_" + "s" * 300])
def test_malformed_keys_do_not_split(key: str) -> None:
    assert split_key(key) is None


def test_an_unreadable_file_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "keys.json").write_text("{not json")
    with pytest.raises(ConfigError, match="cannot be read"):
        KeyFile(tmp_path / "keys.json").read()


def test_the_ring_verifies_caches_and_forgets_revoked_keys(tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_keys, "RELOAD_INTERVAL_S", 0.0)
    path = tmp_path / "keys.json"
    key = KeyFile(path).add("web", frozenset({Scope.PREDICT, Scope.JOBS}))
    ring = KeyRing(path)

    async def check() -> None:
        record = await ring.verify(key)
        assert record is not None and record.allows(Scope.JOBS) and not record.allows(Scope.ADMIN)
        assert ring.cached(key) == (True, record)  # the second time costs no hash
        assert await ring.verify(key[:-1] + ("A" if key[-1] != "A" else "B")) is None
        assert await ring.verify("wk_000000000000_nothing") is None
        KeyFile(path).revoke("web")
        assert await ring.verify(key) is None

    asyncio.run(check())


def test_a_broken_file_keeps_the_keys_the_ring_had(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(api_keys, "RELOAD_INTERVAL_S", 0.0)
    path = tmp_path / "keys.json"
    key = KeyFile(path).add("web", frozenset({Scope.READ}))
    ring = KeyRing(path)
    path.write_text(json.dumps({"keys": [{"broken": True}]}))
    assert asyncio.run(ring.verify(key)) is not None

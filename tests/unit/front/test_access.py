"""Who may reach the server (``watchkeeper.front.access``): the start-up refusal and the ring."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchkeeper.config import ServerConfig
from watchkeeper.errors import ConfigError
from watchkeeper.front.access import is_loopback, open_access
from watchkeeper.front.api_keys import KeyFile, Scope


@pytest.mark.parametrize("host, loopback", [
    ("127.0.0.1", True), ("127.8.9.1", True), ("::1", True), ("[::1]", True), ("localhost", True),
    ("0.0.0.0", False), ("::", False), ("10.0.0.5", False), ("models.example.com", False),
])
def test_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_loopback_without_keys_is_anonymous() -> None:
    assert open_access(ServerConfig(host="127.0.0.1")) is None


def test_a_network_bind_without_keys_is_refused_with_what_to_do() -> None:
    with pytest.raises(ConfigError) as refused:
        open_access(ServerConfig(host="0.0.0.0"))
    assert "0.0.0.0" in refused.value.message
    assert "watchkeeper keys add" in refused.value.suggestion
    assert "allow_anonymous" in refused.value.suggestion


def test_allow_anonymous_serves_a_network_without_keys() -> None:
    assert open_access(ServerConfig(host="0.0.0.0", allow_anonymous=True)) is None


def test_a_missing_key_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        open_access(ServerConfig(api_keys_file=tmp_path / "nope.json"))


def test_a_key_file_gives_a_ring_whatever_the_host(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    KeyFile(path).add("web", frozenset({Scope.PREDICT}))
    ring = open_access(ServerConfig(host="0.0.0.0", api_keys_file=path))
    assert ring is not None and len(ring) == 1

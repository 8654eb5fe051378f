"""Client connection limits (``watchkeeper.http.connections``) and the Last-Event-ID header.

The connections themselves (timeouts, the head limit, the cap) are attacked with real sockets
in ``tests/integration/test_client_attacks.py``; here, what they are built from.
"""

from __future__ import annotations

import pytest

from watchkeeper.config import ServerConfig
from watchkeeper.errors import BadInput
from watchkeeper.http.connections import ConnectionLimits, GuardedHttpProtocol, protocol_class
from watchkeeper.http.jobs import _last_event_id


def test_limits_come_from_the_server_table_in_seconds_and_bytes() -> None:
    server = ServerConfig(client_header_timeout_s=3.0, client_body_timeout_s=7.0,
                          client_body_min_kib_per_s=2.0, keep_alive_timeout_s=4.0, max_head_kib=8,
                          max_connections=12)
    assert ConnectionLimits.of(server) == ConnectionLimits(3.0, 7.0, 2048.0, 4.0, 8192, 12)


def test_the_defaults_agree_with_the_configuration() -> None:
    assert ConnectionLimits.of(ServerConfig()) == ConnectionLimits()


def test_each_server_gets_its_own_protocol_class() -> None:
    one, two = protocol_class(ConnectionLimits(max_connections=1)), protocol_class(ConnectionLimits())
    assert issubclass(one, GuardedHttpProtocol) and one.limits.max_connections == 1
    assert two.limits == ConnectionLimits() and GuardedHttpProtocol.limits == ConnectionLimits()


@pytest.mark.parametrize(("value", "expected"), [(None, 0), ("", 0), ("0", 0), ("17", 17),
                                                 ("9" * 18, int("9" * 18))])
def test_last_event_id_is_a_decimal_number(value: str | None, expected: int) -> None:
    assert _last_event_id(value) == expected


@pytest.mark.parametrize("value", ["\u00b2", "1\u00b2", "\u0663", "-1", "1.0", " 1", "9" * 19, "nan",
                                   "\x00", "1e3"])
def test_anything_else_is_a_400_naming_the_header(value: str) -> None:
    with pytest.raises(BadInput, match="Last-Event-ID must be an event id"):
        _last_event_id(value)

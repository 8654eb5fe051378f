"""``GET /ui``'s address: the host name the client used, the UI's port (``http.ui_redirect``)."""

from __future__ import annotations

import pytest

from watchkeeper.http.ui_redirect import ui_location


@pytest.mark.parametrize(("host", "location"), [
    ("127.0.0.1:8000", "http://127.0.0.1:7860/"),
    ("Example.COM:8000", "http://example.com:7860/"),
    ("example.com", "http://example.com:7860/"),
    ("[::1]:8000", "http://[::1]:7860/"),
    ("", "http://127.0.0.1:7860/"),
])
def test_the_ui_is_at_the_host_name_used_and_its_own_port(host: str, location: str) -> None:
    assert ui_location(host, 7860) == location

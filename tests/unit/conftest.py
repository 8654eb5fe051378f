"""Fixtures shared by the unit tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A fresh event loop, for building futures outside a running loop."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()

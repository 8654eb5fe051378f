"""A model's options and files through a real server: a wrong file or option fails the model
at once, naming what is wrong, and the right ones are copied into the cache and served."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Server, Servers, wait_for

APP = "tests.unit.worker.test_loading:WithFiles"
GOOD = b"real weights"


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "package" / "w.bin"
    path.parent.mkdir()
    path.write_bytes(GOOD)
    return path


def start(servers: Servers, options: dict[str, Any], wait: bool = True) -> Server:
    # load_retries 3: a permanent failure must not use them
    return servers.start({"m": {"app": APP, "load_retries": 3, "options": options}}, wait=wait)


def failed_reason(srv: Server) -> str:
    def failed() -> str | None:
        model = srv.model_health("m")
        return model.get("reason") if model["state"] == "failed" else None
    reason: str = wait_for(failed, timeout_s=30)
    return reason


def test_the_right_file_is_copied_into_the_cache_and_served(servers: Servers, weights: Path) -> None:
    srv = start(servers, {"weights": str(weights), "sha256": hashlib.sha256(GOOD).hexdigest()})
    cached = servers.root / "cache" / "models" / "m" / "weights.bin"
    assert cached.read_bytes() == GOOD
    assert srv.get("/readyz").status_code == 200


def test_a_wrong_digest_fails_the_model_at_once_naming_file_and_digest(servers: Servers,
                                                                      weights: Path) -> None:
    srv = start(servers, {"weights": str(weights), "sha256": "ab" * 32}, wait=False)
    reason = failed_reason(srv)
    assert "weights.bin" in reason and "expected " + "ab" * 32 in reason
    assert srv.get("/readyz").status_code == 503
    log = srv.log_path.read_text()
    assert log.count('"stage": "prepare"') + log.count('"stage":"prepare"') == 1  # no retries


def test_an_unknown_option_fails_the_model_naming_the_key(servers: Servers, weights: Path) -> None:
    srv = start(servers, {"weights": str(weights), "wieghts": "typo"}, wait=False)
    reason = failed_reason(srv)
    assert "models.m.options.wieghts" in reason
    assert srv.get("/livez").status_code == 200  # the server itself stays up

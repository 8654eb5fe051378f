"""``watchkeeper keys`` (``watchkeeper.cli.keys``): add prints a key once, list, revoke."""

from __future__ import annotations

from pathlib import Path

import pytest

from watchkeeper.cli.main import main
from watchkeeper.front.api_keys import KeyFile, split_key


def test_add_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = str(tmp_path / "keys.json")
    assert main(["keys", "--file", path, "add", "web", "--scopes", "predict,jobs",
                 "--requests-per-s", "5"]) == 0
    key = capsys.readouterr().out.strip()
    assert split_key(key) is not None
    [record] = KeyFile(Path(path)).read()
    assert record.matches(split_key(key)[1])  # type: ignore[index]
    assert main(["keys", "--file", path, "list"]) == 0
    listing = capsys.readouterr().out
    assert "web" in listing and "jobs,predict" in listing and "requests_per_s=5.0" in listing
    assert key not in listing
    assert main(["keys", "--file", path, "revoke", "web"]) == 0
    assert main(["keys", "--file", path, "revoke", "web"]) == 1
    assert not KeyFile(Path(path)).read()[0].active


def test_bad_scopes_and_no_file_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "keys.json")
    assert main(["keys", "--file", path, "add", "web", "--scopes", "root"]) == 2
    assert "unknown scope" in capsys.readouterr().err
    monkeypatch.delenv("WK_API_KEYS_FILE", raising=False)
    monkeypatch.delenv("WK_CONFIG", raising=False)
    assert main(["keys", "list"]) == 2
    assert "no key file" in capsys.readouterr().err


def test_the_environment_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("WK_API_KEYS_FILE", str(tmp_path / "env-keys.json"))
    assert main(["keys", "add", "ops", "--scopes", "admin"]) == 0
    assert (tmp_path / "env-keys.json").exists()

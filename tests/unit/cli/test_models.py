"""``watchkeeper models list|check``: each configured model's files as the cache holds them,
and an exit code a deploy script can trust."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from watchkeeper.cli.main import main

APP = "tests.unit.worker.test_loading:WithFiles"


def config(tmp_path: Path, options: str, app: str = APP) -> str:
    path = tmp_path / "wk.toml"
    path.write_text(f'[server]\ncache_dir = "{tmp_path / "cache"}"\n'
                    f'[models.m]\napp = "{app}"\n[models.m.options]\n{options}\n')
    return str(path)


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "w.bin"
    path.write_bytes(b"real weights")
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().out


def test_a_packaged_file_not_yet_cached_checks_ok(tmp_path: Path, weights: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    sha = hashlib.sha256(b"real weights").hexdigest()
    path = config(tmp_path, f'weights = "{weights}"\nsha256 = "{sha}"')
    code, out = run(capsys, "models", "check", "--config", path)
    assert code == 0, out
    assert "weights.bin" in out and "verified" in out and "copied into the cache at first load" in out
    assert not (tmp_path / "cache" / "models" / "m" / "weights.bin").exists()  # nothing copied


def test_a_mismatched_file_fails_the_check_and_says_which(tmp_path: Path, weights: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    path = config(tmp_path, f'weights = "{weights}"\nsha256 = "{"ab" * 32}"')
    code, out = run(capsys, "models", "check", "--config", path)
    assert code == 1
    assert "expected " + "ab" * 32 in out
    code, out = run(capsys, "models", "list", "--config", path)
    assert code == 0 and "PROBLEM" in out  # list shows; only check judges


def test_a_file_in_the_cache_is_checked_there(tmp_path: Path, weights: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    sha = hashlib.sha256(b"real weights").hexdigest()
    cached = tmp_path / "cache" / "models" / "m" / "weights.bin"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"truncated")
    path = config(tmp_path, f'weights = "{weights}"\nsha256 = "{sha}"')
    code, out = run(capsys, "models", "check", "--json", "--config", path)
    (report,) = json.loads(out)
    assert code == 1 and not report["ok"]
    (entry,) = report["files"]
    assert entry["path"] == str(cached) and entry["sha256"] == hashlib.sha256(b"truncated").hexdigest()


def test_bad_options_and_unimportable_apps_fail_the_check(tmp_path: Path, weights: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, out = run(capsys, "models", "check", "--config", config(tmp_path, 'wieghts = "x"'))
    assert code == 1 and "models.m.options.wieghts" in out
    code, out = run(capsys, "models", "check", "--config",
                    config(tmp_path, "", app="tests.nowhere:Model"))
    assert code == 1 and "cannot be imported" in out


def test_a_refused_configuration_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "wk.toml"
    path.write_text("[models.m]\nreplicas = 1\n")
    assert main(["models", "list", "--config", str(path)]) == 2

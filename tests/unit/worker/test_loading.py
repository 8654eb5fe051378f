"""Loading stages: the model's options are validated and its files checked before setup, and
a wrong option or file is a permanent failure naming what is wrong."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from pydantic import Field

from watchkeeper import contract
from watchkeeper.protocol.messages import PERMANENT_EXITS, PERMANENT_STAGES, ExitCode, LoadFailed, WorkerSpec
from watchkeeper.worker.loading import LoadError, load_model

APP = f"{__name__}:WithFiles"


class WithFiles(contract.Model):
    """Declares one file, named by its options; setup reads it."""

    class Options(contract.Options):
        weights: Path
        sha256: str | None = None
        scale: float = Field(1.0, gt=0)

    @classmethod
    def files(cls, options: Any) -> list[contract.ModelFile]:
        return [contract.ModelFile("weights.bin", options.sha256, source=options.weights)]

    def setup(self, device: str) -> None:
        self.loaded = self.file("weights.bin").read_bytes()

    def predict(self, inputs: Any, params: Any) -> dict[str, Any]:
        return {}


def load(tmp_path: Path, options: dict[str, Any]) -> tuple[Any, list[Any]]:
    sent: list[Any] = []
    spec = WorkerSpec("m", APP, "cpu", 0, 1.0, options=options, cache_dir=str(tmp_path / "cache"))
    model, _ = load_model(spec, {}, sent.append)
    return model, sent


def failure(tmp_path: Path, options: dict[str, Any]) -> tuple[LoadError, LoadFailed]:
    with pytest.raises(LoadError) as caught:
        load(tmp_path, options)
    sent: list[Any] = []
    spec = WorkerSpec("m", APP, "cpu", 0, 1.0, options=options, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(LoadError):
        load_model(spec, {}, sent.append)
    return caught.value, sent[0]


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "w.bin"
    path.write_bytes(b"real weights")
    return path


def test_options_and_checked_files_are_set_before_setup(tmp_path: Path, weights: Path) -> None:
    model, sent = load(tmp_path, {"weights": str(weights),
                                  "sha256": hashlib.sha256(b"real weights").hexdigest()})
    assert sent == []
    assert model.loaded == b"real weights"
    assert model.options.scale == 1.0
    assert model.file("weights.bin") == tmp_path / "cache" / "models" / "m" / "weights.bin"


def test_an_unknown_option_fails_the_load_for_good_naming_it(tmp_path: Path, weights: Path) -> None:
    error, report = failure(tmp_path, {"weights": str(weights), "wieghts": "typo"})
    assert error.stage == "prepare" and error.stage in PERMANENT_STAGES
    assert error.exit_code == ExitCode.BAD_SETUP and error.exit_code in PERMANENT_EXITS
    assert "models.m.options.wieghts" in report.error
    assert "weights, sha256, scale" in report.error  # what is allowed


def test_a_bad_option_value_names_the_key(tmp_path: Path, weights: Path) -> None:
    _, report = failure(tmp_path, {"weights": str(weights), "scale": -1})
    assert "models.m.options.scale" in report.error and "greater than 0" in report.error


def test_a_missing_required_option_names_it(tmp_path: Path) -> None:
    _, report = failure(tmp_path, {})
    assert "models.m.options.weights: Field required" in report.error


def test_a_file_with_the_wrong_digest_fails_before_setup(tmp_path: Path, weights: Path) -> None:
    error, report = failure(tmp_path, {"weights": str(weights), "sha256": "ab" * 32})
    assert error.stage == "prepare" and error.exit_code == ExitCode.BAD_SETUP
    assert "weights.bin" in report.error and "expected " + "ab" * 32 in report.error


def test_an_undeclared_file_is_a_clear_error() -> None:
    with pytest.raises(KeyError, match="declares no file 'other.bin'"):
        WithFiles().file("other.bin")

"""The model cache: declared files copied in, checked by digest, remembered, refused clearly."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from watchkeeper.contract import ModelFile
from watchkeeper.errors import ConfigError
from watchkeeper.model_cache import MEMO, check_file, model_folder, prepare, sha256_of

WEIGHTS = b"weights" * 1000


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "package" / "w.bin"
    path.parent.mkdir()
    path.write_bytes(WEIGHTS)
    return path


def test_a_packaged_file_is_copied_into_the_cache_and_checked(tmp_path: Path, source: Path) -> None:
    folder = model_folder(tmp_path / "cache", "m")
    paths = prepare([ModelFile("w.bin", digest(WEIGHTS), source=source)], folder)
    assert paths == {"w.bin": folder / "w.bin"}
    assert (folder / "w.bin").read_bytes() == WEIGHTS
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_a_wrong_file_in_the_cache_is_refused_naming_file_and_digest(tmp_path: Path, source: Path) -> None:
    folder = model_folder(tmp_path / "cache", "m")
    folder.mkdir(parents=True)
    (folder / "w.bin").write_bytes(b"half a checkpoint")
    expected = digest(WEIGHTS)
    with pytest.raises(ConfigError) as caught:
        prepare([ModelFile("w.bin", expected, source=source)], folder)
    assert "w.bin" in caught.value.message and expected in caught.value.message
    assert digest(b"half a checkpoint") in caught.value.message


def test_a_missing_file_without_a_source_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        prepare([ModelFile("w.bin", "ab" * 32)], tmp_path)
    assert "w.bin: missing" in caught.value.message and "ab" * 32 in caught.value.message


def test_a_missing_source_is_a_missing_file_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="missing"):
        prepare([ModelFile("w.bin", "ab" * 32, source=tmp_path / "gone.bin")], tmp_path / "cache")


def test_a_cache_that_cannot_be_written_serves_from_the_source(tmp_path: Path, source: Path) -> None:
    cache = tmp_path / "cache"
    cache.write_text("a file where the cache folder should be")  # mkdir fails for root too
    paths = prepare([ModelFile("w.bin", digest(WEIGHTS), source=source)], model_folder(cache, "m"))
    assert paths["w.bin"] == source


def test_a_file_named_by_path_is_used_where_it_is(tmp_path: Path, source: Path) -> None:
    folder = tmp_path / "cache"
    paths = prepare([ModelFile("w.bin", digest(WEIGHTS), path=source)], folder)
    assert paths == {"w.bin": source}
    assert sorted(p.name for p in source.parent.iterdir()) == ["w.bin"]  # nothing written beside it


def test_a_file_without_a_digest_is_used_unchecked(tmp_path: Path, source: Path) -> None:
    assert prepare([ModelFile("w.bin", None, path=source)], tmp_path) == {"w.bin": source}
    check = check_file(ModelFile("w.bin", None, path=source), tmp_path)
    assert check.ok and check.actual is None and check.size == len(WEIGHTS)


def test_the_digest_is_remembered_until_the_file_changes(tmp_path: Path, source: Path) -> None:
    folder = tmp_path / "cache"
    assert sha256_of(source, memo_in=folder) == digest(WEIGHTS)
    memo = json.loads((folder / MEMO).read_text())
    (entry,) = memo.values()
    entry["sha256"] = "0" * 64  # what the memo says is what is used while the file is unchanged
    (folder / MEMO).write_text(json.dumps(memo))
    assert sha256_of(source, memo_in=folder) == "0" * 64
    source.write_bytes(WEIGHTS + b"!")  # changed: size and mtime differ, hashed again
    assert sha256_of(source, memo_in=folder) == digest(WEIGHTS + b"!")


def test_a_corrupt_memo_means_hashing_again(tmp_path: Path, source: Path) -> None:
    folder = tmp_path / "cache"
    folder.mkdir()
    (folder / MEMO).write_text("{not json")
    assert sha256_of(source, memo_in=folder) == digest(WEIGHTS)

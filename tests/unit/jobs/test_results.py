"""Result files of jobs: real files, real faults (a full file-size limit, a SIGKILL mid-write)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from watchkeeper.contract import Blob
from watchkeeper.jobs.results import ResultFile, ResultFiles, ResultMeta, extension_for

MIB = 1024 * 1024


def leftovers(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_blobs_become_files_and_other_outputs_stay_json(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path / "results")
    files.open()
    video = os.urandom(3000)
    meta = files.write("job-1", {
        "video": Blob(video, "video/mp4"),
        "frames": np.int64(32),
        "fps": np.float32(8.0),
        "thumb": Blob(b"\x89PNG....", "image/png"),
        "raw": b"\x00\x01\x02",
        "scores": np.arange(6, dtype=np.float64).reshape(2, 3),
        "label": "cat",
        "nested": {"ok": np.bool_(True), "ids": (1, 2)},
    })
    assert meta.files == (
        ResultFile("video", "video.mp4", "video/mp4", 3000),
        ResultFile("thumb", "thumb.png", "image/png", 8),
        ResultFile("raw", "raw.bin", "application/octet-stream", 3),
    )
    assert meta.outputs == {"frames": 32, "fps": 8.0, "scores": [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]],
                            "label": "cat", "nested": {"ok": True, "ids": [1, 2]}}
    assert type(meta.outputs["frames"]) is int and type(meta.outputs["nested"]["ok"]) is bool
    assert files.path("job-1", "video.mp4").read_bytes() == video
    assert files.path("job-1", "raw.bin").read_bytes() == b"\x00\x01\x02"
    assert leftovers(tmp_path / "results") == [
        "job-1/.result.json", "job-1/raw.bin", "job-1/thumb.png", "job-1/video.mp4"]


def test_meta_round_trips_through_json(tmp_path: Path) -> None:
    meta = ResultFiles(tmp_path).write("j", {"video": Blob(b"abc", "video/mp4"), "n": np.arange(2)})
    again = ResultMeta.from_dict(json.loads(json.dumps(meta.to_dict())))
    assert again == meta
    assert meta.to_dict()["files"][0] == {"name": "video", "file": "video.mp4",
                                          "media_type": "video/mp4", "size": 3}


def test_no_files_means_no_directory(tmp_path: Path) -> None:
    meta = ResultFiles(tmp_path).write("j", {"text": "hi", "v": np.zeros(2, dtype=np.int8)})
    assert meta == ResultMeta((), {"text": "hi", "v": [0, 0]})
    assert not (tmp_path / "j").exists()


@pytest.mark.parametrize(("media_type", "extension"), [
    ("video/mp4", ".mp4"), ("image/png", ".png"), ("image/jpeg; q=1", ".jpg"),
    ("application/octet-stream", ".bin"), ("application/x-made-up", ".bin"), ("", ".bin"),
])
def test_extension_from_media_type(media_type: str, extension: str) -> None:
    assert extension_for(media_type) == extension


def test_a_job_run_again_overwrites_its_result(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path)
    files.write("j", {"video": Blob(b"first" * 100, "video/mp4"), "thumb": Blob(b"t", "image/png")})
    meta = files.write("j", {"video": Blob(b"second", "video/mp4")})
    assert meta.files == (ResultFile("video", "video.mp4", "video/mp4", 6),)
    assert files.path("j", "video.mp4").read_bytes() == b"second"
    assert leftovers(tmp_path) == ["j/.result.json", "j/video.mp4"]  # one result, never two
    assert files.complete("j") == (meta.to_dict(), None)
    files.write("j", {"text": "no files this time"})
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("job_id", ["", ".", "..", "../x", "a/b", "a\\b", "a b", "x\x00", "é", "a" * 129, 5])
def test_unsafe_job_ids_are_refused(tmp_path: Path, job_id: object) -> None:
    files = ResultFiles(tmp_path / "results")
    with pytest.raises(ValueError):
        files.write(job_id, {"video": Blob(b"x", "video/mp4")})  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        files.remove(job_id)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        files.path(job_id, "video.mp4")  # type: ignore[arg-type]
    assert not (tmp_path / "results").exists()


@pytest.mark.parametrize("name", ["../evil", "a/b", ".hidden", "", "a.b", "x y"])
def test_unsafe_file_output_names_are_refused_before_anything_is_written(tmp_path: Path, name: str) -> None:
    files = ResultFiles(tmp_path)
    with pytest.raises(ValueError):
        files.write("j", {"good": Blob(b"x", "image/png"), name: Blob(b"y", "image/png")})
    assert leftovers(tmp_path) == []


def test_json_output_names_are_not_file_names(tmp_path: Path) -> None:
    meta = ResultFiles(tmp_path).write("j", {"score (raw)": 1.5})
    assert meta.outputs == {"score (raw)": 1.5}


@pytest.mark.parametrize("file", ["../j2/video.mp4", "/etc/passwd", "..", ".", ".v.mp4.tmp-1-ab", "a/b", ""])
def test_paths_that_escape_are_refused(tmp_path: Path, file: str) -> None:
    with pytest.raises(ValueError):
        ResultFiles(tmp_path).path("j", file)


def test_path_points_into_the_job_directory(tmp_path: Path) -> None:
    assert ResultFiles(tmp_path).path("j-1_x", "video.mp4") == tmp_path / "j-1_x" / "video.mp4"


def test_remove_deletes_the_directory_and_missing_is_fine(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path)
    files.write("j", {"video": Blob(b"x", "video/mp4")})
    files.remove("j")
    assert not (tmp_path / "j").exists()
    files.remove("j")
    files.remove("never")


def test_unserialisable_output_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="object"):
        ResultFiles(tmp_path).write("j", {"obj": object()})


def test_sweep_partial_removes_only_temporary_files(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path)
    assert ResultFiles(tmp_path / "missing").sweep_partial() == 0
    files.write("j", {"video": Blob(b"keep", "video/mp4")})
    (tmp_path / "j" / ".video.mp4.tmp-123-abcdef").write_bytes(b"half")
    (tmp_path / "k").mkdir()
    (tmp_path / "k" / ".image.png.tmp-9-00").write_bytes(b"")
    (tmp_path / ".probe.tmp-77").write_bytes(b"w")  # a check's file, left by a crash
    assert files.sweep_partial() == 3
    assert leftovers(tmp_path) == ["j/.result.json", "j/video.mp4"]
    assert files.sweep_partial() == 0


def test_the_root_is_created_once_and_never_again(tmp_path: Path) -> None:
    """A deleted data dir is not silently re-created: writes, free_mb and probe fail."""
    files = ResultFiles(tmp_path / "a" / "results")
    files.open()
    assert files.free_mb() > 0 and (tmp_path / "a" / "results").is_dir()
    files.probe()
    shutil.rmtree(tmp_path / "a")
    with pytest.raises(FileNotFoundError, match="results directory is gone"):
        files.write("j", {"video": Blob(b"v", "video/mp4")})
    with pytest.raises(FileNotFoundError):
        files.free_mb()
    with pytest.raises(FileNotFoundError):
        files.probe()
    assert not (tmp_path / "a").exists()
    (tmp_path / "a" / "results").mkdir(parents=True)  # another directory at the same path
    with pytest.raises(FileNotFoundError, match="replaced"):
        files.probe()


def test_a_result_is_complete_only_with_its_manifest_and_every_file(tmp_path: Path) -> None:
    files = ResultFiles(tmp_path)
    meta = files.write("j", {"video": Blob(b"v" * 10, "video/mp4"), "n": 3},
                       degraded={"from": {"a": 2}, "to": {"a": 1}, "reason": "oom"})
    assert files.complete("j") == (meta.to_dict(), {"from": {"a": 2}, "to": {"a": 1}, "reason": "oom"})
    (tmp_path / "j" / "video.mp4").write_bytes(b"v" * 9)  # a file that is not what was written
    assert files.complete("j") is None
    files.write("j", {"video": Blob(b"v" * 10, "video/mp4")})
    (tmp_path / "j" / ".result.json").unlink()  # files renamed, manifest not yet written
    assert files.complete("j") is None
    (tmp_path / "j" / ".result.json").write_bytes(b"{not json")
    assert files.complete("j") is None
    assert files.complete("none") is None and files.complete("../x") is None
    assert sorted(files.job_ids()) == ["j"]


def test_a_new_write_removes_the_old_manifest_first(tmp_path: Path) -> None:
    """A run that fails half way through its files never leaves an earlier run's manifest
    describing them: the manifest goes first, and comes back last."""
    files = ResultFiles(tmp_path)
    files.write("j", {"video": Blob(b"old", "video/mp4")})
    with pytest.raises(ValueError):
        files.write("j", {"video": Blob(b"new", "video/mp4"), "bad": object()})
    assert files.complete("j") is not None  # refused before anything was written
    done = run_python(REWRITE_TOO_BIG, str(tmp_path))  # a real EFBIG half way
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "EFBIG"
    assert files.complete("j") is None and leftovers(tmp_path) == ["j/video.mp4"]
    assert files.path("j", "video.mp4").read_bytes() == b"old"


REWRITE_TOO_BIG = """
    import errno, resource, signal, sys
    from pathlib import Path
    from watchkeeper.contract import Blob
    from watchkeeper.jobs.results import ResultFiles

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    try:
        ResultFiles(Path(sys.argv[1])).write("j", {"video": Blob(b"v" * (5 << 20), "video/mp4")})
    except OSError as exc:
        print(errno.errorcode.get(exc.errno))
"""


def run_python(code: str, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code), *args],
                          capture_output=True, text=True, timeout=timeout, check=False)


HALF_WRITE = """
    import errno, json, resource, signal, sys
    from pathlib import Path
    from watchkeeper.contract import Blob
    from watchkeeper.jobs.results import ResultFiles

    files = ResultFiles(Path(sys.argv[1]))
    files.write("old", {"video": Blob(b"small", "video/mp4")})
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))
    try:
        files.write("big", {"video": Blob(b"v" * (5 << 20), "video/mp4")})
    except OSError as exc:
        print(json.dumps({"error": type(exc).__name__, "errno": errno.errorcode.get(exc.errno)}))
    else:
        print(json.dumps({"error": None}))
"""


def test_a_real_half_write_fails_with_efbig_and_leaves_nothing(tmp_path: Path) -> None:
    done = run_python(HALF_WRITE, str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"error": "OSError", "errno": "EFBIG"}
    assert leftovers(tmp_path) == ["old/.result.json", "old/video.mp4"]  # no temporary file


SLOW_WRITE = """
    import sys
    from pathlib import Path
    from watchkeeper.contract import Blob
    from watchkeeper.jobs.results import ResultFiles

    ResultFiles(Path(sys.argv[1])).write(sys.argv[2], {"video": Blob(b"v" * (200 << 20), "video/mp4")})
"""


def kill_mid_write(root: Path, job_id: str) -> bool:
    """Start writing a 200 MB blob in a child; SIGKILL it once its temporary file exists.
    True when it died mid-write (False: it finished first, on a very fast disk)."""
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(SLOW_WRITE), str(root), job_id],
                             stderr=subprocess.PIPE)
    directory = root / job_id
    deadline = time.monotonic() + 60
    try:
        while child.poll() is None and time.monotonic() < deadline:
            if directory.is_dir() and any(".tmp-" in name for name in os.listdir(directory)):
                child.send_signal(signal.SIGKILL)
                break
            time.sleep(0.0005)
    finally:
        if child.poll() is None:
            child.kill()
        _, stderr = child.communicate(timeout=30)
    assert child.returncode in (0, -signal.SIGKILL), stderr
    return not (directory / "video.mp4").exists()


def test_a_sigkill_mid_write_leaves_no_final_file_and_sweep_cleans_up(tmp_path: Path) -> None:
    for attempt in range(5):
        if kill_mid_write(tmp_path, f"job{attempt}"):
            break
    else:
        pytest.fail("the child finished its 200 MB write before it could be killed, five times")
    partial = [name for name in leftovers(tmp_path) if name.startswith(f"job{attempt}/")]
    assert len(partial) == 1 and ".video.mp4.tmp-" in partial[0]
    assert ResultFiles(tmp_path).sweep_partial() == 1
    assert not any(".tmp-" in name for name in leftovers(tmp_path))

"""``watchkeeper jobs ...`` as a user runs it: the CLI in a subprocess, against real servers.

Each command is ``python -m watchkeeper.cli jobs ...``: its exit code, stdout (what a script
reads) and stderr (progress, errors) are checked. Its stderr is a pipe, not a TTY, so the
progress is one line per state change and per 10 % step.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import CHAOS, FAST, ServerFactory, free_port

JOB_MODEL = {"app": CHAOS, **FAST, "replicas": 1}
IMG2VIDEO = "watchkeeper.apps.img2video:Img2Video"
JOB_ID = re.compile(r"[0-9a-f]{32}")


def pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


def jobs(url: str, *args: str, timeout_s: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``watchkeeper jobs ARGS --url URL`` and return what it did."""
    return subprocess.run([sys.executable, "-m", "watchkeeper.cli", "jobs", *args, "--url", url],
                          capture_output=True, text=True, timeout=timeout_s)


def percentages(stderr: str) -> list[int]:
    return [int(m) for m in re.findall(r"^\[[#.]{20}\] +(\d+)%", stderr, flags=re.MULTILINE)]


def states(stderr: str) -> list[str]:
    """The states the progress lines show, in order, each once per stretch."""
    shown = re.findall(r"^\[.*  (\w+) \d+\.\ds$", stderr, flags=re.MULTILINE)
    return [state for i, state in enumerate(shown) if i == 0 or shown[i - 1] != state]


def test_submit_wait_saves_the_result_file_and_shows_progress(serve: ServerFactory,
                                                              tmp_path: Path) -> None:
    srv = serve({"chaos": JOB_MODEL})
    (tmp_path / "out").mkdir()
    out = tmp_path / "out" / "data.bin"
    done = jobs(srv.url, "submit", "chaos", "--input", "action=work", "--input", "seconds=1",
                "--input", "steps=5", "--input", "blob_kb=64", "--wait", "-o", str(out))
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == pattern(64 * 1024)
    assert done.stdout == f"{out}  65,536 bytes\n"
    job_id = done.stderr.splitlines()[0].removeprefix("job ")
    assert JOB_ID.fullmatch(job_id) and srv.job(job_id)["state"] == "succeeded"
    assert "\r" not in done.stderr and "\x1b" not in done.stderr  # not a TTY: plain lines
    assert states(done.stderr) == ["queued", "running", "succeeded"]  # the history, in order
    shown = percentages(done.stderr)
    assert shown == sorted(shown) and shown[-1] == 100 and {20, 40, 60, 80} <= set(shown)
    assert "step 3/5  running" in done.stderr
    assert re.search(r"^\[#{20}\] 100%  step 5/5  succeeded \d+\.\ds$", done.stderr, re.MULTILINE)
    assert done.stderr.endswith(f"job {job_id} succeeded\n")
    assert list(out.parent.iterdir()) == [out]  # no temporary file left behind


def test_submit_prints_the_id_then_status_wait_result_and_list(serve: ServerFactory,
                                                               tmp_path: Path) -> None:
    srv = serve({"chaos": JOB_MODEL})
    argv = ["submit", "chaos", "--input", "action=work", "--input", "seconds=1.5", "--input", "steps=3",
            "--input", "blob_kb=4", "--idempotency-key", "cli-1"]
    submitted = jobs(srv.url, *argv)
    assert submitted.returncode == 0 and submitted.stderr == ""
    job_id = submitted.stdout.strip()
    assert JOB_ID.fullmatch(job_id) and submitted.stdout == job_id + "\n"  # only the id, for scripts
    replayed = jobs(srv.url, *argv)  # Idempotent-Replayed: the same job, and a note saying so
    assert replayed.returncode == 0 and replayed.stdout == submitted.stdout
    assert "'cli-1' was used before" in replayed.stderr

    status = jobs(srv.url, "status", job_id)
    assert status.returncode == 0
    job = json.loads(status.stdout)
    assert job["id"] == job_id and job["model"] == "chaos"
    assert job["urls"]["result"] == f"/v1/jobs/{job_id}/result"

    waited = jobs(srv.url, "wait", job_id)
    assert waited.returncode == 0, waited.stderr
    assert waited.stderr.endswith(f"job {job_id} succeeded\n") and 100 in percentages(waited.stderr)

    for name in (None, "data"):
        out = tmp_path / f"result-{name}.bin"
        result = jobs(srv.url, "result", job_id, "-o", str(out), *(["--name", name] if name else []))
        assert result.returncode == 0, result.stderr
        assert out.read_bytes() == pattern(4 * 1024) and result.stdout == f"{out}  4,096 bytes\n"
    missing = jobs(srv.url, "result", job_id, "-o", str(tmp_path / "x"), "--name", "nope")
    assert missing.returncode == 3 and "has no result file 'nope' (it has: data)" in missing.stderr

    listed = jobs(srv.url, "list", "--state", "succeeded")
    assert listed.returncode == 0
    header, row = listed.stdout.splitlines()
    assert header.split() == ["ID", "MODEL", "STATE", "PROGRESS", "ATTEMPTS", "CREATED"]
    assert row.split()[:5] == [job_id, "chaos", "succeeded", "100%", "1/3"]


def test_a_failed_job_exits_1_with_its_error_and_unknown_ids_exit_3(serve: ServerFactory,
                                                                    tmp_path: Path) -> None:
    srv = serve({"chaos": JOB_MODEL})
    job_id = jobs(srv.url, "submit", "chaos", "--input", "action=raise").stdout.strip()
    waited = jobs(srv.url, "wait", job_id)
    assert waited.returncode == 1
    assert f"job {job_id} failed: " in waited.stderr and "chaos: raised on request" in waited.stderr
    assert "suggestion: " in waited.stderr
    early = jobs(srv.url, "result", job_id, "-o", str(tmp_path / "never"))
    assert early.returncode == 1 and "409 conflict" in early.stderr and "it is failed" in early.stderr

    for argv in (["status", "nope"], ["wait", "nope"], ["cancel", "nope"],
                 ["result", "nope", "-o", str(tmp_path / "never")], ["submit", "no-such-model"]):
        answer = jobs(srv.url, *argv)
        assert answer.returncode == 3, (argv, answer.stderr)
        assert "404 not_found" in answer.stderr and answer.stdout == ""
    assert "no job 'nope'" in answer.stderr or "no-such-model" in answer.stderr
    assert not (tmp_path / "never").exists()


def test_cancel_a_running_job_then_wait_exits_1(serve: ServerFactory, tmp_path: Path) -> None:
    srv = serve({"chaos": {**JOB_MODEL, "timeout_s": 60}})
    job_id = jobs(srv.url, "submit", "chaos", "--input", "action=work", "--input", "seconds=30",
                  "--input", "steps=300").stdout.strip()
    srv.wait_job(job_id, "running")

    impatient = jobs(srv.url, "wait", job_id, "--max-wait", "1")
    assert impatient.returncode == 2 and "still running after 1 s (--max-wait)" in impatient.stderr
    early = jobs(srv.url, "result", job_id, "-o", str(tmp_path / "never"))
    assert early.returncode == 1 and "409 conflict" in early.stderr and "it is running" in early.stderr
    assert not (tmp_path / "never").exists()

    cancelled = jobs(srv.url, "cancel", job_id)
    assert cancelled.returncode == 0
    assert cancelled.stdout in ("running (cancel requested)\n", "cancelled\n")
    waited = jobs(srv.url, "wait", job_id)
    assert waited.returncode == 1 and f"job {job_id} cancelled: " in waited.stderr
    assert srv.job(job_id)["state"] == "cancelled"


def test_an_unreachable_server_exits_2() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    for argv in (["status", "j1"], ["submit", "chaos", "--wait"]):
        answer = jobs(url, *argv, "--timeout", "5")
        assert answer.returncode == 2, answer.stderr
        assert f"cannot reach {url}" in answer.stderr and answer.stdout == ""


def test_submit_an_image_file_to_img2video_and_save_the_mp4(serve: ServerFactory, tmp_path: Path) -> None:
    pytest.importorskip("av")
    image_module = pytest.importorskip("PIL.Image")
    image = tmp_path / "still.png"
    image_module.new("RGB", (96, 64), (200, 120, 40)).save(image)
    srv = serve({"video": {"app": IMG2VIDEO, "replicas": 1, "probe_interval_s": 0}})
    out = tmp_path / "clip.mp4"
    done = jobs(srv.url, "submit", "video", "--image", str(image), "--param", "resolution=256p",
                "--param", "frames=8", "--param", "fps=8", "--wait", "-o", str(out))
    assert done.returncode == 0, done.stderr
    video = out.read_bytes()
    assert video[4:8] == b"ftyp" and len(video) > 1000
    assert "frame " in done.stderr and "succeeded" in done.stderr

"""Run-time estimates per kind of work and params shape (``scheduling.service_times``)."""

from __future__ import annotations

import pytest

from watchkeeper.scheduling.service_times import ServiceTimes


def test_nothing_seen_is_estimated_at_zero() -> None:
    times = ServiceTimes()
    assert times.estimate("request") == 0.0
    assert times.estimate("request", '{"size":1}') == 0.0


def test_a_long_job_does_not_count_for_predicts() -> None:
    """The regression: one 8 s job made every 0.2 s predict look 8 s long."""
    times = ServiceTimes()
    times.observe("job", "{}", 8.0)
    times.observe("request", "{}", 0.2)
    assert times.estimate("request") == pytest.approx(0.2)
    assert times.estimate("job") == pytest.approx(8.0)
    assert times.estimate("probe") == 0.0


def test_shapes_are_kept_apart_and_an_unseen_one_gets_its_kinds_mean() -> None:
    times = ServiceTimes()
    times.observe("request", "big", 4.0)
    times.observe("request", "small", 0.1)
    assert times.estimate("request", "big") == pytest.approx(4.0)
    assert times.estimate("request", "small") == pytest.approx(0.1)
    assert times.estimate("request", "new") == pytest.approx(4.0 + 0.2 * (0.1 - 4.0))


def test_the_mean_starts_at_the_first_sample_and_moves_a_fifth() -> None:
    times = ServiceTimes()
    times.observe("request", "{}", 1.0)
    times.observe("request", "{}", 2.0)
    assert times.estimate("request", "{}") == pytest.approx(1.2)


def test_old_shapes_are_forgotten() -> None:
    times = ServiceTimes(max_shapes=2)
    for shape, seconds in (("a", 1.0), ("b", 2.0), ("a", 1.0), ("c", 3.0)):
        times.observe("request", shape, seconds)
    assert times.estimate("request", "b") == times.estimate("request")  # b went first
    assert times.estimate("request", "a") == pytest.approx(1.0)


def test_the_wait_is_what_runs_have_left_and_the_queue_over_the_replicas() -> None:
    times = ServiceTimes()
    times.observe("request", "{}", 0.5)
    running = [(8.0, 3.0), (0.5, 2.0)]  # a job 3 s into its 8; a request past its estimate
    assert times.wait_s(running, queued_batches=2, ready=1) == pytest.approx(5.0 + 0 + 1.0)
    assert times.wait_s(running, queued_batches=2, ready=2) == pytest.approx(3.0)
    assert times.wait_s(running, queued_batches=2, ready=0) == 0.0


def test_retry_after_is_whole_seconds_and_at_least_one() -> None:
    times = ServiceTimes()
    assert times.retry_after_s(batches=3, ready=1) == 1
    times.observe("request", "{}", 0.7)
    assert times.retry_after_s(batches=3, ready=1) == 3
    assert times.retry_after_s(batches=3, ready=2) == 2

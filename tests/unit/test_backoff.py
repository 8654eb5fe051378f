"""Back-off between worker restarts (``watchkeeper.supervision.backoff.restart_delay``)."""

from __future__ import annotations

import pytest

from watchkeeper.supervision.backoff import restart_delay


@pytest.mark.parametrize("streak", [-1, 0, 1])
def test_first_failure_restarts_at_once(streak: int) -> None:
    assert restart_delay(streak) == 0.0


def test_delay_doubles_from_base() -> None:
    assert [restart_delay(n) for n in range(2, 8)] == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0]


def test_delay_is_capped() -> None:
    assert restart_delay(8) == 30.0
    assert restart_delay(1000) == 30.0


def test_custom_base_and_cap() -> None:
    assert restart_delay(2, base_s=0.1, cap_s=1.0) == pytest.approx(0.1)
    assert restart_delay(4, base_s=0.1, cap_s=1.0) == pytest.approx(0.4)
    assert restart_delay(6, base_s=0.1, cap_s=1.0) == 1.0


def test_never_decreases() -> None:
    delays = [restart_delay(n) for n in range(50)]
    assert delays == sorted(delays)
    assert all(0.0 <= d <= 30.0 for d in delays)

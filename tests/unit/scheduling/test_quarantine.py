"""Poison-input quarantine (``watchkeeper.scheduling.quarantine``) with an injected clock."""

from __future__ import annotations

import pytest

from watchkeeper.scheduling.quarantine import Quarantine, Verdict, fingerprint


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- fingerprint -----------------------------------------------------------------------


def test_fingerprint_is_a_hex_digest() -> None:
    fp = fingerprint("m", {"a": 1}, {})
    assert len(fp) == 32
    int(fp, 16)


def test_fingerprint_ignores_key_order() -> None:
    a = fingerprint("m", {"x": 1, "y": {"p": 1, "q": [1, 2]}}, {"s": 2, "t": 3})
    b = fingerprint("m", {"y": {"q": [1, 2], "p": 1}, "x": 1}, {"t": 3, "s": 2})
    assert a == b


def test_fingerprint_of_equal_bytes_is_equal() -> None:
    payload = bytes(range(256)) * 100
    a = fingerprint("m", {"image": payload}, {})
    b = fingerprint("m", {"image": bytes(bytearray(payload))}, {})
    assert a == b
    assert fingerprint("m", {"image": bytearray(payload)}, {}) == a
    assert fingerprint("m", {"image": memoryview(payload)}, {}) == a


def test_fingerprint_is_stable_across_calls() -> None:
    inputs = {"image": b"\x89PNG...", "text": "hello", "n": 1.5}
    assert fingerprint("m", inputs, {"k": 1}) == fingerprint("m", dict(inputs), {"k": 1})


@pytest.mark.parametrize(
    ("other"),
    [
        ("other-model", {"a": 1}, {"k": 1}),
        ("m", {"a": 2}, {"k": 1}),
        ("m", {"b": 1}, {"k": 1}),
        ("m", {"a": 1}, {"k": 2}),
        ("m", {"a": 1}, {}),
        ("m", {"a": "1"}, {"k": 1}),
    ],
)
def test_fingerprint_differs_for_different_requests(
    other: tuple[str, dict[str, object], dict[str, object]],
) -> None:
    assert fingerprint("m", {"a": 1}, {"k": 1}) != fingerprint(*other)


def test_fingerprint_differs_for_different_bytes() -> None:
    assert fingerprint("m", {"f": b"abc"}, {}) != fingerprint("m", {"f": b"abd"}, {})
    assert fingerprint("m", {"f": b"abc"}, {}) != fingerprint("m", {"f": "abc"}, {})


def test_inputs_and_params_are_not_interchangeable() -> None:
    assert fingerprint("m", {"a": 1}, {}) != fingerprint("m", {}, {"a": 1})


# --- Quarantine ------------------------------------------------------------------------


def test_deaths_are_counted() -> None:
    clock = FakeClock()
    q = Quarantine(60.0, max_deaths=3, clock=clock)
    v1 = q.record_death("fp")
    assert (v1.deaths, v1.last_at, v1.until) == (1, 1000.0, 0.0)
    clock.advance(5)
    v2 = q.record_death("fp")
    assert (v2.deaths, v2.last_at, v2.until) == (2, 1005.0, 0.0)
    assert q.refused_for("fp") == 0.0
    assert len(q) == 0


def test_refused_after_max_deaths() -> None:
    clock = FakeClock()
    q = Quarantine(60.0, max_deaths=2, clock=clock)
    q.record_death("fp")
    assert q.refused_for("fp") == 0.0
    clock.advance(1)
    verdict = q.record_death("fp")
    assert verdict.deaths == 2
    assert verdict.until == 1061.0
    assert q.refused_for("fp") == 60.0
    assert q.refused_for("other") == 0.0
    assert len(q) == 1


def test_max_deaths_one_refuses_at_the_first_death() -> None:
    q = Quarantine(10.0, max_deaths=1, clock=FakeClock())
    q.record_death("fp")
    assert q.refused_for("fp") == 10.0


def test_refused_for_counts_down_then_expires() -> None:
    clock = FakeClock()
    q = Quarantine(60.0, max_deaths=2, clock=clock)
    q.record_death("fp")
    q.record_death("fp")
    clock.advance(20)
    assert q.refused_for("fp") == pytest.approx(40.0)
    clock.advance(39.5)
    assert q.refused_for("fp") == pytest.approx(0.5)
    clock.advance(0.5)
    assert q.refused_for("fp") == 0.0
    assert len(q) == 0
    assert not q


def test_expired_quarantine_starts_counting_again() -> None:
    clock = FakeClock()
    q = Quarantine(60.0, max_deaths=2, clock=clock)
    q.record_death("fp")
    q.record_death("fp")
    clock.advance(61)
    verdict = q.record_death("fp")
    assert verdict.deaths == 1
    assert q.refused_for("fp") == 0.0


def test_a_death_while_refused_extends_the_quarantine() -> None:
    clock = FakeClock()
    q = Quarantine(60.0, max_deaths=2, clock=clock)
    q.record_death("fp")
    q.record_death("fp")
    clock.advance(30)
    verdict = q.record_death("fp")
    assert verdict.deaths == 3
    assert q.refused_for("fp") == 60.0


def test_forgive_forgets_deaths() -> None:
    clock = FakeClock()
    q = Quarantine(60.0, max_deaths=2, clock=clock)
    q.record_death("fp")
    q.forgive("fp")
    assert q.record_death("fp").deaths == 1
    q.record_death("fp")
    assert q.refused_for("fp") == 60.0
    q.forgive("fp")
    assert q.refused_for("fp") == 0.0
    assert len(q) == 0
    q.forgive("never-seen")  # no error


def test_one_death_expires_after_quarantine_s() -> None:
    clock = FakeClock()
    q = Quarantine(60.0, max_deaths=2, clock=clock)
    q.record_death("fp")
    assert q  # one entry kept, though not refused
    clock.advance(59)
    assert q.record_death("fp").deaths == 2  # still within the window
    q.forgive("fp")
    q.record_death("fp")
    clock.advance(60)
    assert len(q) == 0
    assert not q  # len() expired the stale entry
    assert q.record_death("fp").deaths == 1


def test_len_counts_refused_inputs_only() -> None:
    clock = FakeClock()
    q = Quarantine(60.0, max_deaths=2, clock=clock)
    assert len(q) == 0
    assert not q
    for fp in ("a", "b", "c"):
        q.record_death(fp)
    assert len(q) == 0
    q.record_death("a")
    q.record_death("b")
    assert len(q) == 2
    clock.advance(30)
    q.record_death("c")  # c quarantined until 1090; a, b until 1060
    assert len(q) == 3
    clock.advance(30)
    assert len(q) == 1
    clock.advance(30)
    assert len(q) == 0


def test_verdict_expired() -> None:
    assert Verdict(1, last_at=10.0, until=0.0).expired(now=15.0, quarantine_s=5.0)
    assert not Verdict(1, last_at=10.0, until=0.0).expired(now=14.9, quarantine_s=5.0)
    assert not Verdict(2, last_at=10.0, until=100.0).expired(now=99.0, quarantine_s=5.0)
    assert Verdict(2, last_at=10.0, until=100.0).expired(now=100.0, quarantine_s=5.0)


def test_default_clock_is_monotonic() -> None:
    q = Quarantine(60.0)
    q.record_death("fp")
    q.record_death("fp")
    assert 59.0 < q.refused_for("fp") <= 60.0

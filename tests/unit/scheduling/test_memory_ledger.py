"""Memory bookkeeping (``scheduling.memory_ledger``): shape keys, learned estimates, ledgers, rungs."""

from __future__ import annotations

import pytest

from watchkeeper.scheduling.memory_ledger import (
    DECAY,
    SURPRISE_MARGIN,
    Estimates,
    Ledger,
    Ledgers,
    Rung,
    choose_rung,
    shape_key,
)

MB = 2**20


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- shape_key -------------------------------------------------------------------------


def test_shape_key_ignores_key_order() -> None:
    assert shape_key({"width": 512, "steps": 20}) == shape_key({"steps": 20, "width": 512})


def test_shape_key_is_canonical_json() -> None:
    assert shape_key({"b": 1, "a": "x"}) == '{"a":"x","b":1}'
    assert shape_key({}) == "{}"


def test_shape_key_sorts_nested_keys() -> None:
    assert shape_key({"o": {"y": 1, "x": 2}}) == shape_key({"o": {"x": 2, "y": 1}})


def test_shape_key_tells_values_apart() -> None:
    assert shape_key({"steps": 20}) != shape_key({"steps": 21})


def test_rung_key_is_the_shape_key_of_its_params() -> None:
    assert Rung({"b": 2, "a": 1}, 100).key == shape_key({"a": 1, "b": 2})


# --- Estimates -------------------------------------------------------------------------


def test_unknown_shape_needs_nothing() -> None:
    assert Estimates().get("never seen") == 0


def test_first_observation_is_peak_times_margin() -> None:
    est = Estimates()
    est.observe("k", 1000)
    assert est.get("k") == int(1000 * SURPRISE_MARGIN)


def test_lower_peak_decays_slowly() -> None:
    est = Estimates()
    est.observe("k", 1000)
    first = est.get("k")
    est.observe("k", 500)
    assert est.get("k") == int(first * DECAY + 500 * (1 - DECAY))
    assert 500 < est.get("k") < first


def test_decay_never_goes_below_the_peak() -> None:
    est = Estimates()
    est.observe("k", 1000)
    for _ in range(2000):
        est.observe("k", 500)
    assert est.get("k") == 500


def test_an_equal_peak_keeps_the_estimate() -> None:
    est = Estimates()
    est.observe("k", 1000)
    before = est.get("k")
    est.observe("k", before)
    assert est.get("k") == before


def test_higher_peak_jumps_to_peak_times_margin() -> None:
    est = Estimates()
    est.observe("k", 1000)
    est.observe("k", 5000)
    assert est.get("k") == int(5000 * SURPRISE_MARGIN)


def test_raise_to_raises() -> None:
    est = Estimates()
    est.observe("k", 1000)
    est.raise_to("k", 9000)
    assert est.get("k") == 9000


def test_raise_to_never_lowers() -> None:
    est = Estimates()
    est.raise_to("k", 9000)
    est.raise_to("k", 10)
    assert est.get("k") == 9000


def test_raise_to_an_unknown_shape_sets_it() -> None:
    est = Estimates()
    est.raise_to("k", 42)
    assert est.get("k") == 42


def test_entry_expires_after_ttl() -> None:
    clock = FakeClock()
    est = Estimates(ttl_s=10.0, clock=clock)
    est.observe("k", 1000)
    clock.now += 10.0
    assert est.get("k") == int(1000 * SURPRISE_MARGIN)  # exactly at the ttl: still known
    clock.now += 0.5
    assert est.get("k") == 0


def test_expired_entry_is_learned_afresh() -> None:
    clock = FakeClock()
    est = Estimates(ttl_s=10.0, clock=clock)
    est.observe("k", 5000)
    clock.now += 11
    est.observe("k", 1000)  # no decay from the forgotten 6000: a first observation
    assert est.get("k") == int(1000 * SURPRISE_MARGIN)


def test_each_observation_restarts_the_ttl() -> None:
    clock = FakeClock()
    est = Estimates(ttl_s=10.0, clock=clock)
    est.observe("k", 1000)
    clock.now += 8
    est.observe("k", 1000)
    clock.now += 8
    assert est.get("k") > 0


def test_reading_does_not_restart_the_ttl() -> None:
    clock = FakeClock()
    est = Estimates(ttl_s=10.0, clock=clock)
    est.raise_to("k", 100)
    clock.now += 8
    assert est.get("k") == 100
    clock.now += 8
    assert est.get("k") == 0


def test_least_recently_used_shape_is_forgotten() -> None:
    est = Estimates(max_shapes=2)
    est.raise_to("a", 1)
    est.raise_to("b", 2)
    est.raise_to("c", 3)
    assert (est.get("a"), est.get("b"), est.get("c")) == (0, 2, 3)


def test_a_read_counts_as_a_use() -> None:
    est = Estimates(max_shapes=2)
    est.raise_to("a", 1)
    est.raise_to("b", 2)
    assert est.get("a") == 1
    est.raise_to("c", 3)
    assert (est.get("a"), est.get("b"), est.get("c")) == (1, 0, 3)


def test_need_is_the_model_estimate_when_nothing_learned() -> None:
    assert Estimates().need(Rung({"s": 1}, 700)) == 700


def test_need_without_estimate_or_learning_is_zero() -> None:
    assert Estimates().need(Rung({"s": 1})) == 0


def test_need_is_the_larger_of_estimate_and_learned() -> None:
    est = Estimates()
    rung_low, rung_high = Rung({"s": 1}, 100), Rung({"s": 1}, 10_000)
    est.raise_to(rung_low.key, 5000)
    assert est.need(rung_low) == 5000
    assert est.need(rung_high) == 10_000


def test_learned_need_is_capped_at_budget() -> None:
    est = Estimates()
    rung = Rung({"s": 1})
    est.raise_to(rung.key, 5000)
    assert est.need(rung, budget=3000) == 3000
    assert est.need(rung, budget=9000) == 5000


def test_model_estimate_is_not_capped_at_budget() -> None:
    assert Estimates().need(Rung({"s": 1}, 8000), budget=3000) == 8000


def test_clear_forgets_everything() -> None:
    est = Estimates()
    est.raise_to("a", 1)
    est.observe("b", 2)
    est.clear()
    assert est.get("a") == 0
    assert est.get("b") == 0


# --- Ledger ----------------------------------------------------------------------------


def test_new_ledger_is_all_free() -> None:
    ledger = Ledger("cuda:0", 1000)
    assert (ledger.used, ledger.free) == (0, 1000)


def test_reserve_and_release() -> None:
    ledger = Ledger("cuda:0", 1000)
    ledger.reserve(1, 300)
    ledger.reserve(2, 200)
    assert (ledger.used, ledger.free) == (500, 500)
    ledger.release(1)
    assert (ledger.used, ledger.free) == (200, 800)


def test_release_of_unknown_batch_is_harmless() -> None:
    ledger = Ledger("cpu", 1000)
    ledger.release(99)
    assert ledger.free == 1000


def test_zero_need_is_not_recorded() -> None:
    ledger = Ledger("cpu", 1000)
    ledger.reserve(1, 0)
    assert ledger.reserved == {}
    assert ledger.to_dict()["batches"] == 0


def test_ledger_to_dict() -> None:
    ledger = Ledger("cuda:1", 1000)
    ledger.reserve(7, 250)
    assert ledger.to_dict() == {"device": "cuda:1", "budget_bytes": 1000, "reserved_bytes": 250,
                                "free_bytes": 750, "batches": 1}


# --- choose_rung -----------------------------------------------------------------------


def test_first_rung_that_fits() -> None:
    assert choose_rung([900, 500, 100], free=600) == 1
    assert choose_rung([900, 500, 100], free=1000) == 0
    assert choose_rung([900, 500, 100], free=200) == 2


def test_exact_fit() -> None:
    assert choose_rung([900, 500], free=900) == 0
    assert choose_rung([900, 500], free=500) == 1


def test_none_when_nothing_fits() -> None:
    assert choose_rung([900, 500, 100], free=99) is None


def test_starts_at_start() -> None:
    assert choose_rung([100, 900, 500], free=1000, start=1) == 1
    assert choose_rung([100, 900, 500], free=600, start=1) == 2


def test_without_degrade_only_start_is_considered() -> None:
    assert choose_rung([900, 100], free=500, allow_degrade=False) is None
    assert choose_rung([900, 100], free=1000, allow_degrade=False) == 0
    assert choose_rung([900, 500, 100], free=500, start=1, allow_degrade=False) == 1
    assert choose_rung([900, 900, 100], free=500, start=1, allow_degrade=False) is None


def test_start_past_the_ladder_fits_nothing() -> None:
    assert choose_rung([100], free=1000, start=1) is None
    assert choose_rung([100], free=1000, start=1, allow_degrade=False) is None


def test_unknown_need_fits_any_free_memory() -> None:
    assert choose_rung([0], free=0) == 0


# --- Ledgers ---------------------------------------------------------------------------


class FreeBytes:
    """A free-memory reader that counts its calls."""

    def __init__(self, free: dict[str, int]) -> None:
        self.free = free
        self.calls: list[str] = []

    def __call__(self, device: str) -> int:
        self.calls.append(device)
        return self.free[device]


def test_memory_limit_gives_each_replica_its_own_ledger() -> None:
    reader = FreeBytes({"cpu": 64_000 * MB})
    ledgers = Ledgers(0.5, reader)
    first = ledgers.get("m", 0, "cpu", limit_mb=1000, budget_mb=None)
    second = ledgers.get("m", 1, "cpu", limit_mb=1000, budget_mb=None)
    assert (first.name, second.name) == ("m#0", "m#1")
    assert first is not second
    assert first.budget == second.budget == 500 * MB
    assert reader.calls == []


def test_memory_limit_with_budget_uses_the_budget() -> None:
    ledgers = Ledgers(0.5, FreeBytes({}))
    ledger = ledgers.get("m", 2, "cuda:0", limit_mb=1000, budget_mb=800)
    assert (ledger.name, ledger.budget) == ("m#2", 800 * MB)


def test_same_replica_gets_the_same_ledger() -> None:
    ledgers = Ledgers(0.5, FreeBytes({}))
    assert ledgers.get("m", 0, "cpu", 1000, None) is ledgers.get("m", 0, "cpu", 1000, None)


def test_budget_alone_gives_the_model_one_ledger_per_device() -> None:
    reader = FreeBytes({})
    ledgers = Ledgers(0.5, reader)
    a = ledgers.get("m", 0, "cuda:0", limit_mb=None, budget_mb=2000)
    b = ledgers.get("m", 1, "cuda:0", limit_mb=None, budget_mb=2000)
    c = ledgers.get("m", 2, "cuda:1", limit_mb=None, budget_mb=2000)
    assert a is b
    assert (a.name, a.budget) == ("m@cuda:0", 2000 * MB)
    assert c.name == "m@cuda:1"
    assert reader.calls == []


def test_shared_device_ledger_is_shared_by_models() -> None:
    reader = FreeBytes({"cuda:0": 10_000 * MB})
    ledgers = Ledgers(0.8, reader)
    a = ledgers.get("a", 0, "cuda:0", None, None)
    b = ledgers.get("b", 0, "cuda:0", None, None)
    assert a is b
    assert a.name == "cuda:0"
    assert a.budget == int(0.8 * 10_000 * MB)


def test_shared_budget_is_computed_once() -> None:
    reader = FreeBytes({"cuda:0": 10_000 * MB})
    ledgers = Ledgers(0.5, reader)
    first = ledgers.get("a", 0, "cuda:0", None, None)
    reader.free["cuda:0"] = 1 * MB  # later, others loaded their weights
    second = ledgers.get("b", 3, "cuda:0", None, None)
    assert reader.calls == ["cuda:0"]
    assert second is first
    assert second.budget == 5000 * MB


def test_each_device_reads_its_own_free_memory() -> None:
    reader = FreeBytes({"cuda:0": 1000 * MB, "cuda:1": 3000 * MB})
    ledgers = Ledgers(1.0, reader)
    assert ledgers.get("m", 0, "cuda:0", None, None).budget == 1000 * MB
    assert ledgers.get("m", 1, "cuda:1", None, None).budget == 3000 * MB
    assert reader.calls == ["cuda:0", "cuda:1"]


def test_ledgers_to_list() -> None:
    ledgers = Ledgers(0.5, FreeBytes({"cpu": 2000 * MB}))
    ledgers.get("m", 0, "cpu", None, None).reserve(1, 100 * MB)
    ledgers.get("n", 0, "cpu", 500, None)
    assert ledgers.to_list() == [
        {"device": "cpu", "budget_bytes": 1000 * MB, "reserved_bytes": 100 * MB,
         "free_bytes": 900 * MB, "batches": 1},
        {"device": "n#0", "budget_bytes": 250 * MB, "reserved_bytes": 0,
         "free_bytes": 250 * MB, "batches": 0},
    ]


@pytest.mark.parametrize("fraction", [0.25, 0.9])
def test_fraction_applies_to_limit_and_free_memory(fraction: float) -> None:
    ledgers = Ledgers(fraction, FreeBytes({"cpu": 4000 * MB}))
    assert ledgers.get("m", 0, "cpu", 1000, None).budget == int(fraction * 1000 * MB)
    assert ledgers.get("m", 0, "cpu", None, None).budget == int(fraction * 4000 * MB)

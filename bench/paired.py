"""The embed targets of bench/serving.py, measured in alternation while watchkeeper is up.

The machine's speed drifts by more than the targets' margins from one minute to the next,
so figures measured minutes apart (the rows of the serving tables) are not compared here:
:class:`PairedThroughput` alternates c=32 rounds of watchkeeper, LitServe and the in-process
limit, :class:`Paired` alternates c=1 bursts of watchkeeper and the direct call.

The machine is also a VM whose host at times runs something else on its CPUs for seconds
(steal time in /proc/stat): a round with steal is slower by an amount that depends on when in
the round it struck, so the targets are judged on the clean rounds (steal at most
``loadgen.STEAL_CLEAN`` in every step of the round) when there are at least
``MIN_CLEAN_SHARE`` of them; the figure over all rounds is printed next to it.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import KeepAlivePost, percentile, rate, table
from direct_embed import DirectEmbed
from loadgen import (
    NOISE,
    STEAL_CLEAN,
    CpuClock,
    Rounds,
    alternate,
    pause,
    progress,
    resume,
    resumed,
    wait_quiet,
    wrk_rate,
)
from servers import BODIES, WK_EMBED, Server, embed_specs, shutdown, warm

PAIR_BURSTS = 60  # the c=1 target: bursts of server, then of direct calls (see Paired)...
PAIR_BURST_S = 0.25  # ...this long each...
PAIR_SKIP = 2  # ...the first this many of each not counted
PAIR_BLOCKS = 6  # the report shows the figure for this many blocks of bursts
PAIR_CONCURRENCY = 32  # the throughput targets: alternating rounds at this concurrency...
PAIR_ROUNDS = 7  # ...this many...
PAIR_ROUND_S = 4  # ...of this many seconds against each
MIN_CLEAN_SHARE = 1 / 3  # judge on the clean rounds when at least this share of them are clean
TARGETS = {"embed_vs_litserve": 1.5, "embed_vs_limit": 0.85, "embed_c1_extra_ms": 2.0,
           "noop_vs_litserve": 2.0, "noop_c1_p50_ms": 0.6}


@dataclass
class Paired:
    """The c=1 latency target: watchkeeper and the direct call in short alternating bursts.

    Measured apart, the two p50s can be minutes apart on a shared machine, and the direct
    call's own p50 moves by more than the 2 ms being checked (see the per-block p50s this
    prints). Here a burst of PAIR_BURST_S of requests, one at a time (common.KeepAlivePost,
    whose own time counts against the server), alternates with a burst of direct calls of
    the same length, PAIR_BURSTS times, the order flipping every burst; the first PAIR_SKIP
    of each burst warm up and are not counted. The figure is the p50 of all server samples
    minus the p50 of all direct-call samples, over the clean pairs of bursts (no steal in
    either) when there are enough of them, else over all.
    """

    direct: DirectEmbed
    server_bursts: list[list[tuple[float, float]]] = field(default_factory=list)  # (answer, inference) ms
    direct_bursts: list[list[float]] = field(default_factory=list)
    clean: list[int] = field(default_factory=list)  # the pairs of bursts without steal
    judged: list[int] = field(default_factory=list)  # the pairs the figures use
    elsewhere: float = 0.0

    def __call__(self, server: Server, url: str) -> None:
        progress(f"paired c=1: {PAIR_BURSTS} bursts of {PAIR_BURST_S} s each, server and direct call")
        client = KeepAlivePost(url, json.dumps(BODIES["embed"]).encode())
        try:
            wait_quiet(server.pid, self.direct.pid)
            start = CpuClock.now(server.pid, self.direct.pid)
            bursts: Rounds[Any] = alternate({
                "server": lambda: self._server_burst(client),
                "direct": lambda: self.direct.one_item_ms(PAIR_BURST_S, warmup=PAIR_SKIP),
            }, PAIR_BURSTS)
            self.server_bursts, self.direct_bursts = bursts["server"], bursts["direct"]
            self.clean, self.judged = bursts.clean(), bursts.judged(MIN_CLEAN_SHARE)
            self.elsewhere = CpuClock.now(server.pid, self.direct.pid).since(start)[2]
        finally:
            client.close()
        progress(f"paired c=1: server - direct call {self.extra_ms:+.2f} ms "
                 f"({self.judged_on}), others used {self.elsewhere:.0%} of the CPU")

    @staticmethod
    def _server_burst(client: KeepAlivePost) -> list[tuple[float, float]]:
        samples: list[tuple[float, float]] = []
        stop = time.perf_counter() + PAIR_BURST_S
        while time.perf_counter() < stop or len(samples) <= PAIR_SKIP:
            samples.append(client.timed())
        return samples[PAIR_SKIP:]

    def _answers(self, bursts: list[list[tuple[float, float]]]) -> list[float]:
        return [took for burst in bursts for took, _ in burst]

    def blocks(self, count: int) -> list[tuple[float, float]]:
        """(server p50, direct p50) of each of ``count`` consecutive blocks of bursts."""
        size = max(1, len(self.server_bursts) // count)
        return [(percentile(self._answers(self.server_bursts[i:i + size]), 50),
                 percentile(sum(self.direct_bursts[i:i + size], []), 50))
                for i in range(0, len(self.server_bursts) - size + 1, size)]

    @property
    def judged_on(self) -> str:
        return _judged_on(len(self.judged), len(self.clean), len(self.server_bursts), "bursts")

    def server_p50(self, pairs: list[int] | None = None) -> float:
        picked = self.judged if pairs is None else pairs
        return percentile(self._answers([self.server_bursts[i] for i in picked]), 50)

    def direct_p50(self, pairs: list[int] | None = None) -> float:
        picked = self.judged if pairs is None else pairs
        return percentile([ms for i in picked for ms in self.direct_bursts[i]], 50)

    def extra(self, pairs: list[int] | None = None) -> float:
        if not self.server_bursts:
            return math.nan
        return self.server_p50(pairs) - self.direct_p50(pairs)

    @property
    def extra_ms(self) -> float:
        return self.extra()

    @property
    def outside_worker_ms(self) -> float:
        """p50 of (answer time - the worker's inference time): HTTP, the front and the IPC."""
        outside = [took - inference for i in self.judged for took, inference in self.server_bursts[i]]
        return percentile(outside, 50)


@dataclass
class PairedThroughput:
    """The c=32 targets: watchkeeper, LitServe and the in-process limit in alternating rounds.

    The machine's speed drifts (the in-process limit read 378 and 270 items/s ten minutes
    apart), so ratios between figures measured minutes apart say as much about the drift as
    about the servers. Here LitServe is started next to watchkeeper and kept stopped
    (SIGSTOP) but for its own rounds (idle, it polls its queues and takes CPU). Every
    round runs wrk -c32 for PAIR_ROUND_S against each server and the limit for as long, in
    an order that flips every round; each ratio is the median of the rounds' ratios (the
    clean rounds' when enough are clean).
    """

    direct: DirectEmbed
    rates: dict[str, list[float]] = field(default_factory=dict)
    steal: list[float] = field(default_factory=list)  # each round's worst step
    clean: list[int] = field(default_factory=list)
    judged: list[int] = field(default_factory=list)  # the rounds the ratios use
    elsewhere: float = 0.0

    def __call__(self, server: Server, url: str, script: Path) -> None:
        lit_spec = embed_specs(WK_EMBED)[1]
        progress(f"paired c={PAIR_CONCURRENCY}: starting {lit_spec.name} next to watchkeeper")
        lit = lit_spec.start()
        try:
            lit.wait_ready()
            warm(lit, lit_spec, BODIES["embed"], script, PAIR_CONCURRENCY)
            pause(lit.pid)
            lit_url = lit.url + lit_spec.path
            steps: dict[str, Callable[[], float]] = {
                "watchkeeper": lambda: wrk_rate(url, script, PAIR_CONCURRENCY, PAIR_ROUND_S),
                lit_spec.name: lambda: resumed(
                    lit.pid, lambda: wrk_rate(lit_url, script, PAIR_CONCURRENCY, PAIR_ROUND_S)),
                "in-process limit": lambda: self.direct.items_per_s(PAIR_ROUND_S),
            }
            wait_quiet(server.pid, lit.pid, self.direct.pid)
            start = CpuClock.now(server.pid, lit.pid, self.direct.pid)
            rounds = alternate(steps, PAIR_ROUNDS)
            self.rates, self.steal = rounds.values, rounds.worst_by_round()
            self.clean, self.judged = rounds.clean(), rounds.judged(MIN_CLEAN_SHARE)
            self.elsewhere = CpuClock.now(server.pid, lit.pid, self.direct.pid).since(start)[2]
        finally:
            resume(lit.pid)
            shutdown(lit)
        progress(f"paired c={PAIR_CONCURRENCY}: watchkeeper / LitServe {self.ratio('LitServe'):.2f}x, "
                 f"/ in-process limit {self.ratio('in-process limit'):.2f}x ({self.judged_on})")

    def ratios(self, against: str) -> list[float]:
        return [w / o for w, o in zip(self.rates["watchkeeper"], self.rates[against], strict=True)]

    @property
    def judged_on(self) -> str:
        return _judged_on(len(self.judged), len(self.clean), len(self.steal), "rounds")

    def ratio(self, against: str, rounds: list[int] | None = None) -> float:
        if not self.rates:
            return math.nan
        ratios = self.ratios(against)
        return statistics.median(ratios[r] for r in (self.judged if rounds is None else rounds))


def _judged_on(judged: int, clean: int, count: int, what: str) -> str:
    if judged == clean:
        return f"{clean} clean {what} of {count}"
    return f"all {count} {what}: only {clean} clean"


def paired_report(paired: Paired) -> str:
    """The c=1 comparison: p50s of consecutive blocks of bursts (how steady it was), of the
    clean bursts and of all."""
    if not paired.server_bursts:
        return "c=1 against the direct call: not measured"
    blocks = paired.blocks(PAIR_BLOCKS)
    rows = [[f"bursts {i * len(paired.server_bursts) // len(blocks) + 1}-"
             f"{(i + 1) * len(paired.server_bursts) // len(blocks)}", f"{s:.2f}", f"{d:.2f}", f"{s - d:+.2f}"]
            for i, (s, d) in enumerate(blocks)]
    every = list(range(len(paired.server_bursts)))
    for label, pairs in ((f"{len(paired.clean)} clean", paired.clean), ("all", every)):
        if pairs:
            rows.append([label, f"{paired.server_p50(pairs):.2f}", f"{paired.direct_p50(pairs):.2f}",
                         f"{paired.extra(pairs):+.2f}"])
    count = sum(map(len, paired.server_bursts)), sum(map(len, paired.direct_bursts))
    outside = paired.outside_worker_ms
    return (f"watchkeeper at c=1 against the direct call, {len(paired.server_bursts)} alternating bursts of "
            f"{PAIR_BURST_S} s each ({count[0]} requests, {count[1]} direct calls; others used "
            f"{paired.elsewhere:.0%} of the CPU; clean: steal at most {STEAL_CLEAN:.0%} in both bursts "
            f"of a pair; the target uses {paired.judged_on}):\n\n"
            + table(["", "watchkeeper p50 ms", "direct call p50 ms", "difference ms"], rows)
            + f"\n\nOf the difference: {outside:.2f} ms outside the worker's inference (HTTP, the front, "
            f"the IPC: p50 of answer time - the answer's timings.inference_ms), "
            f"{paired.extra_ms - outside:+.2f} ms in it (the worker's run of the model, which starts "
            "after an idle gap, against back-to-back direct calls).")


def throughput_report(paired: PairedThroughput) -> str:
    """The c=32 rounds: each server's req/s and the limit's items/s, round by round."""
    if not paired.rates:
        return f"c={PAIR_CONCURRENCY} in alternating rounds: not measured"
    names = list(paired.rates)
    others = [n for n in names if n != "watchkeeper"]
    rows = [[str(r + 1), *(rate(paired.rates[n][r]) for n in names),
             *(f"{paired.ratios(o)[r]:.2f}x" for o in others),
             f"{paired.steal[r]:.0%}" + ("" if r in paired.clean else " (left out)")]
            for r in range(len(paired.steal))]
    every = list(range(len(paired.steal)))
    for label, picked in ((f"median of {len(paired.clean)} clean", paired.clean), ("median of all", every)):
        if picked:
            rows.append([label, *(rate(statistics.median(paired.rates[n][r] for r in picked)) for n in names),
                         *(f"{paired.ratio(o, picked):.2f}x" for o in others), ""])
    return (f"c={PAIR_CONCURRENCY} in alternating {PAIR_ROUND_S} s rounds, LitServe stopped outside its "
            f"own (others used {paired.elsewhere:.0%} of the CPU; steal: the largest share of the CPUs "
            f"the host took in any step of the round, clean at most {STEAL_CLEAN:.0%}); the targets "
            f"use {paired.judged_on}:\n\n"
            + table(["round", *(f"{n} {'items' if n == 'in-process limit' else 'req'}/s" for n in names),
                     *(f"watchkeeper / {o}" for o in others), "steal"], rows))


def paired_target(paired: Paired) -> list[str]:
    label = "embed c=1: p50 within 2 ms of a direct call"
    if not paired.server_bursts:
        return [label, "not measured", "-"]
    differences = [s - d for s, d in paired.blocks(PAIR_BLOCKS)]
    every = list(range(len(paired.server_bursts)))
    shown = (f"{paired.extra_ms:+.2f} ms ({paired.server_p50():.2f} vs {paired.direct_p50():.2f}, "
             f"{paired.judged_on}; all {paired.extra(every):+.2f}; "
             f"blocks {min(differences):+.2f} to {max(differences):+.2f})")
    verdict = "yes" if paired.extra_ms <= TARGETS["embed_c1_extra_ms"] else "NO"
    return [label, shown, verdict + (" *" if paired.elsewhere > NOISE else "")]


def throughput_targets(paired: PairedThroughput) -> list[list[str]]:
    rows = []
    for label, against, key in (("embed c=32: >= 1.5x LitServe req/s", "LitServe", "embed_vs_litserve"),
                                ("embed c=32: >= 0.85x the in-process limit", "in-process limit",
                                 "embed_vs_limit")):
        if not paired.rates:
            rows.append([label, "not measured", "-"])
            continue
        values, figure = [paired.ratios(against)[r] for r in paired.judged], paired.ratio(against)
        every = list(range(len(paired.steal)))
        shown = (f"{figure:.2f}x (median of {paired.judged_on}; {min(values):.2f}x to {max(values):.2f}x; "
                 f"all rounds {paired.ratio(against, every):.2f}x)")
        verdict = "yes" if figure >= TARGETS[key] else "NO"
        rows.append([label, shown, verdict + (" *" if paired.elsewhere > NOISE else "")])
    return rows

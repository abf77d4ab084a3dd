"""Run the real platform (feeds -> bus -> writer -> chdb) against the exchange simulator, then check the store.

Everything runs in one event loop on 127.0.0.1 with short timings. ``run_with_sim`` drives a scenario
(faults) while the platform ingests, then pauses trade generation and waits, bounded, until the feeds have
caught up with the simulator's last ids and backfill is idle, stops the platform and returns the simulator's
ground truth for the checks.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal

from k2.hot.chdb_store import ChdbStore
from k2.model.trade import TRADE_SCHEMA, trades_from_table
from k2.pipeline.live import Platform, run_platform
from k2.settings import load_settings
from k2.sim import ExchangeSimulator, SimConfig
from tests.candles import normalize, recompute, stored

FAST_FEEDS = {
    "backoff_initial_s": 0.05,
    "backoff_max_s": 0.5,
    "backoff_reset_s": 1.0,
    "connect_timeout_s": 3.0,
    "ack_timeout_s": 3.0,
    # Binance sends no heartbeat, so once run_with_sim pauses the simulator its watchdog reconnects every
    # binance_stale_s, and every reconnect reconciles 12 pairs over REST (weight 25 each: 300 of the 100 per second
    # the limiter grants). At 1.5 s the backfill never went idle again and a slow CI run timed out settling; at 4 s
    # it drains between reconnects.
    "binance_stale_s": 4.0,
    "kraken_stale_s": 1.0,
    "coinbase_stale_s": 1.0,
    "symbol_stale_s": 30.0,
    "flush_ms": 20,
    "kraken_rest_per_s": 15.0,
    "coinbase_rest_per_s": 10.0,
    "binance_rest_weight_per_min": 6000,
    "rest_timeout_s": 3.0,
    "rest_attempts": 8,
    "reconcile_settle_s": 0.2,
    "status_interval_s": 60.0,
}


@dataclass
class Outcome:
    emitted: dict[str, list]  # exchange -> SimTrade list: every trade after K2 subscribed (must all be stored)
    history: dict[str, list]  # every trade the simulator made (snapshots may bring older ones: allowed)
    unfillable: dict[str, list[tuple[str, int, int]]]
    platform: Platform
    sim_stats: dict[str, dict]


def make_settings(tmp_path, sim: ExchangeSimulator, exchanges, *, advanced: bool = False, cold: dict | None = None, **feeds):
    env = sim.settings_env(advanced)
    urls = {k[3:].lower(): v for k, v in env.items()}
    return load_settings(
        None,
        data_dir=str(tmp_path / "data"),
        exchanges=tuple(exchanges),
        feeds={**FAST_FEEDS, **feeds},
        coinbase_feed="advanced" if advanced else "exchange",
        writer={"max_delay_ms": 20},
        cold=cold or {},
        **urls,
    )


def sim_config(exchanges, **kw) -> SimConfig:
    base = dict(exchanges=tuple(exchanges), rate=60.0, heartbeat_interval_s=0.2, binance_ping_interval_s=0.5, tick_s=0.02)
    base.update(kw)
    return SimConfig(**base)


async def wait_for(cond: Callable[[], bool], timeout: float, what: str, why: Callable[[], str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}" + (f": {why()}" if why else ""))
        await asyncio.sleep(0.05)


def lagging(platform: Platform, sim: ExchangeSimulator) -> str:
    """Why the platform has not caught up with the simulator yet ('' when it has)."""
    for ex, tracker in platform.trackers.items():
        for inst in platform.sessions[ex].instruments:
            top = sim.last_id(ex, inst.symbol)
            st = tracker.symbols.get(inst.symbol)
            if top and (st is None or st.last_id is None or st.last_id < top):
                return f"{ex} {inst.symbol}: seen up to {st and st.last_id}, simulator at {top}"
        if tracker.open_gaps():
            return f"{ex}: open gaps {[(g.symbol, g.first, g.last, g.missing.ranges) for g in tracker.open_gaps()][:5]}"
        if not platform.backfillers[ex].idle.is_set():
            return f"{ex}: backfill busy"
    if platform.bus._q.qsize():
        return "bus not empty"
    return ""


def caught_up(platform: Platform, sim: ExchangeSimulator) -> bool:
    return lagging(platform, sim) == ""


async def run_with_sim(
    tmp_path,
    exchanges,
    scenario: Callable[[ExchangeSimulator, Platform], Awaitable[None]],
    *,
    sim_kw: dict | None = None,
    advanced: bool = False,
    settle_timeout: float = 60.0,
    cold: dict | None = None,
    **feeds,
) -> Outcome:
    sim = ExchangeSimulator(sim_config(exchanges, **(sim_kw or {})))
    await sim.start()
    # some history before K2 starts, on every pair (snapshots, last_match and REST heads see it)
    insts = [(ex, i.symbol) for ex in exchanges for i in sim.config.instrument_table().for_exchange(ex)]
    await wait_for(lambda: all(sim.last_id(ex, s) for ex, s in insts), 15, "history on every pair")
    sim.pause()
    heads = {(ex, inst.symbol): sim.last_id(ex, inst.symbol) for ex in exchanges
             for inst in sim.config.instrument_table().for_exchange(ex)}
    try:
        settings = make_settings(tmp_path, sim, exchanges, advanced=advanced, cold=cold, **feeds)
        stop = asyncio.Event()
        holder: list[Platform] = []
        task = asyncio.create_task(run_platform(settings, stop, on_start=holder.append))
        await wait_for(lambda: bool(holder) or task.done(), 20, "the platform to start")
        if task.done():
            task.result()
        platform = holder[0]
        await wait_for(lambda: all(s.status.state == "live" for s in platform.sessions.values()), 20, "feeds live")
        sim.resume()
        await scenario(sim, platform)
        sim.pause()
        await wait_for(lambda: caught_up(platform, sim), settle_timeout, "the feeds to catch up with the simulator",
                       lambda: lagging(platform, sim))
        await asyncio.sleep(0.3)  # let the writer's last coalescing window pass
        stop.set()
        await asyncio.wait_for(task, 30)
        return Outcome(
            {ex: [t for t in sim.emitted(ex) if t.trade_id > heads[(ex, t.symbol)]] for ex in exchanges},
            {ex: sim.emitted(ex) for ex in exchanges},
            {ex: sim.unfillable(ex) for ex in exchanges},
            platform,
            {ex: sim.stats(ex) for ex in exchanges},
        )
    finally:
        await sim.stop()


def check_store(tmp_path, outcome: Outcome, from_first_stored: bool = False) -> ChdbStore:
    """Every emitted trade stored exactly once with its exact values; unfillable ranges recorded; candles exact.

    ``from_first_stored``: a stream's history starts at its first stored trade (a process killed before it
    stored anything of a stream starts that stream afresh when restarted).
    """
    store = ChdbStore(tmp_path / "data")
    try:
        dup = store.query_arrow(
            "SELECT count() AS n FROM (SELECT exchange, symbol, trade_id FROM trades_store GROUP BY ALL HAVING count() > 1)"
        )["n"][0].as_py()
        assert dup == 0, "a trade is stored twice"
        table = store.query_arrow(
            "SELECT exchange, symbol, native_symbol, trade_id, price, qty, toString(side) AS side, ts, ts_recv FROM trades"
        ).cast(TRADE_SCHEMA)
        got = {(t.exchange, t.symbol, t.trade_id): t for t in trades_from_table(table)}
        want = {(t.exchange, t.symbol, t.trade_id): t for ex in outcome.emitted for t in outcome.emitted[ex]}
        if from_first_stored:
            first: dict[tuple[str, str], int] = {}
            for e, s, i in got:
                first[(e, s)] = min(first.get((e, s), i), i)
            want = {k: v for k, v in want.items() if k[2] >= first.get(k[:2], 1 << 64)}
        history = {(t.exchange, t.symbol, t.trade_id): t for ex in outcome.history for t in outcome.history[ex]}
        got_new = {k: v for k, v in got.items() if k in want or k not in history}
        assert set(got_new) == set(want), (
            f"missing {len(set(want) - set(got))} (e.g. {sorted(set(want) - set(got))[:5]}), "
            f"unexpected {len(set(got_new) - set(want))} (e.g. {sorted(set(got_new) - set(want))[:5]})"
        )
        for key, g in got.items():
            w = history[key]
            assert (g.price, g.qty, g.side, g.ts) == (Decimal(w.price), Decimal(w.qty), w.side, w.ts_us), (
                key, (g.price, g.qty, g.side, g.ts), w)
        gaps = store.query_arrow(
            "SELECT exchange, symbol, first_missing_id AS f, last_missing_id AS l, status, missing FROM gaps"
        ).to_pylist()
        assert not [g for g in gaps if g["status"] == "pending"], f"gaps left pending: {gaps}"
        for ex, ranges in outcome.unfillable.items():
            for symbol, first, last in ranges:
                hidden = set(range(first, last + 1))
                # recorded as one gap or several (a heartbeat may reveal them one by one), never as filled
                covered = set()
                for g in gaps:
                    if g["exchange"] == ex and g["symbol"] == symbol and g["status"] != "filled":
                        covered |= set(range(g["f"], g["l"] + 1))
                assert hidden <= covered, f"unfillable {ex} {symbol} {first}..{last} not recorded: {gaps}"
                assert all(k[2] not in hidden for k in got if k[:2] == (ex, symbol))
        trades = list(got.values())
        for tf in ("1m", "5m", "1h", "1d"):
            assert normalize(stored(store, tf)) == normalize(recompute(trades, tf)), tf
        return store
    except BaseException:
        store.close()
        raise

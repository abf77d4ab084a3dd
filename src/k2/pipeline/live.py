"""``k2 up``: the whole platform in one process.

    feeds (one FeedSession + Backfiller per exchange, asyncio)  ->  bus  ->  hot writer thread  ->  chdb store

Start-up resumes every stream from the last stored trade id (and re-queues gaps a previous run left pending),
so a restart, even after SIGKILL, backfills the hole. Stopping (SIGINT/SIGTERM, or ``stop`` set by a caller)
closes the connections, parses and publishes every frame already received, lets the writer store everything
on the bus, and only then returns. A fatal store error stops the platform (there is nowhere to put data).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field

from k2.bus.base import IngestBatch
from k2.bus.memory import MemoryBus
from k2.hot.writer import HotWriter
from k2.model.instrument import InstrumentTable
from k2.settings import Settings
from k2.venues.backfill import Backfiller
from k2.venues.gaps import Gap, GapTracker, RangeSet
from k2.venues.registry import make_parsers
from k2.venues.session import FeedSession, FeedStatus

log = logging.getLogger("k2.up")


def make_feed(exchange: str, settings: Settings):
    if exchange == "binance":
        from k2.venues.binance.feed import BinanceFeed

        return BinanceFeed(settings)
    if exchange == "kraken":
        from k2.venues.kraken.feed import KrakenFeed

        return KrakenFeed(settings)
    from k2.venues.coinbase.feed import CoinbaseFeed

    return CoinbaseFeed(settings)


@dataclass
class Platform:
    """The running object graph (what tests and, later, the API look at)."""

    settings: Settings
    store: object
    bus: MemoryBus
    writer: HotWriter
    sessions: dict[str, FeedSession] = field(default_factory=dict)
    backfillers: dict[str, Backfiller] = field(default_factory=dict)
    trackers: dict[str, GapTracker] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)
    offloads: int = 0
    offload_errors: int = 0
    last_offload: object = None
    last_offload_at: float = 0.0  # time.monotonic() when the last successful cycle ended

    def status(self) -> dict[str, FeedStatus]:
        return {ex: s.status for ex, s in self.sessions.items()}

    def status_line(self) -> str:
        parts = []
        for ex, st in self.status().items():
            tr = self.trackers[ex]
            pending = sum(1 for _ in tr.open_gaps())
            parts.append(
                f"{ex} {st.state} trades={st.trades} lag={st.lag_us / 1000:.0f}ms gaps={tr.detected} "
                f"filled={tr.filled} unfilled={tr.unfilled} pending={pending} dead={st.dead_letters} "
                f"reconnects={sum(st.disconnects.values())}"
            )
        w = self.writer.stats
        parts.append(f"stored={w.trades_stored} dup={w.duplicates} offloads={self.offloads}")
        return " | ".join(parts)


async def run_platform(
    settings: Settings,
    stop: asyncio.Event,
    *,
    store=None,
    on_start=None,
    on_stored=None,
) -> Platform:
    """Run until ``stop`` is set; returns after everything received is stored.

    ``store`` defaults to the embedded chdb store of ``settings.data_dir`` (opened and closed here).
    ``on_start(platform)`` is called once the graph is built (tests use it to watch the platform).
    ``on_stored(trades)`` is called by the hot writer (its thread) with every batch of newly stored trades.
    """
    from k2.hot.chdb_store import ChdbStore

    own_store = store is None
    if own_store:
        store = await asyncio.to_thread(ChdbStore, settings.data_dir)
    instruments: InstrumentTable = settings.instrument_table()
    parsers = make_parsers(instruments, coinbase_advanced_side_is_maker=settings.coinbase_advanced_side_is_maker)
    bus = MemoryBus(max_batches=4096)
    writer = HotWriter(
        store, bus, max_rows=settings.writer.max_rows, max_delay=settings.writer.max_delay_ms / 1000,
        store_raw=settings.writer.store_raw, on_stored=on_stored,
    ).start()
    platform = Platform(settings, store, bus, writer)

    inflight: set[asyncio.Future] = set()
    loop = asyncio.get_running_loop()

    async def publish(batch: IngestBatch) -> None:
        """Hand a batch to the bus. Shielded: a feed cancelled while it waits (a closing connection) must not
        cancel the hand-over itself, or frames its gap tracker already counted as seen would never be stored."""
        if writer.error is not None:
            return  # the platform is stopping; the error is reported below
        fut = loop.run_in_executor(None, bus.publish, batch)
        inflight.add(fut)
        fut.add_done_callback(inflight.discard)
        await asyncio.shield(fut)

    last = await asyncio.to_thread(store.last_trades)
    pending = await asyncio.to_thread(_pending_gaps, store)
    for ex in settings.exchanges:
        insts = instruments.for_exchange(ex)
        tracker = GapTracker(ex)
        for e, symbol, tid, ts in last:
            if e == ex:
                tracker.seed(symbol, tid, ts)
        feed = make_feed(ex, settings)
        session = FeedSession(feed, parsers[ex], insts, tracker, publish, settings)
        backfiller = Backfiller(feed, parsers[ex], insts, tracker, publish, settings, session.status)
        session.backfill = backfiller
        for gap in pending.get(ex, []):
            tracker.state(gap.symbol).gaps.append(gap)
            backfiller.request_gap(gap)
        platform.sessions[ex] = session
        platform.backfillers[ex] = backfiller
        platform.trackers[ex] = tracker
    log.info("k2 up: %s; data in %s", ", ".join(settings.exchanges), settings.data_dir)
    if on_start is not None:
        on_start(platform)

    inner = asyncio.Event()  # stops the feeds: set by ``stop`` or by a writer failure
    tasks = [asyncio.create_task(s.run(inner), name=f"feed-{ex}") for ex, s in platform.sessions.items()]
    tasks += [asyncio.create_task(b.run(inner), name=f"backfill-{ex}") for ex, b in platform.backfillers.items()]
    tasks.append(asyncio.create_task(_cold_loop(platform, inner), name="cold-tier"))
    watcher = asyncio.create_task(_watch(platform, stop, inner), name="k2-watch")
    try:
        await watcher
    finally:
        inner.set()
        # feeds close their sockets and publish what they received; backfill stops between pages
        done, pending_tasks = await asyncio.wait(tasks, timeout=15)
        for t in pending_tasks:
            t.cancel()
        for t in tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception) as exc:
                if not isinstance(exc, asyncio.CancelledError):
                    log.error("%s ended with %r", t.get_name(), exc)
        if inflight:  # hand-overs of cancelled feeds still on their way to the bus
            await asyncio.gather(*list(inflight), return_exceptions=True)
        for ex, tracker in platform.trackers.items():
            rows = tracker.take_rows()
            if rows is not None and writer.error is None:
                from k2.pipeline.ingest import gaps_only_batch

                await asyncio.to_thread(bus.publish, gaps_only_batch(rows))
        bus.close()
        try:
            await asyncio.to_thread(writer.join)
        finally:
            if own_store:
                await asyncio.to_thread(store.close)
    log.info("k2 up: stopped; %s", platform.status_line())
    return platform


async def _watch(platform: Platform, stop: asyncio.Event, inner: asyncio.Event) -> None:
    interval = platform.settings.feeds.status_interval_s
    next_line = time.monotonic() + interval
    while not stop.is_set():
        if platform.writer.error is not None:
            log.error("hot writer failed: %s; stopping", platform.writer.error)
            inner.set()
            return
        if time.monotonic() >= next_line:
            next_line = time.monotonic() + interval
            log.info("%s", platform.status_line())
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except TimeoutError:
            pass


async def _cold_loop(platform: Platform, stop: asyncio.Event) -> None:
    """Offload (and hot retention after it) every ``cold.offload_interval_s``; maintenance every
    ``cold.maintain_interval_s``. Runs in a worker thread while ingestion goes on; a failed cycle is logged and
    retried at the next interval (the offload is exactly-once, so a rerun is always safe)."""
    from k2.cold.catalog import open_catalog
    from k2.cold.offload import Offloader
    from k2.cold.tiers import apply_retention

    c = platform.settings.cold
    next_maintain = time.monotonic() + c.maintain_interval_s
    catalog = None
    while not stop.is_set():
        try:
            await asyncio.wait_for(stop.wait(), c.offload_interval_s)
            return
        except TimeoutError:
            pass
        try:
            if catalog is None:
                catalog = await asyncio.to_thread(open_catalog, platform.settings)

            def cycle():
                res = Offloader(platform.store, catalog, platform.settings).run_cycle()
                kept = apply_retention(platform.store, catalog, platform.settings, time.time_ns() // 1000)
                return res, kept

            res, kept = await asyncio.to_thread(cycle)
            platform.offloads += 1
            platform.last_offload = res
            platform.last_offload_at = time.monotonic()
            log.info("offload: %d trades, %d raw frames, watermark %d; hot retention dropped %d trades",
                     res.trades, res.raw_frames, res.trade_watermark, kept.trades_dropped)
            if time.monotonic() >= next_maintain:
                next_maintain = time.monotonic() + c.maintain_interval_s
                from k2.cold.maintain import maintain

                report = await asyncio.to_thread(maintain, platform.store, catalog, platform.settings)
                log.info("maintenance: %s", "; ".join(report.lines()[:3]))
        except Exception as exc:  # logged; the next cycle retries
            platform.offload_errors += 1
            log.exception("offload cycle failed: %s", exc)


def _pending_gaps(store) -> dict[str, list[Gap]]:
    """Gaps a previous run detected and did not settle: backfill them again."""
    rows = store.query_arrow(
        "SELECT exchange, symbol, first_missing_id AS f, last_missing_id AS l, "
        "toUnixTimestamp64Micro(detected) AS d, reason, toUnixTimestamp64Micro(ts_before_gap) AS tb, "
        "toUnixTimestamp64Micro(ts_after_gap) AS ta FROM gaps WHERE status = 'pending'"
    ).to_pylist()
    out: dict[str, list[Gap]] = {}
    for r in rows:
        gap = Gap(r["exchange"], r["symbol"], int(r["f"]), int(r["l"]), int(r["d"]), r["reason"],
                  int(r["tb"]), int(r["ta"]), RangeSet([(int(r["f"]), int(r["l"]))]))
        out.setdefault(r["exchange"], []).append(gap)
    return out

"""The one WebSocket session loop, shared by every venue.

A :class:`FeedSession` keeps one exchange connected for as long as the process runs:

* connect, send the venue's subscriptions through a rate limiter and wait for every acknowledgement
  (``ack_timeout_s``); a refused stream is reported and left out, a refused request fails the connection;
* read frames as they come, stamping each with its receive time; every ``flush_ms`` (or sooner when many are
  waiting) parse the batch, act on control frames, check trade-id continuity, and publish frames, trades,
  dead letters and gap records to the bus;
* a watchdog per connection (no frame for the venue's ``stale_s``), per stream (a Coinbase product without
  heartbeats for ``coinbase_stale_s``; any stream without a trade for ``symbol_stale_s`` is resubscribed and
  reconciled over REST), application pings where the venue wants them;
* reconnect with capped exponential backoff and full jitter; a planned rotation (Binance's 24 h limit) and a
  server-shutdown notice open the new connection *before* closing the old one, so nothing is lost in between;
* after every reconnect that did not overlap, and at start-up, streams that have not shown a live trade
  within ``reconcile_settle_s`` are reconciled over REST from their last id (a quiet stream reveals no gap).

No failure of one session stops another: everything but cancellation is caught, logged and retried.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from k2.bus.base import IngestBatch
from k2.model.instrument import Instrument
from k2.pipeline.ingest import build_batch
from k2.venues.base import VenueParser
from k2.venues.feed import EventOutcome, Subscription, VenueFeed
from k2.venues.gaps import GapTracker

log = logging.getLogger("k2.feed")

Publish = Callable[[IngestBatch], Awaitable[None]]
MAX_FRAME_BYTES = 16 * 1024 * 1024  # Coinbase's SDK allows 10 MiB messages
BATCH_FRAMES = 2_000  # parse sooner than flush_ms when this many frames wait


@dataclass
class FeedStatus:
    """Live counters of one feed (read by `k2 up`'s status line, later by the API and metrics)."""

    exchange: str
    state: str = "starting"  # starting | connecting | subscribing | live | backoff | stopped
    connects: int = 0
    connect_failures: int = 0
    disconnects: dict[str, int] = field(default_factory=dict)  # reason kind -> count
    rotations: int = 0
    frames: int = 0
    trades: int = 0
    dead_letters: int = 0
    control: int = 0
    messages_sent: int = 0
    exchange_errors: int = 0
    subscribe_failures: int = 0
    resubscribes: int = 0
    sequence_gaps: int = 0
    last_frame_us: int = 0
    last_trade_us: int = 0  # exchange time of the newest trade seen
    lag_us: int = 0  # receive time - exchange time of the newest trade (clock skew included)
    rest_requests: int = 0
    rest_errors: int = 0
    rest_rate_limited: int = 0
    backfilled_trades: int = 0
    last_error: str = ""

    def count_disconnect(self, reason: str) -> None:
        kind = reason.split(":", 1)[0]
        self.disconnects[kind] = self.disconnects.get(kind, 0) + 1


class RateLimiter:
    """Token bucket: ``rate`` tokens per second, at most ``burst`` saved."""

    def __init__(self, rate: float, burst: float | None = None) -> None:
        self.rate = rate
        self.burst = burst if burst is not None else max(1.0, rate)
        self._tokens = self.burst
        self._at = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self, cost: float = 1.0) -> None:
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
                self._at = now
                if self._tokens >= cost:
                    self._tokens -= cost
                    return
                await asyncio.sleep((cost - self._tokens) / self.rate)


def backoff_delay(attempt: int, initial: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in [0, min(cap, initial * 2^(attempt-1))]."""
    return rng.uniform(0.0, min(cap, initial * (2 ** max(attempt - 1, 0))))


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> None:
    if seconds <= 0:
        return
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass


class ConnectionFailed(Exception):
    pass


class Connection:
    """One WebSocket connection of a session: reader, batch processor, subscriptions."""

    def __init__(self, session: "FeedSession", conn_id: str) -> None:
        self.s = session
        self.id = conn_id
        self.ws = None
        self.frames: list[str | bytes] = []
        self.ts: list[int] = []
        self.kick = asyncio.Event()
        self.expect: set[str] = set()
        self.failed: str | None = None
        self.ready = asyncio.Event()
        self.ended = asyncio.Event()
        self.end_reason = ""
        self.shutdown: str | None = None
        self.opened = time.monotonic()
        self.last_frame = time.monotonic()
        self.last_heartbeat: dict[str, float] = {}  # canonical symbol -> monotonic time
        self.last_seq: int | None = None
        self.limiter = RateLimiter(session.feed.msgs_per_s, 1.0)
        self._tasks: list[asyncio.Task] = []
        self._closed = False

    # -- life cycle ----------------------------------------------------------------------------------
    async def open(self, instruments: list[Instrument]) -> None:
        import websockets

        s = self.s
        f = s.feed
        ping = f.ws_ping_s
        self.ws = await websockets.connect(
            f.url(),
            open_timeout=s.settings.feeds.connect_timeout_s,
            ping_interval=ping,
            ping_timeout=ping,
            close_timeout=2,
            max_size=MAX_FRAME_BYTES,
            max_queue=4096,
        )
        self.opened = self.last_frame = time.monotonic()
        s.status.connects += 1
        self._tasks = [
            asyncio.create_task(self._reader(), name=f"{self.id}-reader"),
            asyncio.create_task(self._processor(), name=f"{self.id}-processor"),
        ]
        s.status.state = "subscribing"
        await self.subscribe(f.subscriptions(instruments))
        self.ready.set()

    async def subscribe(self, subs: list[Subscription]) -> None:
        """Send ``subs`` and wait until every acknowledgement arrived (or raise)."""
        for sub in subs:
            self.expect |= sub.expect
            await self.send(sub.payload)
        deadline = time.monotonic() + self.s.settings.feeds.ack_timeout_s
        while self.expect and self.failed is None and not self.ended.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                raise ConnectionFailed(f"not acknowledged within {self.s.settings.feeds.ack_timeout_s}s: "
                                       f"{', '.join(sorted(self.expect)[:5])}")
            self.kick.set()  # process what arrived
            await asyncio.sleep(min(0.02, left))
        if self.failed is not None:
            raise ConnectionFailed(f"subscription refused: {self.failed}")
        if self.ended.is_set() and self.expect:
            raise ConnectionFailed(f"closed while subscribing ({self.end_reason})")

    async def send(self, text: str) -> None:
        await self.limiter.acquire()
        await self.ws.send(text)
        self.s.status.messages_sent += 1

    def end(self, reason: str) -> None:
        if not self.ended.is_set():
            self.end_reason = reason
            self.ended.set()

    async def close(self, reason: str) -> None:
        """Stop reading, process every frame received, close the socket."""
        if self._closed:
            return
        self._closed = True
        self.end(reason)
        reader = self._tasks[0] if self._tasks else None
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 3)
            except Exception:  # already broken: nothing more to read anyway
                pass
        if reader is not None:
            reader.cancel()
        for t in self._tasks[1:]:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        await self._process()  # the last frames

    # -- reading and processing ----------------------------------------------------------------------
    async def _reader(self) -> None:
        from websockets.exceptions import ConnectionClosed

        try:
            async for msg in self.ws:
                self.frames.append(msg)
                self.ts.append(time.time_ns() // 1000)
                self.last_frame = time.monotonic()
                if len(self.frames) >= BATCH_FRAMES:
                    self.kick.set()
            rc = self.ws.close_code
            self.end(f"closed: code {rc} {self.ws.close_reason or ''}".rstrip())
        except ConnectionClosed as exc:
            self.end(f"closed: {exc}")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a transport error
            self.end(f"error: {type(exc).__name__}: {exc}")

    async def _processor(self) -> None:
        flush = self.s.settings.feeds.flush_ms / 1000
        while True:
            try:
                await asyncio.wait_for(self.kick.wait(), flush)
            except TimeoutError:
                pass
            self.kick.clear()
            try:
                await self._process()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a bug must not kill the feed: record it, drop the connection
                log.exception("%s: processing failed", self.id)
                self.s.status.last_error = f"processing: {exc}"
                self.end(f"error: processing failed: {exc}")
                return

    async def _process(self) -> None:
        if not self.frames:
            return
        frames, ts = self.frames, self.ts
        self.frames, self.ts = [], []
        await self.s.handle(self, frames, ts)

    # -- control events ------------------------------------------------------------------------------
    def apply(self, out: EventOutcome) -> None:
        self.expect -= out.acked
        for token, msg in out.failed.items():
            if token == "*" or token not in self.expect:
                if token == "*":
                    self.failed = msg
                continue
            # one refused stream: report it and go on with the others
            self.expect.discard(token)
            self.s.status.subscribe_failures += 1
            self.s.status.last_error = f"subscription {token} refused: {msg}"
            log.error("%s: subscription %s refused: %s", self.id, token, msg)
        if out.shutdown and self.shutdown is None:
            self.shutdown = out.shutdown
        if out.error:
            self.s.status.exchange_errors += 1
            self.s.status.last_error = out.error
            log.warning("%s: exchange says: %s", self.id, out.error)


class FeedSession:
    """Keeps one exchange connected; see the module docstring."""

    def __init__(
        self,
        feed: VenueFeed,
        parser: VenueParser,
        instruments: list[Instrument],
        tracker: GapTracker,
        publish: Publish,
        settings,
        backfill=None,
        rng: random.Random | None = None,
    ) -> None:
        self.feed = feed
        self.parser = parser
        self.instruments = instruments
        self.by_native = {i.native_symbol: i for i in instruments}
        self.tracker = tracker
        self.publish = publish
        self.settings = settings
        self.backfill = backfill
        self.status = FeedStatus(feed.exchange)
        self.rng = rng or random.Random()
        self.current: Connection | None = None
        self._tag = f"{int(time.time() * 1000):x}"
        self._n = 0
        self._last_trade_mono: dict[str, float] = {}
        self._resubscribed_at: dict[str, float] = {}
        self._reconcile_task: asyncio.Task | None = None

    # -- the loop ------------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        f = self.settings.feeds
        attempt = 0
        current: Connection | None = None
        try:
            while not stop.is_set():
                self._n += 1
                conn = Connection(self, f"{self.feed.exchange}-{self._tag}-{self._n}")
                self.status.state = "connecting"
                try:
                    await conn.open(self.instruments)
                except asyncio.CancelledError:
                    await conn.close("cancelled")
                    raise
                except Exception as exc:
                    reason = _describe(exc)
                    self.status.connect_failures += 1
                    self.status.last_error = f"connect: {reason}"
                    log.warning("%s: connection failed: %s", conn.id, reason)
                    await conn.close(f"failed: {reason}")
                    if current is not None and not current.ended.is_set():
                        # an overlapping replacement failed; the old connection still works: retry shortly
                        await sleep_or_stop(stop, backoff_delay(1, f.backoff_initial_s, f.backoff_max_s, self.rng))
                        continue
                    if current is not None:
                        await self._retire(current, current.end_reason or "ended")
                        current = None
                    attempt += 1
                    self.status.state = "backoff"
                    await sleep_or_stop(stop, backoff_delay(attempt, f.backoff_initial_s, f.backoff_max_s, self.rng))
                    continue
                overlapped = current is not None and not current.ended.is_set()
                if current is not None:
                    await self._retire(current, "replaced" if overlapped else current.end_reason)
                self.current = current = conn
                self.status.state = "live"
                log.info("%s: live (%d streams)%s", conn.id, len(self.instruments), " [overlapping]" if overlapped else "")
                if not overlapped:
                    self._schedule_reconcile()
                if self.backfill is not None and self.status.connects == 1:
                    for inst in self.instruments:  # streams nothing anchors yet: where do they start?
                        st = self.tracker.symbols.get(inst.symbol)
                        if st is None or st.last_id is None:
                            self.backfill.anchor(inst)
                try:
                    reason = await self._watch(conn, stop)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # e.g. a send on a connection that just closed
                    reason = f"error: {_describe(exc)}"
                if reason == "stop":
                    break
                if reason.startswith(("rotate", "shutdown")) and not conn.ended.is_set():
                    if reason.startswith("rotate"):
                        self.status.rotations += 1
                    log.info("%s: %s; opening the next connection before closing this one", conn.id, reason)
                    continue  # `current` stays open until its successor is live
                healthy = time.monotonic() - conn.opened >= f.backoff_reset_s
                attempt = 1 if healthy else attempt + 1
                log.warning("%s: %s; reconnecting", conn.id, reason)
                await self._retire(conn, reason)
                self.current = current = None
                self.status.state = "backoff"
                await sleep_or_stop(stop, backoff_delay(attempt, f.backoff_initial_s, f.backoff_max_s, self.rng))
        finally:
            if self._reconcile_task is not None:
                self._reconcile_task.cancel()
            if current is not None:
                await self._retire(current, "stop")
            self.current = None
            self.status.state = "stopped"

    async def _retire(self, conn: Connection, reason: str) -> None:
        self.status.count_disconnect(reason or "ended")
        await conn.close(reason)

    async def _watch(self, conn: Connection, stop: asyncio.Event) -> str:
        """Wait until ``conn`` must be replaced; returns why."""
        f = self.settings.feeds
        feed = self.feed
        tick = max(0.05, min(0.5, feed.stale_s / 4))
        ping_n = 0
        next_ping = time.monotonic() + (feed.app_ping_s or 0)
        subscribed_at = time.monotonic()
        while True:
            if stop.is_set():
                return "stop"
            if conn.ended.is_set():
                return conn.end_reason or "closed"
            now = time.monotonic()
            if conn.shutdown:
                return f"shutdown: {conn.shutdown}"
            if now - conn.last_frame > feed.stale_s:
                return f"stale: no frame for {now - conn.last_frame:.1f}s"
            if feed.per_stream_heartbeats and now - subscribed_at > feed.stale_s:
                for inst in self.instruments:
                    seen = conn.last_heartbeat.get(inst.symbol, subscribed_at)
                    if now - seen > feed.stale_s:
                        return f"stale: no heartbeat for {inst.native_symbol} for {now - seen:.1f}s"
            if feed.rotate_s is not None and now - conn.opened >= feed.rotate_s:
                return f"rotate: connection is {now - conn.opened:.0f}s old"
            if feed.app_ping_s and now >= next_ping:
                ping_n += 1
                next_ping = now + feed.app_ping_s
                msg = feed.app_ping(ping_n)
                if msg:
                    await conn.send(msg)
            await self._quiet_streams(conn, now, subscribed_at, f.symbol_stale_s)
            await sleep_or_stop(stop, tick)

    async def _quiet_streams(self, conn: Connection, now: float, since: float, limit: float) -> None:
        for inst in self.instruments:
            seen = max(self._last_trade_mono.get(inst.symbol, since), since, self._resubscribed_at.get(inst.symbol, 0))
            if now - seen < limit:
                continue
            self._resubscribed_at[inst.symbol] = now
            self.status.resubscribes += 1
            log.info("%s: no trade on %s for %.0fs; resubscribing and reconciling", conn.id, inst.native_symbol, now - seen)
            try:
                await conn.subscribe(self.feed.resubscribe(inst))
            except Exception as exc:  # refused, or the connection closed meanwhile
                conn.end(f"error: resubscribe failed: {_describe(exc)}")
                return
            self._reconcile(inst)

    # -- reconcile -----------------------------------------------------------------------------------
    def _schedule_reconcile(self) -> None:
        self.tracker.mark_reconnect()
        if self.backfill is None:
            return
        if self._reconcile_task is not None:
            self._reconcile_task.cancel()
        self._reconcile_task = asyncio.create_task(self._reconcile_quiet(), name=f"{self.feed.exchange}-reconcile")

    async def _reconcile_quiet(self) -> None:
        await asyncio.sleep(self.settings.feeds.reconcile_settle_s)
        for inst in self.instruments:
            st = self.tracker.symbols.get(inst.symbol)
            if st is not None and st.last_id is not None and not st.live_since_connect:
                self._reconcile(inst)

    def _reconcile(self, inst: Instrument) -> None:
        st = self.tracker.symbols.get(inst.symbol)
        if self.backfill is not None and st is not None and st.last_id is not None:
            self.backfill.reconcile(inst, st.last_id + 1, st.last_ts)

    # -- a batch of frames ---------------------------------------------------------------------------
    async def handle(self, conn: Connection, frames: list, ts: list[int]) -> None:
        st = self.status
        res = self.parser.parse(frames, ts)
        st.frames += len(frames)
        st.control += res.control
        st.dead_letters += len(res.dead)
        st.last_frame_us = ts[-1]
        if self.feed.sequenced:
            self._check_sequence(conn, frames)
        outcomes = [(ev, self.feed.on_event(ev)) for ev in res.events]
        for _, out in outcomes:
            conn.apply(out)
        trades = res.trades
        new_gaps = []
        if trades.num_rows:
            st.trades += trades.num_rows
            new_gaps = self.tracker.observe_live(trades)
            now = time.monotonic()
            for sym in set(trades.column("symbol").to_pylist()):
                self._last_trade_mono[sym] = now
            newest = trades.column("ts").cast("int64").to_numpy().max()
            if newest > st.last_trade_us:
                st.last_trade_us = int(newest)
                st.lag_us = int(ts[-1]) - int(newest)
        for _, out in outcomes:
            if out.heartbeat_native is None:
                continue
            inst = self.by_native.get(out.heartbeat_native)
            if inst is None:
                continue
            conn.last_heartbeat[inst.symbol] = time.monotonic()
            if out.last_trade_id is not None:
                gap = self.tracker.note_heartbeat(inst.symbol, out.last_trade_id)
                if gap is not None:
                    new_gaps.append(gap)
        batch = build_batch(self.feed.exchange, frames, ts, [conn.id] * len(frames), res)
        batch.gaps = self.tracker.take_rows()
        await self.publish(batch)
        for gap in new_gaps:
            log.warning("%s: gap %s ids %d..%d (%s)", conn.id, gap.symbol, gap.first, gap.last, gap.reason)
            if self.backfill is not None and not gap.settled:
                self.backfill.request_gap(gap)

    def _check_sequence(self, conn: Connection, frames: list) -> None:
        dropped = False
        for frame in frames:
            seq = self.feed.sequence_of(frame)
            if seq is None:
                continue
            if conn.last_seq is not None and seq > conn.last_seq + 1:
                dropped = True
            if conn.last_seq is None or seq > conn.last_seq:
                conn.last_seq = seq
        if dropped:
            self.status.sequence_gaps += 1
            log.warning("%s: sequence_num jumped: messages were dropped; reconciling every stream", conn.id)
            self._schedule_reconcile()


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if type(exc).__name__ not in text else text

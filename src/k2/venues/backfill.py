"""REST backfill: fetch the trades a live stream missed, through the same parse -> bus -> dedup path.

One :class:`Backfiller` per exchange works through a queue of jobs, one page at a time, inside the venue's
REST budget (a token bucket: Binance request weight per minute, Kraken and Coinbase requests per second):

* a *gap* job fetches the ids of one detected gap; what REST does not return is settled as missing, with
  the reason, in the ``gaps`` view;
* a *reconcile* job (start-up, reconnect, a quiet stream) fetches from a stream's last id up to now.

Every response, errors included, is stored in the raw layer as a ``{"rest": url, "status": n, "body": ...}``
frame on connection ``<exchange>-rest``; the venue parser turns the good ones into trades. Rate-limit answers
(HTTP 429/418, Kraken ``EGeneral:Too many requests``) wait ``Retry-After`` (or back off), server errors and
transport errors back off with jitter, both up to ``rest_attempts`` tries per page; any other 4xx ends the job.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass

import httpx
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.model.instrument import Instrument
from k2.pipeline.ingest import build_batch, gaps_only_batch
from k2.venues.base import ParseResult, VenueParser
from k2.venues.feed import BackfillJob, RestRequest, VenueFeed, rest_frame
from k2.venues.gaps import Gap, GapTracker
from k2.venues.session import FeedStatus, Publish, RateLimiter, backoff_delay, sleep_or_stop

log = logging.getLogger("k2.backfill")

MAX_RETRY_AFTER_S = 120.0


class BackfillFailed(Exception):
    pass


@dataclass
class _Job:
    kind: str  # gap | reconcile
    inst: Instrument
    gap: Gap | None = None
    first: int = 0
    ts_before_us: int = 0


def rest_limiter(exchange: str, settings) -> RateLimiter:
    f = settings.feeds
    if exchange == "binance":
        per_s = f.binance_rest_weight_per_min / 60.0
        return RateLimiter(per_s, burst=max(25.0, per_s * 2))
    if exchange == "kraken":
        return RateLimiter(f.kraken_rest_per_s, burst=1.0)
    return RateLimiter(f.coinbase_rest_per_s, burst=max(1.0, f.coinbase_rest_per_s))


class Backfiller:
    def __init__(
        self,
        feed: VenueFeed,
        parser: VenueParser,
        instruments: list[Instrument],
        tracker: GapTracker,
        publish: Publish,
        settings,
        status: FeedStatus,
        rng: random.Random | None = None,
    ) -> None:
        self.feed = feed
        self.exchange = feed.exchange
        self.parser = parser
        self.by_symbol = {i.symbol: i for i in instruments}
        self.tracker = tracker
        self.publish = publish
        self.settings = settings
        self.status = status
        self.rng = rng or random.Random()
        self.limiter = rest_limiter(self.exchange, settings)
        self.queue: asyncio.Queue[_Job] = asyncio.Queue()
        self._reconciling: set[str] = set()
        self.idle = asyncio.Event()
        self.idle.set()
        self.conn = f"{self.exchange}-rest"

    # -- requests ------------------------------------------------------------------------------------
    def request_gap(self, gap: Gap) -> None:
        inst = self.by_symbol.get(gap.symbol)
        if inst is None:
            self.tracker.settle(gap, "the instrument is not configured")
            return
        self.idle.clear()
        self.queue.put_nowait(_Job("gap", inst, gap=gap))

    def anchor(self, inst: Instrument) -> None:
        """Ask for the stream's latest trade (where the venue needs it; see ``VenueFeed.head_request``)."""
        if self.feed.head_request(inst) is None:
            return
        self.idle.clear()
        self.queue.put_nowait(_Job("anchor", inst))

    def reconcile(self, inst: Instrument, first: int, ts_before_us: int) -> None:
        if inst.symbol in self._reconciling:
            return  # one is already queued; it will start from the then-latest id
        self._reconciling.add(inst.symbol)
        self.idle.clear()
        self.queue.put_nowait(_Job("reconcile", inst, first=first, ts_before_us=ts_before_us))

    # -- the worker ----------------------------------------------------------------------------------
    async def run(self, stop: asyncio.Event) -> None:
        timeout = httpx.Timeout(self.settings.feeds.rest_timeout_s)
        async with httpx.AsyncClient(timeout=timeout, headers={"User-Agent": "k2-backfill"}) as client:
            self.client = client
            while not stop.is_set():
                if self.queue.empty():
                    self.idle.set()
                try:
                    job = await asyncio.wait_for(self.queue.get(), 0.25)
                except TimeoutError:
                    continue
                self.idle.clear()
                try:
                    if job.kind == "gap":
                        await self._gap(job, stop)
                    elif job.kind == "anchor":
                        await self._anchor(job, stop)
                    else:
                        await self._reconcile(job, stop)
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # never let one job stop the worker
                    log.exception("%s: backfill job failed", self.exchange)
                    self.status.last_error = f"backfill: {exc}"
                    if job.gap is not None:
                        self.tracker.settle(job.gap, f"backfill failed: {exc}")
                finally:
                    if job.kind == "reconcile":
                        self._reconciling.discard(job.inst.symbol)
                    await self._publish_rows()

    async def _gap(self, job: _Job, stop: asyncio.Event) -> None:
        gap = job.gap
        if gap is None or gap.settled or not gap.missing.ranges:
            return
        first, last = gap.missing.ranges[0][0], gap.missing.ranges[-1][1]
        why = await self._fetch(BackfillJob(job.inst, first, last, gap.ts_before_us), False, stop)
        if not gap.settled:
            self.tracker.settle(gap, why or "the exchange's REST API did not return them")
            log.warning("%s: gap %s %d..%d settled as %s", self.exchange, gap.symbol, gap.first, gap.last, gap.status)

    async def _anchor(self, job: _Job, stop: asyncio.Event) -> None:
        req = self.feed.head_request(job.inst)
        try:
            frame, ts_recv, res = await self._get(req, stop)
        except BackfillFailed as exc:
            log.warning("%s: no head for %s: %s", self.exchange, job.inst.symbol, exc)
            return
        await self.publish(build_batch(self.exchange, [frame], [ts_recv], [self.conn], res))
        trades = res.trades
        if not trades.num_rows:
            return  # no trade yet: the first live trade anchors the stream
        ids = trades.column("trade_id").to_numpy()
        top = int(ids.argmax())
        gap = self.tracker.anchor(job.inst.symbol, int(ids[top]), int(trades.column("ts").cast(pa.int64())[top].as_py()))
        if gap is not None:
            self.request_gap(gap)

    async def _reconcile(self, job: _Job, stop: asyncio.Event) -> None:
        st = self.tracker.state(job.inst.symbol)
        # start from the latest id known now (the live stream may have moved on since the job was queued)
        first = max(job.first, (st.last_id or 0) + 1)
        ts_before = st.last_ts if st.last_id is not None and st.last_id + 1 == first else job.ts_before_us
        before = {id(g) for g in st.gaps}
        why = await self._fetch(BackfillJob(job.inst, first, None, ts_before), True, stop)
        for gap in [g for g in st.gaps if id(g) not in before]:
            self.tracker.settle(gap, why or "the exchange's REST API did not return them")

    async def _fetch(self, job: BackfillJob, reconcile: bool, stop: asyncio.Event) -> str | None:
        """Page through REST for ``job``; returns why it stopped early (None when it got to the end)."""
        max_trades = self.settings.feeds.backfill_max_trades
        pager = self.feed.pager(job, max_trades)
        symbol = job.inst.symbol
        while (req := pager.next_request()) is not None:
            if stop.is_set():
                return "K2 stopped before the backfill finished"
            try:
                frame, ts_recv, res = await self._get(req, stop)
            except BackfillFailed as exc:
                return str(exc)
            trades = res.trades
            mine = trades.filter(pc.equal(trades.column("symbol"), symbol)) if trades.num_rows else trades
            ids = mine.column("trade_id").to_numpy() if mine.num_rows else np.zeros(0, dtype=np.uint64)
            ts = mine.column("ts").cast(pa.int64()).to_numpy() if mine.num_rows else np.zeros(0, dtype=np.int64)
            self.tracker.observe_rest(symbol, ids, ts, reconcile=reconcile)
            self.status.backfilled_trades += mine.num_rows
            batch = build_batch(self.exchange, [frame], [ts_recv], [self.conn], res)
            batch.gaps = self.tracker.take_rows()
            await self.publish(batch)
            ev = next((e for e in res.events if e.kind == "rest"), None)
            items = int(ev.detail.get("items", mine.num_rows)) if ev is not None else mine.num_rows
            cursor = ev.detail.get("last") if ev is not None else None
            pager.page_done([int(x) for x in ids], items, cursor)
        if getattr(pager, "hit_limit", False):
            return f"backfill limit reached ({max_trades} trades per gap, setting feeds.backfill_max_trades)"
        return None

    async def _get(self, req: RestRequest, stop: asyncio.Event) -> tuple[str, int, ParseResult]:
        f = self.settings.feeds
        last = ""
        for attempt in range(1, f.rest_attempts + 1):
            await self.limiter.acquire(req.cost)
            self.status.rest_requests += 1
            try:
                resp = await self.client.get(req.url, headers=req.headers)
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                self.status.rest_errors += 1
                await _sleep(stop, backoff_delay(attempt, f.backoff_initial_s, f.backoff_max_s, self.rng))
                continue
            ts_recv = time.time_ns() // 1000
            frame = rest_frame(req.url, resp.status_code, resp.content)
            res = self.parser.parse([frame], [ts_recv])
            err = next((e for e in res.events if e.kind == "rest_error"), None)
            if resp.status_code == 200 and err is None:
                return frame, ts_recv, res  # malformed items, if any, are dead letters; the rest are kept
            # an error answer: stored in the raw layer like any response, then retried or given up
            await self.publish(build_batch(self.exchange, [frame], [ts_recv], [self.conn], res))
            text = str(err.detail.get("error") if err is not None else resp.text[:200])
            last = f"HTTP {resp.status_code}: {text[:200]}"
            if resp.status_code in (418, 429) or "too many requests" in text.lower():
                self.status.rest_rate_limited += 1
                wait = _retry_after(resp) or backoff_delay(attempt + 1, f.backoff_initial_s, f.backoff_max_s, self.rng)
                log.warning("%s: REST rate limited (%s); waiting %.1fs", self.exchange, last, wait)
                await _sleep(stop, min(wait, MAX_RETRY_AFTER_S))
                continue
            self.status.rest_errors += 1
            if resp.status_code >= 500 or resp.status_code == 200:
                await _sleep(stop, backoff_delay(attempt, f.backoff_initial_s, f.backoff_max_s, self.rng))
                continue
            raise BackfillFailed(f"REST refused the request: {last}")
        raise BackfillFailed(f"REST failed {f.rest_attempts} times, last: {last}")

    async def _publish_rows(self) -> None:
        rows = self.tracker.take_rows()
        if rows is not None:
            await self.publish(gaps_only_batch(rows))


def _retry_after(resp: httpx.Response) -> float | None:
    value = resp.headers.get("Retry-After")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


async def _sleep(stop: asyncio.Event, seconds: float) -> None:
    await sleep_or_stop(stop, seconds)

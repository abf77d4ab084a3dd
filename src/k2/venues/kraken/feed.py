"""Kraken spot live feed: WebSocket v2 ``trade`` channel (exchanges.md §2).

* Subscriptions: one ``subscribe`` for all symbols (Kraken asks for batching), ``snapshot: true`` sent
  explicitly (the documented default differs between two doc pages). Kraken acknowledges each symbol
  separately; a refused symbol is reported and left out, the others go on.
* Liveness: a heartbeat every second when nothing else is sent; reconnect after ``kraken_stale_s`` (5 s, the
  documented advice) of silence. Application-level ``ping`` every ``kraken_ping_s``.
* After a reconnect the 50-trade snapshot overlaps what is stored (dedup) and fills short gaps for free.
* Backfill: ``GET /0/public/Trades?pair=&since=`` pages by time, not id: start 1 ms before the last good
  trade's time (REST and WS times of one trade can differ by 1 µs) and follow the ``last`` cursor
  (1 ns early: trades of one nanosecond may straddle two pages).
"""

from __future__ import annotations

from k2.model.instrument import Instrument
from k2.settings import Settings
from k2.venues.base import ControlEvent
from k2.venues.feed import BackfillJob, EventOutcome, RestRequest, Subscription, dumps, q

EXCHANGE = "kraken"
PAGE = 1000


class KrakenFeed:
    exchange = EXCHANGE
    ws_ping_s = None
    rotate_s = None
    per_stream_heartbeats = False
    sequenced = False

    def __init__(self, settings: Settings) -> None:
        f = settings.feeds
        self._url = settings.ws_url(EXCHANGE)
        self._rest = settings.rest_url(EXCHANGE)
        self.stale_s = f.kraken_stale_s
        self.msgs_per_s = f.kraken_msgs_per_s
        self.app_ping_s = f.kraken_ping_s
        self._req = 0

    def url(self) -> str:
        return self._url

    def _req_id(self) -> int:
        self._req += 1
        return self._req

    def subscriptions(self, instruments: list[Instrument]) -> list[Subscription]:
        symbols = [i.native_symbol for i in instruments]
        params = {"channel": "trade", "symbol": symbols, "snapshot": True}
        msg = {"method": "subscribe", "params": params, "req_id": self._req_id()}
        return [Subscription(dumps(msg), {f"subscribe:{s}" for s in symbols})]

    def resubscribe(self, inst: Instrument) -> list[Subscription]:
        s = inst.native_symbol
        unsub = {"method": "unsubscribe", "params": {"channel": "trade", "symbol": [s]}, "req_id": self._req_id()}
        sub = {"method": "subscribe", "params": {"channel": "trade", "symbol": [s], "snapshot": True}, "req_id": self._req_id()}
        return [Subscription(dumps(unsub), {f"unsubscribe:{s}"}), Subscription(dumps(sub), {f"subscribe:{s}"})]

    def app_ping(self, n: int) -> str | None:
        return dumps({"method": "ping", "req_id": 1_000_000 + n})

    def on_event(self, ev: ControlEvent) -> EventOutcome:
        out = EventOutcome()
        d = ev.detail
        if ev.kind == "ack":
            res = d.get("result") or {}
            sym = res.get("symbol") if isinstance(res, dict) else None
            if isinstance(sym, str):
                out.acked.add(f"{d.get('method')}:{sym}")
        elif ev.kind == "subscribe_error":
            res = d.get("result") if isinstance(d.get("result"), dict) else {}
            sym = d.get("symbol") or res.get("symbol")
            msg = str(d.get("error"))
            if isinstance(sym, str):
                out.failed[f"{d.get('method')}:{sym}"] = msg
            else:
                out.failed["*"] = msg
        elif ev.kind == "status":
            system = d.get("system")
            if system not in (None, "online"):
                out.error = f"exchange status {system}"
                if system == "maintenance":
                    out.shutdown = "status maintenance"
        elif ev.kind == "error":
            out.error = str(d.get("error"))
        return out

    def head_request(self, inst: Instrument) -> RestRequest | None:
        return None  # subscribing sends the latest trades (snapshot / last_match)

    def sequence_of(self, frame: str | bytes) -> int | None:
        return None

    def pager(self, job: BackfillJob, max_trades: int) -> "KrakenPager":
        return KrakenPager(self._rest, job, max_trades)


class KrakenPager:
    def __init__(self, rest: str, job: BackfillJob, max_trades: int) -> None:
        self.rest, self.job, self.max_trades = rest, job, max_trades
        # ns cursor 1 ms before the last good trade (0 when unknown: the oldest trades Kraken still has)
        self.since: str | None = str(max(job.ts_before_us - 1000, 0) * 1000)
        self.fetched = 0
        self.top = -1
        self.hit_limit = False

    def next_request(self) -> RestRequest | None:
        if self.since is None:
            return None
        pair = q(self.job.inst.rest_symbol)
        return RestRequest(f"{self.rest}/0/public/Trades?pair={pair}&since={self.since}&count={PAGE}")

    def page_done(self, ids: list[int], items: int, cursor: str | None) -> None:
        # ``last`` is the time of the page's last trade and ``since`` is exclusive: trades sharing that
        # nanosecond but cut off by the page end would be skipped, so the next page starts 1 ns earlier and
        # the overlap is deduplicated (by the store, and here: a page with nothing new ends the walk)
        self.fetched += items
        top = max(ids) if ids else None
        if top is None or top <= self.top or items < PAGE or not (cursor or "").isdigit():
            self.since = None
        elif self.job.last is not None and top >= self.job.last:
            self.since = None
        elif self.fetched >= self.max_trades:
            self.hit_limit, self.since = True, None
        else:
            self.top = top
            self.since = str(int(cursor) - 1)

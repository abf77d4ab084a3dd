"""Binance spot live feed: combined ``@trade`` streams (exchanges.md §1).

* Endpoint ``<ws_url>/stream?timeUnit=MICROSECOND``: trade times in µs, the same unit as the other venues.
* Subscriptions: ``SUBSCRIBE`` with up to 200 streams per message (1024 per connection), each acknowledged by
  ``{"result": null, "id": n}``. A subscription to a symbol Binance does not know is acknowledged too and then
  silent: the per-stream watchdog catches it.
* Liveness: the server pings every 20 s and the WebSocket library answers; we send no pings of our own (they
  would count against the limit below) and reconnect after ``binance_stale_s`` without any frame.
* Limits: 5 incoming messages/s per connection counting pings, pongs and JSON control frames. Our own messages
  go through a token bucket of ``binance_msgs_per_s`` (at most 3) with a burst of 1: at most 4 in any one-second
  window, plus the pong to the server's ping, makes 5.
* A connection lives 24 h at most: rotated after ``binance_rotate_s`` with an overlapping new connection.
* ``serverShutdown``: reconnect at once (also overlapping).
* Backfill: ``GET /api/v3/historicalTrades?symbol=&fromId=&limit=1000`` (weight 25), µs times through the
  ``X-MBX-TIME-UNIT`` header, ascending from ``fromId``.
"""

from __future__ import annotations

from k2.model.instrument import Instrument
from k2.settings import Settings
from k2.venues.base import ControlEvent
from k2.venues.feed import BackfillJob, EventOutcome, RestRequest, Subscription, chunks, dumps, q

EXCHANGE = "binance"
STREAMS_PER_MESSAGE = 200
PAGE = 1000
WEIGHT = 25


class BinanceFeed:
    exchange = EXCHANGE
    app_ping_s = None
    per_stream_heartbeats = False
    sequenced = False

    def __init__(self, settings: Settings) -> None:
        f = settings.feeds
        self._url = settings.ws_url(EXCHANGE)
        self._rest = settings.rest_url(EXCHANGE)
        self.stale_s = f.binance_stale_s
        self.msgs_per_s = f.binance_msgs_per_s
        self.ws_ping_s = None
        self.rotate_s = f.binance_rotate_s
        self._next_id = 0

    def url(self) -> str:
        return f"{self._url}/stream?timeUnit=MICROSECOND"

    def _id(self) -> int:
        self._next_id += 1
        return self._next_id

    def subscriptions(self, instruments: list[Instrument]) -> list[Subscription]:
        streams = [f"{i.native_symbol.lower()}@trade" for i in instruments]
        subs = []
        for part in chunks(streams, STREAMS_PER_MESSAGE):
            n = self._id()
            subs.append(Subscription(dumps({"method": "SUBSCRIBE", "params": part, "id": n}), {f"id:{n}"}))
        return subs

    def resubscribe(self, inst: Instrument) -> list[Subscription]:
        stream = f"{inst.native_symbol.lower()}@trade"
        a, b = self._id(), self._id()
        return [
            Subscription(dumps({"method": "UNSUBSCRIBE", "params": [stream], "id": a}), {f"id:{a}"}),
            Subscription(dumps({"method": "SUBSCRIBE", "params": [stream], "id": b}), {f"id:{b}"}),
        ]

    def app_ping(self, n: int) -> str | None:
        return None

    def on_event(self, ev: ControlEvent) -> EventOutcome:
        out = EventOutcome()
        d = ev.detail
        if ev.kind == "ack":
            if d.get("result") is None:
                out.acked.add(f"id:{d.get('id')}")
        elif ev.kind == "error":
            msg = f"code {d.get('code')}: {d.get('msg')}"
            if d.get("id") is not None:
                out.failed[f"id:{d.get('id')}"] = msg
            else:
                out.error = msg
        elif ev.kind == "shutdown":
            out.shutdown = "serverShutdown"
        return out

    def head_request(self, inst: Instrument) -> RestRequest | None:
        url = f"{self._rest}/api/v3/trades?symbol={q(inst.rest_symbol)}&limit=1"
        return RestRequest(url, {"X-MBX-TIME-UNIT": "MICROSECOND"}, WEIGHT)

    def sequence_of(self, frame: str | bytes) -> int | None:
        return None

    def pager(self, job: BackfillJob, max_trades: int) -> "BinancePager":
        return BinancePager(self._rest, job, max_trades)


class BinancePager:
    """``fromId`` = first missing id, then the id after the last one returned, until the gap's end is reached
    (or, for an open-ended job, until a short page says the present is reached)."""

    def __init__(self, rest: str, job: BackfillJob, max_trades: int) -> None:
        self.rest, self.job, self.max_trades = rest, job, max_trades
        self.from_id: int | None = job.first
        self.fetched = 0
        self.hit_limit = False

    def next_request(self) -> RestRequest | None:
        if self.from_id is None:
            return None
        url = (
            f"{self.rest}/api/v3/historicalTrades?symbol={q(self.job.inst.rest_symbol)}"
            f"&fromId={self.from_id}&limit={PAGE}"
        )
        return RestRequest(url, {"X-MBX-TIME-UNIT": "MICROSECOND"}, WEIGHT)

    def page_done(self, ids: list[int], items: int, cursor: str | None) -> None:
        self.fetched += items
        top = max(ids) if ids else None
        if top is None or items < PAGE or (self.job.last is not None and top >= self.job.last):
            self.from_id = None
        elif self.fetched >= self.max_trades:
            self.hit_limit, self.from_id = True, None
        else:
            self.from_id = top + 1

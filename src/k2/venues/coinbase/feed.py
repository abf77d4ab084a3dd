"""Coinbase live feed (exchanges.md §3): the Exchange ``matches`` feed by default, Advanced Trade
``market_trades`` with ``coinbase_feed = "advanced"``.

Exchange feed: one subscribe carrying ``matches`` and ``heartbeat`` for every product, answered by one
``subscriptions`` message; an invalid product rejects the whole request. Each product's heartbeat (every
second) carries ``last_trade_id``, which reveals trades lost without a trace, and is the per-stream liveness
signal. ``sequence`` is not used for gaps: it jumps by more than one between matches (§3.4).

Advanced Trade: one subscribe per channel (``market_trades``, and ``heartbeats`` so quiet channels are not
closed after 60-90 s); every message carries a per-connection ``sequence_num``: a jump means dropped messages,
which triggers a REST reconcile of every product.

Both must subscribe within 5 s of connecting. Backfill for both uses the Exchange REST API (same trade ids):
``GET /products/{id}/trades?after=`` returns trades older than the cursor, newest first, so a job walks back
from just past the gap's end (or from the newest trade) to its first id.
"""

from __future__ import annotations

import re

from k2.model.instrument import Instrument
from k2.settings import Settings
from k2.venues.base import ControlEvent
from k2.venues.feed import BackfillJob, EventOutcome, RestRequest, Subscription, dumps, q

EXCHANGE = "coinbase"
PAGE = 1000
_SEQ = re.compile(rb'"sequence_num":(\d+)')


class CoinbaseFeed:
    exchange = EXCHANGE
    ws_ping_s = None
    app_ping_s = None
    rotate_s = None

    def __init__(self, settings: Settings) -> None:
        f = settings.feeds
        self.advanced = settings.coinbase_feed == "advanced"
        self._url = settings.ws_url(EXCHANGE)
        self._rest = settings.rest_url(EXCHANGE)
        self.stale_s = f.coinbase_stale_s
        self.msgs_per_s = f.coinbase_msgs_per_s
        self.per_stream_heartbeats = not self.advanced
        self.sequenced = self.advanced
        self._products: list[str] = []

    def url(self) -> str:
        return self._url

    def subscriptions(self, instruments: list[Instrument]) -> list[Subscription]:
        self._products = [i.native_symbol for i in instruments]
        return self._subscribe(self._products)

    def _subscribe(self, products: list[str]) -> list[Subscription]:
        if self.advanced:
            return [
                Subscription(
                    dumps({"type": "subscribe", "product_ids": products, "channel": "market_trades"}),
                    {f"market_trades:{p}" for p in products},
                ),
                Subscription(dumps({"type": "subscribe", "channel": "heartbeats"}), {"heartbeats"}),
            ]
        channels = [{"name": "matches", "product_ids": products}, {"name": "heartbeat", "product_ids": products}]
        expect = {f"matches:{p}" for p in products} | {f"heartbeat:{p}" for p in products}
        return [Subscription(dumps({"type": "subscribe", "channels": channels}), expect)]

    def resubscribe(self, inst: Instrument) -> list[Subscription]:
        p = inst.native_symbol
        if self.advanced:
            unsub = {"type": "unsubscribe", "product_ids": [p], "channel": "market_trades"}
            # the subscriptions answer lists what is still subscribed: nothing to wait for on the unsubscribe
            return [Subscription(dumps(unsub), set()), self._subscribe([p])[0]]
        unsub = {"type": "unsubscribe", "channels": [{"name": "matches", "product_ids": [p]}]}
        sub = {"type": "subscribe", "channels": [{"name": "matches", "product_ids": [p]}]}
        return [Subscription(dumps(unsub), set()), Subscription(dumps(sub), {f"matches:{p}"})]

    def app_ping(self, n: int) -> str | None:
        return None

    def on_event(self, ev: ControlEvent) -> EventOutcome:
        out = EventOutcome()
        d = ev.detail
        if ev.kind == "ack":
            for channel, products in _subscribed(d.get("channels")):
                out.acked.update(f"{channel}:{p}" for p in products)
                if channel == "heartbeats":
                    out.acked.add("heartbeats")
        elif ev.kind == "heartbeat":
            if d.get("product_id") is not None:
                out.heartbeat_native = d.get("product_id")
                lt = d.get("last_trade_id")
                if isinstance(lt, int) and not isinstance(lt, bool):
                    out.last_trade_id = lt
        elif ev.kind == "error":
            msg = f"{d.get('message')}: {d.get('reason')}"
            if "subscribe" in str(d.get("message", "")).lower():
                out.failed["*"] = msg  # an invalid product rejects the whole subscribe request
            else:
                out.error = msg
        return out

    def head_request(self, inst: Instrument) -> RestRequest | None:
        return None  # subscribing sends the latest trades (snapshot / last_match)

    def sequence_of(self, frame: str | bytes) -> int | None:
        if not self.advanced:
            return None
        head = frame[:200].encode() if isinstance(frame, str) else frame[:200]
        m = _SEQ.search(head)
        return int(m.group(1)) if m else None

    def pager(self, job: BackfillJob, max_trades: int) -> "CoinbasePager":
        return CoinbasePager(self._rest, job, max_trades)


def _subscribed(channels) -> list[tuple[str, list[str]]]:
    """(channel, products) pairs from either feed's subscriptions message."""
    out: list[tuple[str, list[str]]] = []
    if not isinstance(channels, list):
        return out
    for item in channels:
        if not isinstance(item, dict):
            continue
        if "name" in item:  # Exchange: {"name": "matches", "product_ids": [...]}
            out.append((str(item["name"]), [p for p in item.get("product_ids") or [] if isinstance(p, str)]))
        elif isinstance(item.get("subscriptions"), dict):  # Advanced: {"subscriptions": {"market_trades": [...]}}
            for channel, products in item["subscriptions"].items():
                out.append((str(channel), [p for p in products or [] if isinstance(p, str)]))
    return out


class CoinbasePager:
    def __init__(self, rest: str, job: BackfillJob, max_trades: int) -> None:
        self.rest, self.job, self.max_trades = rest, job, max_trades
        self.after: int | None = job.last + 1 if job.last is not None else None
        self.done = False
        self.fetched = 0
        self.hit_limit = False

    def next_request(self) -> RestRequest | None:
        if self.done:
            return None
        url = f"{self.rest}/products/{q(self.job.inst.rest_symbol)}/trades?limit={PAGE}"
        if self.after is not None:
            url += f"&after={self.after}"
        return RestRequest(url)

    def page_done(self, ids: list[int], items: int, cursor: str | None) -> None:
        self.fetched += items
        low = min(ids) if ids else None
        if low is None or low <= self.job.first:
            self.done = True
        elif self.fetched >= self.max_trades:
            self.hit_limit, self.done = True, True
        else:
            self.after = low

"""Simulated Coinbase: the Exchange feed at ``/``, Advanced Trade at ``/advanced``, and Exchange REST
``/products/{product_id}/trades`` (exchanges.md §3).

Both feeds share one per-product trade id space. Exchange ``match`` frames come from
``k2.capture.synth.coinbase_match`` (``side`` = maker side), Advanced ``market_trades`` from
``k2.capture.synth.coinbase_market_trades``; Advanced updates are batched every ``advanced_batch_s`` per
connection, newest trade first (the order inside a batch is undocumented; clients sort by trade_id).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from k2.capture.synth import coinbase_market_trades, coinbase_match
from k2.sim.conn import Conn
from k2.sim.fmt import go_time, now_us, pad, rfc3339_nano, rfc3339_trimmed, rfc3339_us
from k2.sim.market import Generated, SimTrade, SymbolBook, to_synth
from k2.sim.venue import Venue, json_response

_EXCHANGE_CHANNELS = ("matches", "heartbeat")
_ADVANCED_CHANNELS = ("market_trades", "heartbeats")
#: Close code and reason when no subscribe arrives in time.
DEADLINE_CLOSE = (1008, "subscribe timeout")


def _dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


class _CoinbaseConn(Conn):
    """What both Coinbase feeds share: the subscribe deadline."""

    venue: CoinbaseVenue

    def __init__(self, venue: CoinbaseVenue, request: web.Request, ws: web.WebSocketResponse) -> None:
        super().__init__(venue, request, ws)
        self.subscribed = False

    def on_open(self) -> None:
        self.spawn(self._deadline())

    async def _deadline(self) -> None:
        await asyncio.sleep(self.venue.config.subscribe_deadline_s)
        if not self.subscribed:
            self.venue.stats["closed_subscribe_deadline"] += 1
            self.close(*DEADLINE_CLOSE)

    def error(self, message: str, reason: str | None = None) -> None:
        obj = {"type": "error", "message": message}
        if reason is not None:
            obj["reason"] = reason
        self.send(_dumps(obj))

    def parse(self, text: str) -> dict[str, Any] | None:
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        if not isinstance(msg, dict):
            self.error("Malformed JSON")
            return None
        if msg.get("type") not in ("subscribe", "unsubscribe"):
            self.error("Failed to subscribe", "Type has to be either subscribe or unsubscribe")
            return None
        return msg

    def check_products(self, products: Any) -> str:
        """Why a product list is not acceptable ('' when it is)."""
        if not isinstance(products, list) or not products:
            return "product_ids must be a non-empty array"
        for p in products:
            if not isinstance(p, str) or p not in self.venue.market.by_native:
                return f"{p} is not a valid product"
        return ""


class ExchangeConn(_CoinbaseConn):
    """An Exchange-feed connection (path ``/``): ``matches`` and ``heartbeat`` channels."""

    def __init__(self, venue: CoinbaseVenue, request: web.Request, ws: web.WebSocketResponse) -> None:
        super().__init__(venue, request, ws)
        self.channels: dict[str, dict[str, None]] = {name: {} for name in _EXCHANGE_CHANNELS}

    def on_open(self) -> None:
        super().on_open()
        self.spawn(self._heartbeats())

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.venue.config.heartbeat_interval_s)
            stamp = rfc3339_trimmed(now_us())
            for product in list(self.channels["heartbeat"]):
                book = self.venue.market.by_native[product]
                self.send(_dumps({"type": "heartbeat", "sequence": self.venue.current_sequence(book),
                                  "last_trade_id": book.last_id, "product_id": product, "time": stamp}))

    def subscriptions(self) -> str:
        channels = [{"name": n, "product_ids": list(p)} for n, p in self.channels.items() if p]
        return _dumps({"type": "subscriptions", "channels": channels})

    def on_text(self, text: str) -> None:
        msg = self.parse(text)
        if msg is None:
            return
        wanted, reason = self._requested(msg)
        if reason:
            self.error("Failed to subscribe", reason)
            self.send(self.subscriptions())
            return
        subscribe = msg["type"] == "subscribe"
        new: list[str] = []
        for name, products in wanted:
            current = self.channels[name]
            for p in products:
                if subscribe and p not in current:
                    current[p] = None
                    if name == "matches":
                        new.append(p)
                elif not subscribe:
                    current.pop(p, None)
        self.subscribed = self.subscribed or subscribe
        self.send(self.subscriptions())
        for product in new:
            self._last_match(product)

    def _requested(self, msg: dict[str, Any]) -> tuple[list[tuple[str, list[str]]], str]:
        channels, top = msg.get("channels"), msg.get("product_ids")
        if not isinstance(channels, list) or not channels:
            return [], "channels must be a non-empty array"
        out: list[tuple[str, list[str]]] = []
        for ch in channels:
            if isinstance(ch, str):
                name, products = ch, top
            elif isinstance(ch, dict):
                name, products = ch.get("name"), ch.get("product_ids", top)
            else:
                return [], "channels must be names or objects"
            if name not in _EXCHANGE_CHANNELS:
                return [], f"{name} is not a valid channel"
            why = self.check_products(products)
            if why:
                return [], why
            out.append((name, products))
        return out, ""

    def _last_match(self, product: str) -> None:
        book = self.venue.market.by_native[product]
        latest = book.latest(1)
        if latest:
            frame = coinbase_match(to_synth(latest[0], book.inst), self.venue.sequence(book, latest[0].trade_id))
            self.send(frame.replace('{"type":"match"', '{"type":"last_match"', 1))


class AdvancedConn(_CoinbaseConn):
    """An Advanced Trade connection (path ``/advanced``): ``market_trades`` and ``heartbeats`` channels."""

    def __init__(self, venue: CoinbaseVenue, request: web.Request, ws: web.WebSocketResponse) -> None:
        super().__init__(venue, request, ws)
        self.products: dict[str, None] = {}
        self.heartbeats = False
        self.sequence_num = 0
        self.heartbeat_counter = 0
        self.buffer: list[SimTrade] = []

    def on_open(self) -> None:
        super().on_open()
        self.spawn(self._flush_loop())
        self.spawn(self._heartbeat_loop())

    def envelope(self, channel: str, events: list[dict[str, Any]]) -> str:
        return _dumps({"channel": channel, "client_id": "", "timestamp": rfc3339_nano(time.time_ns()),
                       "sequence_num": self.sequence_num, "events": events})

    def send_numbered(self, frame: str, trades: bool = False) -> bool:
        """Send a frame built with the current ``sequence_num``; the number advances only when it is sent."""
        ok = self.send_trade(frame) if trades else self.send(frame)
        if ok:
            self.sequence_num += 1
        return ok

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.venue.config.advanced_batch_s)
            self.flush()

    def flush(self) -> None:
        """Send the buffered trades as one ``update`` (newest first)."""
        if not self.buffer:
            return
        trades, self.buffer = self.buffer, []
        insts = self.venue.market.by_native
        synth = [to_synth(t, insts[t.native_symbol].inst) for t in reversed(trades)]
        self.send_numbered(coinbase_market_trades(synth, self.sequence_num, now_us()), trades=True)

    async def _heartbeat_loop(self) -> None:
        while True:
            await asyncio.sleep(self.venue.config.heartbeat_interval_s)
            if self.heartbeats and not self.stalled:
                self.heartbeat_counter += 1
                event = {"current_time": go_time(time.time_ns(), time.monotonic_ns() - self.venue.started_ns),
                         "heartbeat_counter": str(self.heartbeat_counter)}
                self.send_numbered(self.envelope("heartbeats", [event]))

    def subscriptions(self) -> str:
        subs: dict[str, list[str]] = {}
        if self.products:
            subs["market_trades"] = list(self.products)
        if self.heartbeats:
            subs["heartbeats"] = ["heartbeats"]
        return self.envelope("subscriptions", [{"subscriptions": subs}])

    def on_text(self, text: str) -> None:
        msg = self.parse(text)
        if msg is None:
            return
        subscribe = msg["type"] == "subscribe"
        channel = msg.get("channel")
        if channel not in _ADVANCED_CHANNELS:
            self.error("Failed to subscribe", f"{channel} is not a valid channel" if channel else "channel is required")
            return
        new: list[str] = []
        if channel == "heartbeats":
            self.heartbeats = subscribe
        else:
            products = msg.get("product_ids")
            why = self.check_products(products)
            if why:
                self.error("Failed to subscribe", why)
                return
            for p in products:
                if subscribe and p not in self.products:
                    self.products[p] = None
                    new.append(p)
                elif not subscribe:
                    self.products.pop(p, None)
        self.subscribed = self.subscribed or subscribe
        self.send_numbered(self.subscriptions())
        if new:
            self._snapshot(new)

    def _snapshot(self, products: list[str]) -> None:
        size = self.venue.config.snapshot_size
        synth = []
        for product in products:
            book = self.venue.market.by_native[product]
            synth.extend(to_synth(t, book.inst) for t in reversed(book.latest(size)))
        self.send_numbered(coinbase_market_trades(synth, self.sequence_num, now_us(), kind="snapshot"))


class CoinbaseVenue(Venue):
    """Coinbase on one port: WebSockets ``/`` (Exchange) and ``/advanced``; REST ``/products/{id}/trades``."""

    name = "coinbase"

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/", self.ws_handler(lambda request, ws: ExchangeConn(self, request, ws)))
        app.router.add_get("/advanced", self.ws_handler(lambda request, ws: AdvancedConn(self, request, ws)))
        app.router.add_get("/products/{product_id}/trades", self.rest(self._trades))

    @staticmethod
    def sequence(book: SymbolBook, trade_id: int) -> int:
        """The Exchange-feed ``sequence`` of a match: per product, +2 per trade (the full feed's other events in between)."""
        return book.first_id * 50 + 2 * (trade_id - book.first_id)

    def current_sequence(self, book: SymbolBook) -> int:
        """The product's sequence now (what its heartbeat carries)."""
        return self.sequence(book, book.next_id) - 1

    def dispatch(self, trades: list[Generated]) -> None:
        exchange = self.live_conns(ExchangeConn)
        advanced = [c for c in self.live_conns(AdvancedConn) if not c.stalled]
        for g in trades:
            native = g.inst.native_symbol
            targets = [c for c in exchange if native in c.channels["matches"]]
            if targets:
                book = self.market.by_native[native]
                frame = coinbase_match(to_synth(g.trade, g.inst), self.sequence(book, g.trade.trade_id))
                for c in targets:
                    c.send_trade(frame)
            for c in advanced:
                if native in c.products:
                    c.buffer.append(g.trade)

    def malformed_frame(self, conn: Conn, kind: int) -> str | bytes:
        if isinstance(conn, AdvancedConn):
            trade, inst = self.sample_trade(next(iter(conn.products), None))
            frame = coinbase_market_trades([to_synth(trade, inst)], conn.sequence_num, now_us())
        else:
            assert isinstance(conn, ExchangeConn)
            trade, inst = self.sample_trade(next(iter(conn.channels["matches"]), None))
            book = self.market.by_native[inst.native_symbol]
            frame = coinbase_match(to_synth(trade, inst), self.sequence(book, trade.trade_id))
        if kind == 0:
            return frame[: len(frame) // 2]
        if kind == 1:
            return frame.replace(f'"price":"{trade.price}"', f'"price":{{"value":"{trade.price}"}}')
        if kind == 2:
            return frame.replace(f'"size":"{trade.qty}"', f'"size":"-{trade.qty}"')
        return frame.encode().replace(f'"product_id":"{inst.native_symbol}"'.encode(),
                                      b'"product_id":"\xed\xa0\x80' + inst.native_symbol.encode() + b'"')

    # --- REST ---

    async def _trades(self, request: web.Request) -> web.Response:
        book = self.market.by_native.get(request.match_info["product_id"])
        if book is None:
            return json_response({"message": "NotFound"}, status=404)
        q = request.query
        limit, after, before = (_int(q.get(k)) for k in ("limit", "after", "before"))
        for name, value in (("limit", limit), ("after", after), ("before", before)):
            if value is False:
                return json_response({"message": f"Invalid {name}"}, status=400)
        n = min(max(limit if isinstance(limit, int) else 100, 1), 1000)
        if before is not None and after is None:
            trades = book.id_range(above=before, below=None, n=n, oldest=True)
        else:
            trades = book.id_range(above=before, below=after, n=n, oldest=False)
        body = [
            {"time": rfc3339_us(t.ts_us), "trade_id": t.trade_id, "price": pad(t.price, 8), "size": pad(t.qty, 8),
             "side": "buy" if t.side == "sell" else "sell"}
            for t in reversed(trades)
        ]
        headers = {"CB-BEFORE": str(trades[-1].trade_id), "CB-AFTER": str(trades[0].trade_id)} if trades else None
        return json_response(body, headers=headers)

    def rate_limited(self, retry_after_s: int) -> web.Response:
        return json_response({"message": "Public rate limit exceeded"}, status=429)

    def rest_error(self, status: int) -> web.Response:
        return json_response({"message": "Internal server error" if status >= 500 else "Bad request"}, status=status)


def _int(text: str | None) -> int | None | bool:
    """An integer query parameter: None when absent, False when malformed."""
    if text is None:
        return None
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 19 else False

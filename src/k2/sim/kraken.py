"""Simulated Kraken spot: WebSocket v2 at ``/v2`` and REST ``/0/public/Trades`` (exchanges.md §2).

Trade frames are ``k2.capture.synth.kraken_frame`` (prices and quantities as JSON numbers written from the
exact decimal text), one symbol per message, the trades of one symbol generated in one tick batched together.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec
from aiohttp import web

from k2.capture.synth import kraken_frame
from k2.sim.conn import Conn
from k2.sim.fmt import now_us, pad, rfc3339_us, seconds_literal
from k2.sim.market import Generated, SymbolBook, profile, to_synth
from k2.sim.venue import Venue, json_response

API_VERSION = "2.0.10"
#: Kraken's legacy asset codes (REST result keys) and their X/Z-prefixed forms.
_ALT = {"BTC": "XBT", "DOGE": "XDG"}
_LEGACY_BASE = {"BTC": "XXBT", "ETH": "XETH", "XRP": "XXRP", "LTC": "XLTC", "XLM": "XXLM", "ETC": "XETC", "XMR": "XXMR", "ZEC": "XZEC"}
_LEGACY_QUOTE = {"USD": "ZUSD", "EUR": "ZEUR", "GBP": "ZGBP", "JPY": "ZJPY", "CAD": "ZCAD"}


def kraken_pair_name(base: str, quote: str) -> str:
    """Kraken's canonical REST pair name: XXBTZUSD, XETHZUSD, XDGUSD, SOLUSD, XBTUSDT..."""
    if base in _LEGACY_BASE and quote in _LEGACY_QUOTE:
        return _LEGACY_BASE[base] + _LEGACY_QUOTE[quote]
    return _ALT.get(base, base) + _ALT.get(quote, quote)


def _stamp(us: int) -> str:
    return rfc3339_us(us)


class KrakenConn(Conn):
    """A ``/v2`` connection: trade subscriptions, pings, heartbeats."""

    venue: KrakenVenue

    def __init__(self, venue: KrakenVenue, request: web.Request, ws: web.WebSocketResponse) -> None:
        super().__init__(venue, request, ws)
        self.connection_id = random.getrandbits(63) | (1 << 63)  # above 2**63, as Kraken's are
        self.symbols: dict[str, None] = {}

    def on_open(self) -> None:
        self.send(self.venue.status_frame(self.connection_id, "online"))
        self.spawn(self._heartbeats())

    async def _heartbeats(self) -> None:
        interval = self.venue.config.heartbeat_interval_s
        while True:
            await asyncio.sleep(interval / 4)
            if time.monotonic() - self.last_sent >= interval:
                self.send('{"channel":"heartbeat"}')

    def reply(self, obj: dict[str, Any]) -> None:
        self.send(json.dumps(obj, separators=(",", ":")))

    def on_text(self, text: str) -> None:
        t_in = now_us()
        try:
            msg = json.loads(text)
        except ValueError:
            msg = None
        if not isinstance(msg, dict) or not isinstance(msg.get("method"), str):
            self.reply({"error": "Malformed request", "success": False, "time_in": _stamp(t_in), "time_out": _stamp(now_us())})
            return
        method, rid = msg["method"], msg.get("req_id")
        if method == "ping":
            self.reply(_with_req({"method": "pong"}, rid) | {"time_in": _stamp(t_in), "time_out": _stamp(now_us())})
        elif method in ("subscribe", "unsubscribe"):
            self._subscription(method, msg.get("params"), rid, t_in)
        else:
            self.reply(_with_req({"error": f"Method not found {method}", "method": method, "success": False,
                                  "time_in": _stamp(t_in), "time_out": _stamp(now_us())}, rid))

    def _fail(self, method: str, rid: Any, t_in: int, error: str, symbol: str | None = None) -> None:
        out: dict[str, Any] = {"error": error, "method": method}
        out = _with_req(out, rid) | {"success": False}
        if symbol is not None:
            out["symbol"] = symbol
        self.reply(out | {"time_in": _stamp(t_in), "time_out": _stamp(now_us())})

    def _ack(self, method: str, rid: Any, t_in: int, result: dict[str, Any]) -> None:
        out = {"method": method, "result": result, "success": True, "time_in": _stamp(t_in), "time_out": _stamp(now_us())}
        self.reply(_with_req(out, rid))

    def _subscription(self, method: str, params: Any, rid: Any, t_in: int) -> None:
        if not isinstance(params, dict) or not isinstance(params.get("channel"), str):
            self._fail(method, rid, t_in, "Invalid params: channel is required")
            return
        channel = params["channel"]
        if channel == "heartbeat":
            self._ack(method, rid, t_in, {"channel": "heartbeat"})
            return
        if channel != "trade":
            self._fail(method, rid, t_in, f"Channel {channel} not supported")
            return
        symbols = params.get("symbol")
        snapshot = params.get("snapshot", False)
        if not isinstance(symbols, list) or not symbols or not all(isinstance(s, str) for s in symbols):
            self._fail(method, rid, t_in, "Invalid params: symbol must be a non-empty array of strings")
            return
        if not isinstance(snapshot, bool):
            self._fail(method, rid, t_in, "Invalid params: snapshot must be a boolean")
            return
        for symbol in symbols:
            if method == "subscribe":
                self._subscribe_one(symbol, snapshot, rid, t_in)
            else:
                self._unsubscribe_one(symbol, rid, t_in)

    def _subscribe_one(self, symbol: str, snapshot: bool, rid: Any, t_in: int) -> None:
        book = self.venue.market.by_native.get(symbol)
        if book is None:
            self._fail("subscribe", rid, t_in, f"Currency pair not supported {symbol}", symbol)
            return
        if symbol in self.symbols:
            self._fail("subscribe", rid, t_in, "Already subscribed", symbol)
            return
        self.symbols[symbol] = None
        self._ack("subscribe", rid, t_in, {"channel": "trade", "snapshot": snapshot, "symbol": symbol})
        if snapshot:
            trades = [to_synth(t, book.inst) for t in book.latest(self.venue.config.snapshot_size)]
            self.send(kraken_frame(trades, kind="snapshot"))

    def _unsubscribe_one(self, symbol: str, rid: Any, t_in: int) -> None:
        if symbol not in self.symbols:
            self._fail("unsubscribe", rid, t_in, "Subscription Not Found", symbol)
            return
        del self.symbols[symbol]
        self._ack("unsubscribe", rid, t_in, {"channel": "trade", "symbol": symbol})


def _with_req(obj: dict[str, Any], rid: Any) -> dict[str, Any]:
    if rid is not None:
        obj["req_id"] = rid
    return obj


class KrakenVenue(Venue):
    """Kraken spot on one port: WebSocket ``/v2``, REST ``/0/public/Trades``."""

    name = "kraken"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pairs: dict[str, tuple[str, SymbolBook]] = {}
        for book in self.market.books.values():
            inst = book.inst
            key = kraken_pair_name(inst.base, inst.quote)
            for alias in (inst.rest_symbol, key, inst.base + inst.quote, _ALT.get(inst.base, inst.base) + inst.quote):
                self._pairs.setdefault(alias, (key, book))

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v2", self.ws_handler(lambda request, ws: KrakenConn(self, request, ws)))
        app.router.add_get("/0/public/Trades", self.rest(self._trades))

    def status_frame(self, connection_id: int, system: str) -> str:
        data = {"api_version": "v2", "connection_id": connection_id, "system": system, "version": API_VERSION}
        return json.dumps({"channel": "status", "type": "update", "data": [data]}, separators=(",", ":"))

    def dispatch(self, trades: list[Generated]) -> None:
        conns = self.live_conns(KrakenConn)
        if not conns:
            return
        groups: dict[str, list[Generated]] = {}
        for g in trades:
            groups.setdefault(g.inst.native_symbol, []).append(g)
        for native, items in groups.items():
            targets = [c for c in conns if native in c.symbols]
            if targets:
                frame = kraken_frame([to_synth(g.trade, g.inst) for g in items])
                for c in targets:
                    c.send_trade(frame)

    def shutdown_notice(self, conn: Conn) -> None:
        assert isinstance(conn, KrakenConn)
        conn.send(self.status_frame(conn.connection_id, "maintenance"))

    def malformed_frame(self, conn: Conn, kind: int) -> str | bytes:
        assert isinstance(conn, KrakenConn)
        trade, inst = self.sample_trade(next(iter(conn.symbols), None))
        frame = kraken_frame([to_synth(trade, inst)])
        if kind == 0:
            return frame[: len(frame) // 2]
        if kind == 1:
            return frame.replace(f'"price":{trade.price},', f'"price":{{"value":{trade.price}}},')
        if kind == 2:
            return frame.replace(f'"qty":{trade.qty},', f'"qty":-{trade.qty},')
        return frame.encode().replace(f'"symbol":"{inst.native_symbol}"'.encode(), b'"symbol":"\xc3\x28' + inst.native_symbol.encode() + b'"')

    # --- REST ---

    async def _trades(self, request: web.Request) -> web.Response:
        q = request.query
        found = self._pairs.get(q.get("pair", ""))
        if found is None:
            return json_response({"error": ["EQuery:Unknown asset pair"]})
        key, book = found
        count = _count_param(q.get("count"))
        if count is None:
            return json_response({"error": ["EGeneral:Invalid arguments:count"]})
        since = q.get("since")
        since_ns = _since_ns(since) if since is not None else None
        if since is not None and since_ns is None:
            return json_response({"error": ["EGeneral:Invalid arguments:since"]})
        trades = book.latest(count) if since_ns is None else book.after_time(since_ns // 1000, count)
        pdec = profile(book.inst)[1]
        rows = [
            [pad(t.price, pdec), pad(t.qty, 8), msgspec.Raw(seconds_literal(t.ts_us).encode()),
             "s" if t.side == "sell" else "b", "m" if t.trade_id % 3 == 0 else "l", "", t.trade_id]
            for t in trades
        ]
        last = str(trades[-1].ts_us * 1000) if trades else str(since_ns if since_ns is not None else 0)
        return json_response({"error": [], "result": {key: rows, "last": last}})

    def rate_limited(self, retry_after_s: int) -> web.Response:
        return json_response({"error": ["EGeneral:Too many requests"]})

    def rest_error(self, status: int) -> web.Response:
        error = "EService:Unavailable" if status >= 500 else "EGeneral:Invalid arguments"
        return json_response({"error": [error]}, status=status)


def _count_param(text: str | None) -> int | None:
    if text is None:
        return 1000
    if not (text.isascii() and text.isdigit()):
        return None
    n = int(text)
    return n if 1 <= n <= 1000 else None


def _since_ns(text: str) -> int | None:
    """``since`` as ns: seconds (possibly fractional) when below 1e12, else a ns cursor."""
    try:
        value = Decimal(text.strip())
    except InvalidOperation:
        return None
    if not value.is_finite() or value < 0:
        return None
    if value < Decimal(10) ** 12:
        return int(value.scaleb(9))
    return int(value)

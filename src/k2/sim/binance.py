"""Simulated Binance spot: ``/stream`` (combined) and ``/ws`` (raw) WebSockets plus ``/api/v3`` trades REST.

Protocol as in exchanges.md §1: ``@trade`` frames built by ``k2.capture.synth.binance_frame``, JSON control
methods, a WebSocket ping every ``binance_ping_interval_s`` that must be answered, at most
``binance_max_incoming_per_s`` client frames (text, ping, pong) per second or the connection is closed with
1008, and a connection lifetime after which it is closed with 1001.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from aiohttp import web

from k2.capture.synth import _pad8, binance_frame
from k2.sim.conn import Conn
from k2.sim.fmt import decimal_product, now_us
from k2.sim.limits import RollingWeight, SlidingCounter
from k2.sim.market import Generated, SymbolBook, to_synth
from k2.sim.venue import Venue, json_response

#: Request weight of /api/v3/trades and /api/v3/historicalTrades, and the per-minute budget.
TRADES_WEIGHT = 25
WEIGHT_PER_MINUTE = 6000
_METHODS = ("SUBSCRIBE", "UNSUBSCRIBE", "LIST_SUBSCRIPTIONS", "SET_PROPERTY", "GET_PROPERTY")
_TIME_UNITS = {"MICROSECOND": True, "MILLISECOND": False}
_TOO_MANY = {
    "code": -1003,
    "msg": "Too many requests; current limit of IP(127.0.0.1) is 6000 requests per minute. "
    "Please use the websocket for live updates to avoid polling the API.",
}


def _error(code: int, msg: str, status: int = 400) -> web.Response:
    return json_response({"code": code, "msg": msg}, status=status)


def _valid_id(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return -(2**63) <= value < 2**63
    return isinstance(value, str) and len(value) <= 36 and (value == "" or value.isalnum()) and value.isascii()


class BinanceConn(Conn):
    """A ``/stream`` or ``/ws`` connection: its streams, time unit, envelope, pings and incoming budget."""

    venue: BinanceVenue

    def __init__(self, venue: BinanceVenue, request: web.Request, ws: web.WebSocketResponse,
                 combined: bool, micro: bool, streams: list[str]) -> None:
        super().__init__(venue, request, ws)
        self.combined = combined
        self.micro = micro
        self.streams: dict[str, None] = dict.fromkeys(s for s in streams if s)
        self._incoming = SlidingCounter(1.0)
        self._pings: dict[bytes, float] = {}  # unanswered ping payload -> sent at

    def on_open(self) -> None:
        self.spawn(self._keepalive())
        self.spawn(self._lifetime())

    def on_incoming(self) -> bool:
        if self._incoming.hit(time.monotonic()) > self.venue.config.binance_max_incoming_per_s:
            if not self.closing:
                self.venue.stats["closed_incoming_rate"] += 1
                self.close(1008, "Too many messages", now=True)
            return False
        return not self.closing

    def on_pong(self, payload: bytes) -> None:
        sent = self._pings.get(payload)
        if sent is not None:  # answers this ping and every earlier one
            self._pings = {p: t for p, t in self._pings.items() if t > sent}

    async def _keepalive(self) -> None:
        cfg = self.venue.config
        next_ping = time.monotonic() + cfg.binance_ping_interval_s
        step = min(cfg.binance_ping_interval_s, cfg.binance_pong_timeout_s) / 4
        while True:
            now = time.monotonic()
            await asyncio.sleep(max(0.005, min(step, next_ping - now)))
            now = time.monotonic()
            if self._pings and now - min(self._pings.values()) >= cfg.binance_pong_timeout_s:
                self.venue.stats["closed_pong_timeout"] += 1
                self.close(1008, "Pong timeout", now=True)
                return
            if now >= next_ping:
                payload = str(time.time_ns() // 1_000_000).encode()
                if self.ping(payload):
                    self._pings[payload] = now
                next_ping = now + cfg.binance_ping_interval_s

    async def _lifetime(self) -> None:
        await asyncio.sleep(self.venue.config.binance_max_lifetime_s)
        self.venue.stats["closed_lifetime"] += 1
        self.close(1001, "Connection lifetime exceeded")

    # --- JSON methods ---

    def reply(self, obj: dict[str, Any]) -> None:
        self.send(json.dumps(obj, separators=(",", ":")))

    def on_text(self, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError as exc:
            where = f" at line {exc.lineno} column {exc.colno}" if isinstance(exc, json.JSONDecodeError) else ""
            reason = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
            self.reply({"code": 3, "msg": f"Invalid JSON: {reason[:1].lower()}{reason[1:]}{where}"})
            return
        if not isinstance(msg, dict):
            self.reply({"code": 2, "msg": "Invalid request: expected a JSON object"})
            return
        rid = msg.get("id")
        if not _valid_id(rid):
            self.reply({"code": 2, "msg": "Invalid request: request ID must be an integer, a string of at most 36 alphanumeric characters, or null"})
            return
        method = msg.get("method")
        if method not in _METHODS:
            what = "missing field `method`" if method is None else f"unknown variant `{method}`, expected one of {', '.join(f'`{m}`' for m in _METHODS)}"
            self.reply({"code": 2, "msg": f"Invalid request: {what}", "id": rid})
            return
        params = msg.get("params")
        error = getattr(self, f"_m_{method.lower()}")(params, rid)
        if error:
            self.reply({"code": 2, "msg": f"Invalid request: {error}", "id": rid})

    @staticmethod
    def _stream_list(params: Any) -> list[str] | None:
        if isinstance(params, list) and params and all(isinstance(p, str) and p and " " not in p for p in params):
            return params
        return None

    def _m_subscribe(self, params: Any, rid: Any) -> str:
        streams = self._stream_list(params)
        if streams is None:
            return "`params` must be a non-empty array of stream names"
        if len(set(self.streams) | set(streams)) > 1024:
            return "too many streams (at most 1024 per connection)"
        self.streams.update(dict.fromkeys(streams))  # unknown symbols: acknowledged, never delivered
        self.reply({"result": None, "id": rid})
        return ""

    def _m_unsubscribe(self, params: Any, rid: Any) -> str:
        streams = self._stream_list(params)
        if streams is None:
            return "`params` must be a non-empty array of stream names"
        for s in streams:
            self.streams.pop(s, None)
        self.reply({"result": None, "id": rid})
        return ""

    def _m_list_subscriptions(self, params: Any, rid: Any) -> str:
        if params not in (None, []):
            return "too many parameters"
        self.reply({"result": list(self.streams), "id": rid})
        return ""

    def _m_set_property(self, params: Any, rid: Any) -> str:
        if not isinstance(params, list) or len(params) != 2:
            return "`params` must be [name, value]"
        if params[0] != "combined":
            self.reply({"code": 0, "msg": "Unknown property", "id": rid})
        elif not isinstance(params[1], bool):
            self.reply({"code": 1, "msg": "Invalid value type: expected Boolean", "id": rid})
        else:
            self.combined = params[1]
            self.reply({"result": None, "id": rid})
        return ""

    def _m_get_property(self, params: Any, rid: Any) -> str:
        if not isinstance(params, list) or len(params) != 1:
            return "`params` must be [name]"
        if params[0] != "combined":
            self.reply({"code": 0, "msg": "Unknown property", "id": rid})
        else:
            self.reply({"result": self.combined, "id": rid})
        return ""


class BinanceVenue(Venue):
    """Binance spot on one port: WebSockets ``/stream``, ``/ws``, ``/ws/<streams>``; REST ``/api/v3``."""

    name = "binance"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._weight = RollingWeight(WEIGHT_PER_MINUTE)
        self._rest_books: dict[str, SymbolBook] = {}
        for book in self.market.books.values():
            self._rest_books.setdefault(book.inst.native_symbol, book)
            self._rest_books.setdefault(book.inst.rest_symbol, book)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/stream", self.ws_handler(self._make_conn))
        app.router.add_get("/ws", self.ws_handler(self._make_conn))
        app.router.add_get("/ws/{streams:.+}", self.ws_handler(self._make_conn))
        app.router.add_get("/api/v3/historicalTrades", self.rest(self._historical))
        app.router.add_get("/api/v3/trades", self.rest(self._recent))

    def _make_conn(self, request: web.Request, ws: web.WebSocketResponse) -> BinanceConn:
        unit = request.query.get("timeUnit", "MILLISECOND")
        if unit.upper() not in _TIME_UNITS or unit not in (unit.upper(), unit.lower()):
            raise web.HTTPBadRequest(text=json.dumps({"code": -1100, "msg": f"Invalid timeUnit {unit!r}."}),
                                     content_type="application/json")
        combined = request.path == "/stream"
        if combined:
            streams = request.query.get("streams", "").split("/")
        else:
            streams = request.match_info.get("streams", "").split("/")
        return BinanceConn(self, request, ws, combined, _TIME_UNITS[unit.upper()], streams)

    def dispatch(self, trades: list[Generated]) -> None:
        conns = self.live_conns(BinanceConn)
        if not conns:
            return
        for g in trades:
            stream = g.inst.native_symbol.lower() + "@trade"
            targets = [c for c in conns if stream in c.streams]
            if not targets:
                continue
            synth = to_synth(g.trade, g.inst)
            frames: dict[tuple[bool, bool], str] = {}
            for c in targets:
                key = (c.micro, c.combined)
                frame = frames.get(key)
                if frame is None:
                    frame = frames[key] = binance_frame(synth, micro=c.micro, combined=c.combined)
                c.send_trade(frame)

    def shutdown_notice(self, conn: Conn) -> None:
        assert isinstance(conn, BinanceConn)
        us = now_us()
        body = f'{{"e":"serverShutdown","E":{us if conn.micro else us // 1000}}}'
        conn.send(f'{{"stream":"!serverShutdown","data":{body}}}' if conn.combined else body)

    def malformed_frame(self, conn: Conn, kind: int) -> str | bytes:
        assert isinstance(conn, BinanceConn)
        native = next((s.split("@")[0].upper() for s in conn.streams if s.endswith("@trade")), None)
        trade, inst = self.sample_trade(native)
        frame = binance_frame(to_synth(trade, inst), micro=conn.micro, combined=conn.combined)
        if kind == 0:
            return frame[: len(frame) // 2]
        if kind == 1:
            price = f'"p":"{_pad8(trade.price)}"'
            return frame.replace(price, f'"p":{{"value":{price[4:]}}}')
        if kind == 2:
            return frame.replace(f'"q":"{_pad8(trade.qty)}"', f'"q":"-{_pad8(trade.qty)}"')
        return frame.encode().replace(f'"s":"{inst.native_symbol}"'.encode(), b'"s":"\xff\xfe' + inst.native_symbol.encode() + b'"')

    # --- REST ---

    async def _historical(self, request: web.Request) -> web.Response:
        return self._trades(request, with_from_id=True)

    async def _recent(self, request: web.Request) -> web.Response:
        return self._trades(request, with_from_id=False)

    def _trades(self, request: web.Request, with_from_id: bool) -> web.Response:
        q = request.query
        symbol = q.get("symbol", "")
        if not symbol:
            return _error(-1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.")
        book = self._rest_books.get(symbol)
        if book is None:
            return _error(-1121, "Invalid symbol.")
        limit = _int_param(q.get("limit"), 500)
        if limit is None:
            return _error(-1100, "Illegal characters found in parameter 'limit'; legal range is '^[0-9]{1,20}$'.")
        limit = min(max(limit, 1), 1000)
        from_id = _int_param(q.get("fromId"), -1) if with_from_id else -1
        if from_id is None:
            return _error(-1100, "Illegal characters found in parameter 'fromId'; legal range is '^[0-9]{1,20}$'.")
        trades = book.from_id(from_id, limit) if from_id >= 0 else book.latest(limit)
        micro = request.headers.get("X-MBX-TIME-UNIT", "").upper() == "MICROSECOND"
        return json_response([
            {
                "id": t.trade_id,
                "price": _pad8(t.price),
                "qty": _pad8(t.qty),
                "quoteQty": decimal_product(t.price, t.qty),
                "time": t.ts_us if micro else t.ts_us // 1000,
                "isBuyerMaker": t.side == "sell",
                "isBestMatch": True,
            }
            for t in trades
        ])

    def admit(self, request: web.Request) -> web.Response | None:
        now = time.monotonic()
        if not self._weight.fits(now, TRADES_WEIGHT):
            self.stats["rest_rate_limited"] += 1
            return self.rate_limited(self._weight.retry_after(now, TRADES_WEIGHT))
        self._weight.add(now, TRADES_WEIGHT)
        return None

    def after_rest(self, request: web.Request, resp: web.StreamResponse) -> None:
        resp.headers["X-MBX-USED-WEIGHT-1M"] = str(self._weight.used(time.monotonic()))

    def rate_limited(self, retry_after_s: int) -> web.Response:
        return json_response(_TOO_MANY, status=429, headers={"Retry-After": str(retry_after_s)})

    def rest_error(self, status: int) -> web.Response:
        if status >= 500:
            return _error(-1001, "Internal error; unable to process your request. Please try again.", status)
        return _error(-1000, "An unknown error occurred while processing the request.", status)


def _int_param(text: str | None, default: int) -> int | None:
    """A non-negative integer query parameter (``default`` when absent, None when malformed)."""
    if text is None:
        return default
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 20 else None

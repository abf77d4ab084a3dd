"""Kraken WS v2 frames -> normalized trades (exchanges.md §2.2-2.4). Pure functions, no I/O.

Prices and quantities are JSON numbers: they are read as decimals from their literal text, never as floats.
One message may hold several trades; a bad trade is dead-lettered (its frame, with the reason) and the other
trades of the same frame are kept.

REST-response frames (k2.venues.rest: envelope, events, reasons) of ``GET /0/public/Trades`` (exchanges.md §2.6):

* The instrument is the ``pair`` query parameter, matched to the ``rest_symbol`` column (``XBTUSD``, ``XDGUSD``).
  The result key is Kraken's canonical pair name (``XXBTZUSD``), which K2's table does not hold: the trades are
  the one key of ``result`` that is not ``last``. ``last`` (ns cursor string, the next ``since``) goes in the
  ``rest`` event.
* Item ``[price str, volume str, time, "b"|"s" (taker side), ord type, misc, trade_id int]``. ``time`` is a JSON
  number of float seconds with up to ~7 decimals: it is read from its literal as an exact Decimal (never a float)
  and TRUNCATED to µs, so ``1688669597.8277369`` -> ``1688669597827736``. It can differ by 1 µs from the WS time
  of the same trade: trades are keyed by trade_id, never by time.
* Errors come with HTTP 200: ``{"error":["EGeneral:Too many requests"]}``; any non-empty ``error`` is a
  ``rest_error`` (texts joined with "; ").
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import ROUND_DOWN, Decimal

import msgspec

from k2.model.instrument import InstrumentTable
from k2.model.trade import EXACT
from k2.venues.base import ControlEvent, ParseResult, RawTrades, _scan, decode_object, finalize_parts, scan_then_parse
from k2.venues.kraken.schemas import RestBody, RestTrade, RestTradeItem, Trade, TradeMessage
from k2.venues.rest import (
    resolve_rest,
    RestResponse,
    decode_body,
    is_rest_frame,
    is_rest_object,
    query_param,
    rest_error,
    rest_ok,
)

_KIND = _scan.KRAKEN if _scan is not None else 0
EXCHANGE = "kraken"
_TRADE_TYPES = ("snapshot", "update")

_REST_ENDPOINT = "/0/public/Trades"
_REST_SIDE = {"b": "buy", "s": "sell"}  # anything else goes on as sent and finalize_trades refuses it
_MICRO = Decimal("0.000001")
_INT64_MAX = 2**63 - 1

_dec_msg = msgspec.json.Decoder(TradeMessage)
_dec_any = msgspec.json.Decoder(float_hook=Decimal)
_dec_rest = msgspec.json.Decoder(RestBody)


def _seconds_to_us(seconds: Decimal | int) -> int:
    """Exact seconds -> µs, truncated toward zero (``quantize`` rounds the exact value, never a rounded copy).

    A time whose µs do not fit int64 becomes 0, which finalize_trades refuses as out of range.
    """
    if isinstance(seconds, int):
        us = seconds * 1_000_000
    elif not seconds.is_finite() or seconds.adjusted() > 13:
        return 0
    else:
        try:
            us = int(seconds.quantize(_MICRO, rounding=ROUND_DOWN, context=EXACT).scaleb(6, EXACT))
        except ArithmeticError:  # decimal signals on operands no exchange sends; never raise on bad input
            return 0
    return us if -_INT64_MAX <= us <= _INT64_MAX else 0


def _raw_number(raw: msgspec.Raw) -> Decimal | None:
    """The exact value of a JSON number literal, None when the JSON value is not a number."""
    text = bytes(raw)
    if not text or text[0] not in b"-0123456789":
        return None
    return Decimal(text.decode("ascii"))


def _api_error(body: object) -> str | None:
    """A non-empty ``error`` array -> its messages joined with "; "."""
    if isinstance(body, dict) and isinstance(body.get("error"), list) and body["error"]:
        return "; ".join(str(e) for e in body["error"])
    return None


class KrakenParser:
    exchange = EXCHANGE

    def __init__(self, instruments: InstrumentTable) -> None:
        self._wire = instruments.wire_map(EXCHANGE)
        self._instruments = instruments

    def parse(self, frames: Sequence[str | bytes], ts_recv: Sequence[int]) -> ParseResult:
        """Parse a batch of frames received at ``ts_recv`` (µs each). Never raises on bad input."""
        return scan_then_parse(_KIND, EXCHANGE, self._wire, frames, ts_recv, self._parse_py)

    def _parse_py(self, frames: Sequence[str | bytes], ts_recv: Sequence[int]) -> ParseResult:
        """The general path (msgspec): every frame shape, control frames and dead letters."""
        result = ParseResult(trades=None)  # type: ignore[arg-type]
        trades: list[Trade] = []
        where: list[int] = []
        rest = RawTrades(side=[])  # REST items, times already in µs
        dec = _dec_msg.decode
        for i, frame in enumerate(frames):
            if is_rest_frame(frame):
                self._rest(i, frame, result, rest)
                continue
            try:
                msg = dec(frame)
            except (msgspec.ValidationError, msgspec.DecodeError, UnicodeError):
                self._slow(i, frame, result, trades, where, rest)
                continue
            if msg.type not in _TRADE_TYPES:
                result.dead.append((i, f"unknown event type {msg.type!r} on trade channel"))
                continue
            result.trade_frames += 1
            trades.extend(msg.data)
            where.extend([i] * len(msg.data))
        raw = RawTrades(index=where, ts_text=True)
        raw.native = [t.symbol for t in trades]
        raw.trade_id = [t.trade_id for t in trades]
        raw.price = [t.price for t in trades]
        raw.qty = [t.qty for t in trades]
        raw.side = [t.side for t in trades]
        raw.ts = [t.timestamp for t in trades]
        finalize_parts(EXCHANGE, self._wire, [raw, rest], ts_recv, result)
        return result

    def _rest(self, i: int, frame: str | bytes, result: ParseResult, rows: RawTrades) -> None:
        """One REST-response frame: its items go to ``rows``, its event or dead letter to ``result``."""
        found = resolve_rest(i, frame, result, EXCHANGE, self._instruments, self._rest_pair, "pair", _api_error)
        if found is None:
            return
        resp, inst = found
        if not self._rest_fast(resp, inst.native_symbol, result, rows):
            self._rest_general(resp, inst.native_symbol, result, rows)

    @staticmethod
    def _rest_pair(resp: RestResponse, result: ParseResult) -> str | None:
        return query_param(resp, "pair", result) if resp.path == _REST_ENDPOINT else None

    @staticmethod
    def _rest_fast(resp: RestResponse, native: str, result: ParseResult, rows: RawTrades) -> bool:
        """The common well-formed body, typed; False (nothing added) for anything the general path must judge."""
        try:
            body = _dec_rest.decode(resp.body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            return False
        if body.error:
            return False
        keys = [k for k in body.result if k != "last"]
        last = body.result.get("last")
        if len(keys) != 1 or not isinstance(last, str) or not isinstance(body.result[keys[0]], list):
            return False
        items: list[RestTrade] = body.result[keys[0]]  # type: ignore[assignment]
        times = [_raw_number(t.time) for t in items]
        if None in times:
            return False
        rows.add_many(resp.index, native, [t.trade_id for t in items], [t.price for t in items],
                      [t.volume for t in items], [_REST_SIDE.get(t.side, t.side) for t in items],
                      [_seconds_to_us(s) for s in times])
        rest_ok(resp, len(items), last, result)
        return True

    @staticmethod
    def _rest_general(resp: RestResponse, native: str, result: ParseResult, rows: RawTrades) -> None:
        """A 200 body the typed path left: an API error, another shape, or bad items (each with a reason)."""
        body = decode_body(resp)
        if _api_error(body) is not None:
            rest_error(resp, body, _api_error, result)
            return
        i = resp.index
        if not isinstance(body, dict) or not isinstance(body.get("error"), list):
            result.dead.append((i, 'REST frame: body is not a Kraken response {"error":[...],"result":{...}}'))
            return
        res = body.get("result")
        if not isinstance(res, dict):
            result.dead.append((i, "REST frame: `result` is not an object"))
            return
        last = res.get("last")
        if not isinstance(last, str):
            result.dead.append((i, f"REST frame: `result.last` is not a cursor string ({last!r})"))
            return
        keys = [k for k in res if k != "last"]
        if len(keys) != 1:
            result.dead.append((i, f"REST frame: `result` must hold exactly one pair besides `last` (found {keys})"))
            return
        key = keys[0]
        items = res[key]
        if not isinstance(items, list):
            result.dead.append((i, f"REST frame: `result.{key}` is not an array"))
            return
        for n, item in enumerate(items):
            try:
                t = msgspec.convert(item, RestTradeItem)
                if isinstance(item[2], bool) or not isinstance(item[2], (int, Decimal)):
                    raise msgspec.ValidationError(f"Expected `number`, got `{type(item[2]).__name__}` - at `$[2]`")
                rows.add(i, native, t.trade_id, t.price, t.volume, _REST_SIDE.get(t.side, t.side), _seconds_to_us(item[2]))
            except msgspec.ValidationError as exc:  # placeholders: the row is dropped with this reason
                rows.add(i, native, 0, "1", "1", "buy", 0, f"bad REST trade: result.{key}[{n}]: {exc}")
        rest_ok(resp, len(items), last, result)

    def _slow(
        self, i: int, frame: str | bytes, result: ParseResult, trades: list, where: list, rest: RawTrades
    ) -> None:
        msg = decode_object(_dec_any, i, frame, result)
        if msg is None:
            return
        if is_rest_object(msg):
            self._rest(i, frame, result, rest)
            return
        channel, method = msg.get("channel"), msg.get("method")
        if channel == "trade":
            kind = msg.get("type")
            if kind not in _TRADE_TYPES:
                result.dead.append((i, f"unknown event type {kind!r} on trade channel"))
                return
            items = msg.get("data")
            if not isinstance(items, list):
                result.dead.append((i, "bad trade frame: `data` is not an array"))
                return
            reason = ""
            for n, item in enumerate(items):
                try:
                    trades.append(msgspec.convert(item, Trade))
                    where.append(i)
                except msgspec.ValidationError as exc:
                    reason = reason or f"bad trade frame: data[{n}]: {exc}"
            if reason:
                result.dead.append((i, reason))
            result.trade_frames += 1
        elif channel == "heartbeat":
            result.control += 1
            result.events.append(ControlEvent(i, "heartbeat"))
        elif channel == "status":
            result.control += 1
            data = msg.get("data")
            first = data[0] if isinstance(data, list) and data and isinstance(data[0], dict) else {}
            result.events.append(ControlEvent(i, "status", {"system": first.get("system")}))
        elif method in ("subscribe", "unsubscribe"):
            result.control += 1
            ok = msg.get("success") is True
            detail = {"method": method, "req_id": msg.get("req_id"), "result": msg.get("result"), "error": msg.get("error")}
            result.events.append(ControlEvent(i, "ack" if ok else "subscribe_error", detail))
        elif method == "pong":
            result.control += 1
            result.events.append(ControlEvent(i, "pong", {"req_id": msg.get("req_id")}))
        elif channel is None and method is None and ("error" in msg or "Error" in msg):
            result.control += 1
            result.events.append(ControlEvent(i, "error", {"error": msg.get("error", msg.get("Error"))}))
        else:
            result.ignored += 1

"""Binance spot frames -> normalized trades (exchanges.md §1.2-1.5). Pure functions, no I/O.

* ``@trade`` raw and combined-stream frames are trades. ``T`` above 10^14 is read as µs (timeUnit=MICROSECOND
  connections), else as ms: a ms value that large would be past the year 5000, a µs value that small before
  1973, so the magnitude decides the unit without knowing how the connection was opened.
* ``aggTrade`` frames are recognised and not stored: their ids are a different id space.
* ``{"result":..,"id":..}`` acks, ``{"code":..,"msg":..}`` errors and ``serverShutdown`` are control frames.
* Any other well-formed ``e`` is ignored (counted); a frame on a ``@trade`` stream that is not a valid trade
  is a dead letter.
* REST-response frames (k2.venues.rest: envelope, events, reasons) of ``GET /api/v3/historicalTrades`` and
  ``/api/v3/trades``: the instrument is the ``symbol`` query parameter (``rest_symbol``, upper case). Items are
  ``{"id","price","qty","quoteQty","time","isBuyerMaker","isBestMatch"}``; ``time`` is ms, or µs when the request
  carried ``X-MBX-TIME-UNIT: MICROSECOND``. The header is not in the frame, so the unit is decided by magnitude as
  for WS ``T``. API errors are ``{"code":..,"msg":..}`` (HTTP 4xx/5xx, 429 when rate limited).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np

from k2.model.instrument import InstrumentTable
from k2.venues.base import ControlEvent, ParseResult, RawTrades, _scan, decode_object, finalize_parts, scan_then_parse
from k2.venues.binance.schemas import CombinedTrade, RestTrade, Trade
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

_KIND = _scan.BINANCE if _scan is not None else 0
EXCHANGE = "binance"
_US_THRESHOLD = 10**14
_REST_ENDPOINTS = ("/api/v3/historicalTrades", "/api/v3/trades")

_dec_trade = msgspec.json.Decoder(Trade)
_dec_combined = msgspec.json.Decoder(CombinedTrade)
_dec_any = msgspec.json.Decoder()
_dec_rest = msgspec.json.Decoder(list[RestTrade])


def _times_us(times: list) -> np.ndarray:
    """Wire times -> µs: above 10^14 already µs, else ms (see the module docstring)."""
    try:
        t = np.array(times, dtype=np.int64)
    except OverflowError:  # beyond int64: out of range, refused by finalize_trades
        t = np.array([x if -(2**62) < x < 2**62 else 0 for x in times], dtype=np.int64)
    return np.where(t > _US_THRESHOLD, t, t * 1000)


def _api_error(body: object) -> str | None:
    """``{"code":-1121,"msg":"Invalid symbol."}`` -> ``code -1121: Invalid symbol.``"""
    if isinstance(body, dict) and "code" in body and "msg" in body:
        return f"code {body['code']}: {body['msg']}"
    return None


class BinanceParser:
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
        good: list[Trade] = []
        where: list[int] = []
        rest = RawTrades(sell=[])  # REST items; ``ts`` holds wire times until converted below
        dec_t, dec_c = _dec_trade.decode, _dec_combined.decode
        for i, frame in enumerate(frames):
            if is_rest_frame(frame):
                self._rest(i, frame, result, rest)
                continue
            try:
                if frame[:9] in ('{"stream"', b'{"stream"'):
                    good.append(dec_c(frame).data)
                else:
                    good.append(dec_t(frame))
                where.append(i)
            except (msgspec.ValidationError, msgspec.DecodeError, UnicodeError):
                self._slow(i, frame, result, good, where, rest)
        result.trade_frames += len(where)
        raw = RawTrades(index=where)
        raw.native = [m.s for m in good]
        raw.trade_id = [m.t for m in good]
        raw.price = [m.p for m in good]
        raw.qty = [m.q for m in good]
        raw.sell = [m.m for m in good]
        raw.ts = _times_us([m.T for m in good])
        rest.ts = _times_us(rest.ts)
        finalize_parts(EXCHANGE, self._wire, [raw, rest], ts_recv, result)
        return result

    def _rest(self, i: int, frame: str | bytes, result: ParseResult, rows: RawTrades) -> None:
        """One REST-response frame: its items go to ``rows``, its event or dead letter to ``result``."""
        found = resolve_rest(i, frame, result, EXCHANGE, self._instruments, self._rest_symbol, "symbol", _api_error)
        if found is None:
            return
        resp, inst = found
        try:
            items = _dec_rest.decode(resp.body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self._rest_general(resp, inst.native_symbol, result, rows)
            return
        rows.add_many(i, inst.native_symbol, [t.id for t in items], [t.price for t in items], [t.qty for t in items],
                      [t.isBuyerMaker for t in items], [t.time for t in items])
        rest_ok(resp, len(items), None, result)

    @staticmethod
    def _rest_symbol(resp: RestResponse, result: ParseResult) -> str | None:
        return query_param(resp, "symbol", result) if resp.path in _REST_ENDPOINTS else None

    @staticmethod
    def _rest_general(resp: RestResponse, native: str, result: ParseResult, rows: RawTrades) -> None:
        """A 200 body the typed decoder refused: an API error, another shape, or bad items (each with a reason)."""
        body = decode_body(resp)
        if _api_error(body) is not None:
            rest_error(resp, body, _api_error, result)
            return
        if not isinstance(body, list):
            result.dead.append((resp.index, f"REST frame: body is not an array of trades ({type(body).__name__})"))
            return
        for n, item in enumerate(body):
            try:
                t = msgspec.convert(item, RestTrade)
                rows.add(resp.index, native, t.id, t.price, t.qty, t.isBuyerMaker, t.time)
            except msgspec.ValidationError as exc:  # placeholders: the row is dropped with this reason
                rows.add(resp.index, native, 0, "1", "1", False, 0, f"bad REST trade: body[{n}]: {exc}")
        rest_ok(resp, len(body), None, result)

    def _slow(self, i: int, frame: str | bytes, result: ParseResult, good: list, where: list, rest: RawTrades) -> None:
        msg = decode_object(_dec_any, i, frame, result)
        if msg is None:
            return
        if is_rest_object(msg):
            self._rest(i, frame, result, rest)
            return
        stream = None
        if "stream" in msg and "data" in msg:
            stream, msg = msg["stream"], msg["data"]
            if not isinstance(msg, dict):
                result.dead.append((i, "combined-stream data is not an object"))
                return
        e = msg.get("e")
        if e == "trade" or (e is None and isinstance(stream, str) and stream.endswith("@trade")):
            try:
                good.append(msgspec.convert(msg, Trade))
                where.append(i)
            except msgspec.ValidationError as exc:
                result.dead.append((i, f"bad trade frame: {exc}"))
            return
        if isinstance(stream, str) and stream.endswith("@trade"):
            result.dead.append((i, f"unknown event type {e!r} on trade stream {stream!r}"))
            return
        if e == "serverShutdown":
            result.control += 1
            result.events.append(ControlEvent(i, "shutdown", {"E": msg.get("E")}))
        elif e is None and "result" in msg and "id" in msg:
            result.control += 1
            result.events.append(ControlEvent(i, "ack", {"id": msg["id"], "result": msg["result"]}))
        elif e is None and "code" in msg and "msg" in msg:
            result.control += 1
            result.events.append(ControlEvent(i, "error", {"code": msg["code"], "msg": msg["msg"], "id": msg.get("id")}))
        else:
            result.ignored += 1  # aggTrade (own id space, not stored) and any other stream type

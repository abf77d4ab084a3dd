"""Binance spot frames -> normalized trades (exchanges.md §1.2-1.5). Pure functions, no I/O.

* ``@trade`` raw and combined-stream frames are trades. ``T`` above 10^14 is read as µs (timeUnit=MICROSECOND
  connections), else as ms: a ms value that large would be past the year 5000, a µs value that small before
  1973, so the magnitude decides the unit without knowing how the connection was opened.
* ``aggTrade`` frames are recognised and not stored: their ids are a different id space.
* ``{"result":..,"id":..}`` acks, ``{"code":..,"msg":..}`` errors and ``serverShutdown`` are control frames.
* Any other well-formed ``e`` is ignored (counted); a frame on a ``@trade`` stream that is not a valid trade
  is a dead letter.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec
import numpy as np

from k2.model.instrument import InstrumentTable
from k2.venues.base import ControlEvent, ParseResult, RawTrades, _scan, decode_object, finalize_trades, scan_then_parse
from k2.venues.binance.schemas import CombinedTrade, Trade

_KIND = _scan.BINANCE if _scan is not None else 0
EXCHANGE = "binance"
_US_THRESHOLD = 10**14

_dec_trade = msgspec.json.Decoder(Trade)
_dec_combined = msgspec.json.Decoder(CombinedTrade)
_dec_any = msgspec.json.Decoder()


class BinanceParser:
    exchange = EXCHANGE

    def __init__(self, instruments: InstrumentTable) -> None:
        self._wire = instruments.wire_map(EXCHANGE)

    def parse(self, frames: Sequence[str | bytes], ts_recv: Sequence[int]) -> ParseResult:
        """Parse a batch of frames received at ``ts_recv`` (µs each). Never raises on bad input."""
        return scan_then_parse(_KIND, EXCHANGE, self._wire, frames, ts_recv, self._parse_py)

    def _parse_py(self, frames: Sequence[str | bytes], ts_recv: Sequence[int]) -> ParseResult:
        """The general path (msgspec): every frame shape, control frames and dead letters."""
        result = ParseResult(trades=None)  # type: ignore[arg-type]
        good: list[Trade] = []
        where: list[int] = []
        dec_t, dec_c = _dec_trade.decode, _dec_combined.decode
        for i, frame in enumerate(frames):
            try:
                if frame[:9] in ('{"stream"', b'{"stream"'):
                    good.append(dec_c(frame).data)
                else:
                    good.append(dec_t(frame))
                where.append(i)
            except (msgspec.ValidationError, msgspec.DecodeError, UnicodeError):
                self._slow(i, frame, result, good, where)
        result.trade_frames = len(where)
        raw = RawTrades(index=where)
        raw.native = [m.s for m in good]
        raw.trade_id = [m.t for m in good]
        raw.price = [m.p for m in good]
        raw.qty = [m.q for m in good]
        raw.sell = [m.m for m in good]
        times = [m.T for m in good]
        try:
            t = np.array(times, dtype=np.int64)
        except OverflowError:  # beyond int64: out of range, refused below
            t = np.array([x if -(2**62) < x < 2**62 else 0 for x in times], dtype=np.int64)
        raw.ts = np.where(t > _US_THRESHOLD, t, t * 1000)
        finalize_trades(EXCHANGE, self._wire, raw, ts_recv, result)
        return result

    def _slow(self, i: int, frame: str | bytes, result: ParseResult, good: list, where: list) -> None:
        msg = decode_object(_dec_any, i, frame, result)
        if msg is None:
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

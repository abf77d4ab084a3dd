"""Kraken WS v2 frames -> normalized trades (exchanges.md §2.2-2.4). Pure functions, no I/O.

Prices and quantities are JSON numbers: they are read as decimals from their literal text, never as floats.
One message may hold several trades; a bad trade is dead-lettered (its frame, with the reason) and the other
trades of the same frame are kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal

import msgspec

from k2.model.instrument import InstrumentTable
from k2.venues.base import ControlEvent, ParseResult, RawTrades, _scan, decode_object, finalize_trades, scan_then_parse
from k2.venues.kraken.schemas import Trade, TradeMessage

_KIND = _scan.KRAKEN if _scan is not None else 0
EXCHANGE = "kraken"
_TRADE_TYPES = ("snapshot", "update")

_dec_msg = msgspec.json.Decoder(TradeMessage)
_dec_any = msgspec.json.Decoder(float_hook=Decimal)


class KrakenParser:
    exchange = EXCHANGE

    def __init__(self, instruments: InstrumentTable) -> None:
        self._wire = instruments.wire_map(EXCHANGE)

    def parse(self, frames: Sequence[str | bytes], ts_recv: Sequence[int]) -> ParseResult:
        """Parse a batch of frames received at ``ts_recv`` (µs each). Never raises on bad input."""
        return scan_then_parse(_KIND, EXCHANGE, self._wire, frames, ts_recv, self._parse_py)

    def _parse_py(self, frames: Sequence[str | bytes], ts_recv: Sequence[int]) -> ParseResult:
        """The general path (msgspec): every frame shape, control frames and dead letters."""
        result = ParseResult(trades=None)  # type: ignore[arg-type]
        trades: list[Trade] = []
        where: list[int] = []
        dec = _dec_msg.decode
        for i, frame in enumerate(frames):
            try:
                msg = dec(frame)
            except (msgspec.ValidationError, msgspec.DecodeError, UnicodeError):
                self._slow(i, frame, result, trades, where)
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
        finalize_trades(EXCHANGE, self._wire, raw, ts_recv, result)
        return result

    def _slow(self, i: int, frame: str | bytes, result: ParseResult, trades: list, where: list) -> None:
        msg = decode_object(_dec_any, i, frame, result)
        if msg is None:
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

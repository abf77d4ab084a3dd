"""Coinbase frames -> normalized trades (exchanges.md §3). Pure functions, no I/O.

Both Coinbase feeds arrive as exchange ``coinbase``: the Exchange feed (``match``/``last_match``) and Advanced
Trade (``market_trades``). They share the per-product trade id space, so a trade seen on both is stored once.

Side: the Exchange feed's ``side`` is the maker side, so the aggressor is the opposite. Advanced Trade's docs
also call ``side`` the maker side, while some major clients read it as the taker side (exchanges.md §3.6); K2
follows the docs by default and ``coinbase_advanced_side_is_maker = false`` flips it.

REST-response frames (k2.venues.rest: envelope, events, reasons) of the Exchange ``GET /products/{product_id}/trades``
(exchanges.md §3.5): the instrument is the product id in the path (the ``rest_symbol`` column). Items are
``{"time","trade_id","price","size","side"}`` with ``side`` the MAKER side, as on the Exchange feed, so the aggressor
is the opposite. Errors are ``{"message":..}`` (404 unknown product, 429 rate limited).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from decimal import Decimal
from urllib.parse import unquote

import msgspec

from k2.model.instrument import InstrumentTable
from k2.venues.base import ControlEvent, ParseResult, RawTrades, _scan, decode_object, finalize_parts, scan_then_parse
from k2.venues.coinbase.schemas import AdvancedTrade, LastMatch, MarketTrades, Match, RestTrade
from k2.venues.rest import (
    resolve_rest,
    RestResponse,
    decode_body,
    is_rest_frame,
    is_rest_object,
    rest_error,
    rest_ok,
)

_KIND = _scan.COINBASE if _scan is not None else 0
EXCHANGE = "coinbase"
_EVENT_TYPES = ("snapshot", "update")
_OPPOSITE = {"buy": "sell", "sell": "buy", "BUY": "sell", "SELL": "buy"}
_SAME = {"BUY": "buy", "SELL": "sell", "buy": "buy", "sell": "sell"}

_dec_match = msgspec.json.Decoder(Match | LastMatch)
_dec_adv = msgspec.json.Decoder(MarketTrades)
_dec_any = msgspec.json.Decoder(float_hook=Decimal)
_dec_rest = msgspec.json.Decoder(list[RestTrade])
_REST_PATH = re.compile(r"/products/([^/]+)/trades\Z")


def _maker_to_aggressor(side: str) -> str:
    """Exchange feed and REST: maker side -> aggressor side; other text goes on, for finalize_trades to refuse."""
    return _OPPOSITE[side] if side in ("buy", "sell") else side


def _api_error(body: object) -> str | None:
    """``{"message":"NotFound"}`` -> ``NotFound``."""
    if isinstance(body, dict) and "message" in body:
        return str(body["message"])
    return None


def _trade_id(text: str) -> int | str:
    return int(text) if text.isascii() and text.isdigit() else text


class CoinbaseParser:
    exchange = EXCHANGE

    def __init__(self, instruments: InstrumentTable, advanced_side_is_maker: bool = True) -> None:
        self._wire = instruments.wire_map(EXCHANGE)
        self._instruments = instruments
        self._adv_side = _OPPOSITE if advanced_side_is_maker else _SAME
        self._adv_maker = advanced_side_is_maker

    def parse(self, frames: Sequence[str | bytes], ts_recv: Sequence[int]) -> ParseResult:
        """Parse a batch of frames received at ``ts_recv`` (µs each). Never raises on bad input."""
        return scan_then_parse(_KIND, EXCHANGE, self._wire, frames, ts_recv, self._parse_py, self._adv_maker)

    def _parse_py(self, frames: Sequence[str | bytes], ts_recv: Sequence[int]) -> ParseResult:
        """The general path (msgspec): every frame shape, control frames and dead letters."""
        result = ParseResult(trades=None)  # type: ignore[arg-type]
        matches: list[Match] = []
        m_where: list[int] = []
        adv: list[AdvancedTrade] = []
        a_where: list[int] = []
        rest = RawTrades(side=[], ts_text=True)  # REST items
        dec_m, dec_a = _dec_match.decode, _dec_adv.decode
        for i, frame in enumerate(frames):
            if is_rest_frame(frame):
                self._rest(i, frame, result, rest)
                continue
            try:
                if frame[:8] in ('{"type":', b'{"type":'):
                    matches.append(dec_m(frame))
                    m_where.append(i)
                    result.trade_frames += 1
                    continue
                msg = dec_a(frame)
            except (msgspec.ValidationError, msgspec.DecodeError, UnicodeError):
                self._slow(i, frame, result, matches, m_where, adv, a_where, rest)
                continue
            self._advanced(i, msg.events, result, adv, a_where)
        side = self._adv_side
        raw = RawTrades(index=m_where + a_where, ts_text=True)
        raw.native = [m.product_id for m in matches] + [t.product_id for t in adv]
        raw.trade_id = [m.trade_id for m in matches] + [_trade_id(t.trade_id) for t in adv]
        raw.price = [m.price for m in matches] + [t.price for t in adv]
        raw.qty = [m.size for m in matches] + [t.size for t in adv]
        raw.side = [_maker_to_aggressor(m.side) for m in matches] + [side.get(t.side, t.side) for t in adv]
        raw.ts = [m.time for m in matches] + [t.time for t in adv]
        finalize_parts(EXCHANGE, self._wire, [raw, rest], ts_recv, result)
        return result

    def _rest(self, i: int, frame: str | bytes, result: ParseResult, rows: RawTrades) -> None:
        """One REST-response frame: its items go to ``rows``, its event or dead letter to ``result``."""
        found = resolve_rest(i, frame, result, EXCHANGE, self._instruments, self._rest_product, "product", _api_error)
        if found is None:
            return
        resp, inst = found
        try:
            items = _dec_rest.decode(resp.body)
        except (msgspec.ValidationError, msgspec.DecodeError):
            self._rest_general(resp, inst.native_symbol, result, rows)
            return
        rows.add_many(i, inst.native_symbol, [t.trade_id for t in items], [t.price for t in items],
                      [t.size for t in items], [_maker_to_aggressor(t.side) for t in items], [t.time for t in items])
        rest_ok(resp, len(items), None, result)

    @staticmethod
    def _rest_product(resp: RestResponse, result: ParseResult) -> str | None:
        m = _REST_PATH.match(resp.path)
        return unquote(m.group(1)) if m is not None else None

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
                rows.add(resp.index, native, t.trade_id, t.price, t.size, _maker_to_aggressor(t.side), t.time)
            except msgspec.ValidationError as exc:  # placeholders: the row is dropped with this reason
                rows.add(resp.index, native, 0, "1", "1", "buy", "1970-01-01T00:00:00Z", f"bad REST trade: body[{n}]: {exc}")
        rest_ok(resp, len(body), None, result)

    @staticmethod
    def _advanced(i: int, events: list, result: ParseResult, adv: list, a_where: list) -> None:
        result.trade_frames += 1
        unknown = ""
        for ev in events:
            if ev.type not in _EVENT_TYPES:
                unknown = unknown or f"unknown event type {ev.type!r} on market_trades"
                continue  # the frame is dead-lettered once; its good events are kept
            adv.extend(ev.trades)
            a_where.extend([i] * len(ev.trades))
        if unknown:
            result.dead.append((i, unknown))

    def _slow(self, i, frame, result: ParseResult, matches, m_where, adv, a_where, rest: RawTrades) -> None:
        msg = decode_object(_dec_any, i, frame, result)
        if msg is None:
            return
        if is_rest_object(msg):
            self._rest(i, frame, result, rest)
            return
        kind, channel = msg.get("type"), msg.get("channel")
        if kind in ("match", "last_match"):
            try:
                matches.append(msgspec.convert(msg, Match | LastMatch))
                m_where.append(i)
                result.trade_frames += 1
            except msgspec.ValidationError as exc:
                result.dead.append((i, f"bad {kind} frame: {exc}"))
        elif channel == "market_trades":
            events = msg.get("events")
            if not isinstance(events, list):
                result.dead.append((i, "bad market_trades frame: `events` is not an array"))
                return
            good, reason = [], ""
            for n, ev in enumerate(events):
                if not isinstance(ev, dict) or not isinstance(ev.get("trades"), list):
                    reason = reason or f"bad market_trades frame: events[{n}] has no trades array"
                    continue
                if ev.get("type") not in _EVENT_TYPES:
                    reason = reason or f"unknown event type {ev.get('type')!r} on market_trades"
                    continue
                for k, item in enumerate(ev["trades"]):
                    try:
                        good.append(msgspec.convert(item, AdvancedTrade))
                    except msgspec.ValidationError as exc:
                        reason = reason or f"bad market_trades frame: events[{n}].trades[{k}]: {exc}"
            if reason:
                result.dead.append((i, reason))
            result.trade_frames += 1
            adv.extend(good)
            a_where.extend([i] * len(good))
        elif kind == "heartbeat":
            result.control += 1
            result.events.append(
                ControlEvent(i, "heartbeat", {"product_id": msg.get("product_id"), "last_trade_id": msg.get("last_trade_id")})
            )
        elif channel == "heartbeats":
            result.control += 1
            result.events.append(ControlEvent(i, "heartbeat", {"sequence_num": msg.get("sequence_num")}))
        elif kind == "subscriptions" or channel == "subscriptions":
            result.control += 1
            result.events.append(ControlEvent(i, "ack", {"channels": msg.get("channels", msg.get("events"))}))
        elif kind == "error" or (channel is None and kind is None and "message" in msg and "error" in str(msg).lower()):
            result.control += 1
            result.events.append(ControlEvent(i, "error", {"message": msg.get("message"), "reason": msg.get("reason")}))
        else:
            result.ignored += 1

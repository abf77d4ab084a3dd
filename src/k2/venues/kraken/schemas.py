"""Kraken spot WebSocket v2 frames (exchanges.md §2). Field names are Kraken's own."""

from __future__ import annotations

from decimal import Decimal

import msgspec


class Trade(msgspec.Struct, gc=False):
    symbol: str  # v2 name, BASE/QUOTE (BTC/USD)
    side: str  # taker (aggressor) side, buy | sell, no inversion
    price: Decimal  # JSON number with engine precision: msgspec reads the literal exactly into Decimal
    qty: Decimal
    trade_id: int  # sequence number per book: contiguous per pair
    timestamp: str  # RFC3339, µs in examples
    ord_type: str | None = None  # taker order type, limit | market


class TradeMessage(msgspec.Struct, gc=False, tag_field="channel", tag="trade"):
    type: str  # snapshot (the 50 latest trades, when asked for) | update
    data: list[Trade]


class RestTrade(msgspec.Struct, gc=False, array_like=True):
    """One item of REST ``GET /0/public/Trades`` (exchanges.md §2.6), an array:
    ``[price, volume, time, side, ord_type, misc, trade_id]``; trailing elements Kraken may add are skipped."""

    price: str  # decimal text, zero-padded to pair_decimals ("30243.40000")
    volume: str
    time: msgspec.Raw  # JSON number, float seconds with up to ~7 decimals: kept as its literal, read as Decimal
    side: str  # taker side: b | s
    ord_type: object  # m | l (not stored)
    misc: object  # not stored
    trade_id: int  # the same per-pair sequence as WS v2 trade_id


class RestTradeItem(msgspec.Struct, gc=False, array_like=True):
    """:class:`RestTrade` for already-decoded items (the general path): ``time`` is the exact number."""

    price: str
    volume: str
    time: Decimal  # checked to be a JSON number (int or float_hook Decimal) by the parser
    side: str
    ord_type: object
    misc: object
    trade_id: int


class RestBody(msgspec.Struct, gc=False):
    """The common 200 body: ``{"error":[],"result":{"<canonical pair>":[items...],"last":"<ns cursor>"}}``."""

    error: list[str]
    result: dict[str, list[RestTrade] | str]

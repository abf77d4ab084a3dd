"""Coinbase frames (exchanges.md §3): the Exchange ``matches`` feed and Advanced Trade ``market_trades``."""

from __future__ import annotations

import msgspec


class Match(msgspec.Struct, gc=False, tag_field="type", tag="match"):
    """Exchange feed ``match``; ``last_match`` (the latest trade, sent on subscribe) has the same fields."""

    trade_id: int  # contiguous per product
    product_id: str  # BTC-USD
    price: str
    size: str
    side: str  # MAKER side (buy | sell): the aggressor is the opposite
    time: str  # RFC3339, µs at most, trailing zeros trimmed


class LastMatch(Match, tag="last_match"):
    pass


class AdvancedTrade(msgspec.Struct, gc=False):
    trade_id: str  # numeric text per product (same id space as the Exchange feed)
    product_id: str
    price: str
    size: str
    side: str  # BUY | SELL; documented as the maker side (see exchanges.md §3.6)
    time: str


class AdvancedEvent(msgspec.Struct, gc=False):
    type: str  # snapshot | update
    trades: list[AdvancedTrade]


class MarketTrades(msgspec.Struct, gc=False, tag_field="channel", tag="market_trades"):
    events: list[AdvancedEvent]
    sequence_num: int | None = None
    timestamp: str | None = None


class RestTrade(msgspec.Struct, gc=False):
    """One item of Exchange REST ``GET /products/{product_id}/trades`` (exchanges.md §3.5), newest first."""

    time: str  # RFC3339, 0-9 fractional digits
    trade_id: int  # the same per-product id as the Exchange feed's match
    price: str  # decimal text, 8-dp padded
    size: str
    side: str  # MAKER side (buy | sell): the aggressor is the opposite

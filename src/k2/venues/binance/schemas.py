"""Binance spot WebSocket frames (exchanges.md §1). Field names are Binance's own."""

from __future__ import annotations

import msgspec


class Trade(msgspec.Struct, gc=False, tag_field="e", tag="trade"):
    """``<symbol>@trade``: one message per fill."""

    s: str  # symbol, upper case (BTCUSDT)
    t: int  # trade id, per symbol, contiguous
    p: str  # price, decimal text (zero-padded to 8 dp on real feeds)
    q: str  # base quantity, decimal text
    T: int  # trade (match) time: ms, or µs on timeUnit=MICROSECOND connections. Use T, not E.
    m: bool  # is the buyer the market maker -> true means the seller was the aggressor


class CombinedTrade(msgspec.Struct, gc=False):
    """Combined-stream envelope ``{"stream": "btcusdt@trade", "data": {...}}``."""

    stream: str
    data: Trade

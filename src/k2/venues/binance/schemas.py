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


class RestTrade(msgspec.Struct, gc=False):
    """One item of REST ``GET /api/v3/trades`` and ``/api/v3/historicalTrades`` (exchanges.md §1.7).

    ``quoteQty`` and ``isBestMatch`` are not needed (unknown keys are skipped).
    """

    id: int  # the same per-symbol trade id as the WS ``t``
    price: str  # decimal text, zero-padded to 8 dp
    qty: str
    time: int  # ms, or µs when the request carried the header X-MBX-TIME-UNIT: MICROSECOND
    isBuyerMaker: bool  # true -> the seller was the aggressor (side "sell"), as WS ``m``

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

"""Normalized trades.

Trades travel in columnar batches (``pyarrow.Table`` with :data:`TRADE_SCHEMA`): exact ``decimal128(38, 18)``
prices and quantities, integer microsecond UTC timestamps. :class:`Trade` is the one-row view used by tests,
the API and anything that wants Python objects; its price and quantity are ``decimal.Decimal``.
"""

from __future__ import annotations

from decimal import Context, Decimal

import msgspec
import pyarrow as pa

#: Fractional digits kept for prices and quantities. Every documented feed uses at most 10; a wire value
#: with more than 18 is refused (dead letter) rather than rounded.
DEC_SCALE = 18
DECIMAL_TYPE = pa.decimal128(38, DEC_SCALE)
TS_TYPE = pa.timestamp("us", tz="UTC")

TRADE_SCHEMA = pa.schema(
    [
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("native_symbol", pa.string(), nullable=False),
        pa.field("trade_id", pa.uint64(), nullable=False),
        pa.field("price", DECIMAL_TYPE, nullable=False),
        pa.field("qty", DECIMAL_TYPE, nullable=False),
        pa.field("side", pa.string(), nullable=False),
        pa.field("ts", TS_TYPE, nullable=False),
        pa.field("ts_recv", TS_TYPE, nullable=False),
    ]
)


#: ``Decimal.normalize()`` rounds to its context's precision (28 digits by default): stored values have up to
#: 38 (and products 76), so every normalization goes through this context.
EXACT = Context(prec=100)


def canonical_decimal(value: Decimal) -> str:
    """Decimal text with no exponent and no trailing zeros (``117200.000`` -> ``117200``)."""
    text = format(value.normalize(EXACT), "f")
    return "0" if text in ("-0", "0") else text


class Trade(msgspec.Struct, frozen=True):
    exchange: str
    symbol: str
    native_symbol: str
    trade_id: int
    price: Decimal
    qty: Decimal
    side: str
    ts: int  # exchange trade time, microseconds since the Unix epoch, UTC
    ts_recv: int  # receive time, microseconds since the Unix epoch, UTC

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.exchange, self.symbol, self.trade_id)


def trades_from_table(table: pa.Table) -> list[Trade]:
    """Rows of a trade batch as :class:`Trade` objects (decimals normalized, timestamps as int µs)."""
    cols = {name: table.column(name) for name in TRADE_SCHEMA.names}
    ts = cols["ts"].cast(pa.int64()).to_pylist()
    ts_recv = cols["ts_recv"].cast(pa.int64()).to_pylist()
    out = []
    for i, (ex, sym, nat, tid, p, q, side) in enumerate(
        zip(
            cols["exchange"].to_pylist(),
            cols["symbol"].to_pylist(),
            cols["native_symbol"].to_pylist(),
            cols["trade_id"].to_pylist(),
            cols["price"].to_pylist(),
            cols["qty"].to_pylist(),
            cols["side"].to_pylist(),
        )
    ):
        out.append(Trade(ex, sym, nat, tid, p.normalize(EXACT), q.normalize(EXACT), side, ts[i], ts_recv[i]))
    return out


def empty_trades() -> pa.Table:
    return TRADE_SCHEMA.empty_table()

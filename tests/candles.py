"""A plain recomputation of candles from trades, with Decimal, for comparison with the store."""

from __future__ import annotations

from decimal import Context, Decimal, localcontext

from k2.hot.ddl import TIMEFRAME_SECONDS
from k2.model.trade import EXACT



def recompute(trades, timeframe: str | int, offset_s: int = 0) -> dict[tuple[str, str, int], tuple]:
    """trades: iterable of objects with exchange, symbol, trade_id, price, qty, ts (µs).

    ``timeframe`` is a stored timeframe name or a width in seconds; buckets start at multiples of the width
    after ``offset_s`` seconds past the epoch.
    Returns {(exchange, symbol, bucket_seconds): (open, high, low, close, volume, quote_volume, vwap, count)}.
    """
    # Python's default context keeps 28 significant digits; quote volumes need more to stay exact
    with localcontext(Context(prec=120)):
        return _recompute(trades, timeframe, offset_s)


def _recompute(trades, timeframe: str | int, offset_s: int) -> dict[tuple[str, str, int], tuple]:
    width_s = TIMEFRAME_SECONDS[timeframe] if isinstance(timeframe, str) else timeframe
    width, off = width_s * 1_000_000, offset_s * 1_000_000
    groups: dict[tuple[str, str, int], list] = {}
    for t in trades:
        groups.setdefault((t.exchange, t.symbol, ((t.ts - off) // width * width + off) // 1_000_000), []).append(t)
    out = {}
    for key, rows in groups.items():
        rows.sort(key=lambda t: (t.ts, t.trade_id))
        volume = sum((t.qty for t in rows), Decimal(0))
        quote = sum((t.price * t.qty for t in rows), Decimal(0))
        vwap = _div18(quote, volume)
        out[key] = (
            rows[0].price,
            max(t.price for t in rows),
            min(t.price for t in rows),
            rows[-1].price,
            volume,
            quote,
            vwap,
            len(rows),
        )
    return out


def _div18(a: Decimal, b: Decimal) -> Decimal:
    """a / b truncated to 18 decimal places, computed exactly with integers."""
    scale = 10**40
    with localcontext(Context(prec=200)):
        ai, bi = int(a * scale), int(b * scale)
    q = (ai * 10**18) // bi
    return Decimal(q).scaleb(-18)


def stored(store, timeframe: str) -> dict[tuple[str, str, int], tuple]:
    table = store.query_arrow(
        f"SELECT exchange, symbol, toUnixTimestamp(bucket) AS b, open, high, low, close, volume, quote_volume, vwap, "
        f"trade_count FROM ohlcv_{timeframe}"
    )
    out = {}
    for r in table.to_pylist():
        out[(r["exchange"], r["symbol"], r["b"])] = (
            r["open"], r["high"], r["low"], r["close"], r["volume"], r["quote_volume"], r["vwap"], r["trade_count"]
        )
    return out


def normalize(d: dict) -> dict:
    return {k: tuple(v.normalize(EXACT) if isinstance(v, Decimal) else v for v in vals) for k, vals in d.items()}

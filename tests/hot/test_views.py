"""The public views: exact arithmetic on what users naturally write, and cheap daily aggregates."""

from __future__ import annotations

import gc
from decimal import Context, Decimal, localcontext

import pyarrow.compute as pc

from k2.hot.ddl import TIMEFRAMES
from k2.model.trade import Trade
from tests.hot.test_candles_property import to_table

T0 = 1_784_073_600_000_000


def test_price_times_qty_is_exact_in_the_trades_view(store):
    # Decimal(38,18) * Decimal(38,18) overflows silently in ClickHouse (117000.12 * 0.5 gave -28.5...):
    # the view widens price and qty so a user's plain product is exact.
    trades = [
        Trade("binance", "BTC-USDT", "BTCUSDT", 1, Decimal("117000.12"), Decimal("0.5"), "buy", T0, T0),
        Trade("binance", "BTC-USDT", "BTCUSDT", 2, Decimal("99999999999999999999.999999999999999999"), Decimal("99999999999999999999"), "sell", T0, T0),
        Trade("binance", "BTC-USDT", "BTCUSDT", 3, Decimal("0.000000000000000001"), Decimal("0.000000000000000001"), "sell", T0, T0),
    ]
    store.insert_trades(to_table(trades))
    rows = store.query_arrow("SELECT trade_id, price * qty AS pq, quote_qty FROM trades ORDER BY trade_id").to_pylist()
    total = store.query_arrow("SELECT sum(price * qty) AS s FROM trades").column(0)[0].as_py()
    with localcontext(Context(prec=120)):  # Python's default 28 digits would round the expectation
        for t, r in zip(trades, rows):
            assert r["pq"] == r["quote_qty"] == t.price * t.qty, t
        assert total == sum(t.price * t.qty for t in trades)


def test_daily_vwap_from_trades_reads_the_projection(store):
    trades = [
        Trade("kraken", "BTC-USD", "BTC/USD", i, Decimal(100 + i).scaleb(-1), Decimal(i).scaleb(-3), "buy", T0 + i * 3_600_000_000, T0)
        for i in range(1, 60)
    ]
    store.insert_trades(to_table(trades))
    sql = (
        "SELECT exchange, symbol, toDate(ts) AS d, sum(qty) AS v, sum(price * qty) / sum(qty) AS vwap, count() AS n "
        "FROM trades GROUP BY exchange, symbol, d ORDER BY d SETTINGS force_optimize_projection = 1"
    )
    rows = store.query_arrow(sql).to_pylist()  # raises if the projection is not used
    by_day: dict = {}
    for t in trades:
        by_day.setdefault(t.ts // 86_400_000_000, []).append(t)
    assert [r["n"] for r in rows] == [len(v) for _, v in sorted(by_day.items())]
    with localcontext(Context(prec=120)):
        for r, (_, day) in zip(rows, sorted(by_day.items())):
            assert r["v"] == sum(t.qty for t in day)
            exact = sum(t.price * t.qty for t in day) / sum(t.qty for t in day)
            assert 0 <= exact - r["vwap"] < Decimal("1e-35")  # the engine truncates the quotient at 36 places


def test_candle_views_read_their_stores_without_prewhere_and_trades_keeps_it(store):
    # Only key filters ever reach a candle store, and the primary index answers those; deciding PREWHERE anyway
    # cost 0.6-2.4 ms per read (RESULTS.md section 3). `trades` filters on ts and price, not its key.
    trades = [
        Trade("kraken", "BTC-USD", "BTC/USD", i, Decimal(100 + i), Decimal("0.5"), "buy", T0 + i * 90_000_000, T0)
        for i in range(1, 200)
    ]
    store.insert_trades(to_table(trades))

    def plan(sql: str) -> str:
        return store.query_text("EXPLAIN actions = 1 " + sql, "TSV")

    day = f"toDateTime({T0 // 1_000_000}, 'UTC')"
    for tf, _, _ in TIMEFRAMES:
        sql = f"SELECT * FROM ohlcv_{tf} WHERE exchange = 'kraken' AND symbol = 'BTC-USD' AND bucket >= {day}"
        text = plan(sql)
        assert f"ohlcv_{tf}_store" in text and "Prewhere" not in text, tf
    assert "Prewhere" in plan(f"SELECT trade_id FROM trades WHERE ts >= {day} + 3600 AND price > 150")
    # and the candles read this way are the trades' candles
    got = store.query_arrow(
        "SELECT bucket, open, high, low, close, volume, trade_count FROM ohlcv_1h ORDER BY bucket"
    ).to_pylist()
    assert sum(r["trade_count"] for r in got) == len(trades)
    assert got[0]["open"] == Decimal(101) and got[-1]["close"] == Decimal(299)
    assert [r["high"] for r in got] == [max(t.price for t in trades if (t.ts - T0) // 3_600_000_000 == h)
                                        for h in range(len(got))]


def test_every_store_connection_plans_views_inline(store):
    # a read through a view planned as one query costs 1-2 ms less (RESULTS.md section 3); a connection opened
    # without the setting would quietly lose that
    sql = "SELECT toUInt8(getSetting('analyzer_inline_views')) AS v"
    assert store.query_arrow(sql)["v"].to_pylist() == [1]
    pool = store.readers(size=2)
    assert [pool.query_arrow(sql)["v"][0].as_py() for _ in range(3)] == [1, 1, 1]
    assert store.query_text(sql, "CSV").strip() == "1"


def test_arrow_results_own_their_memory(store):
    # chdb's Arrow result is read without a copy; only a compressed result is decompressed into memory the table
    # owns. Uncompressed, these columns pointed into freed memory once other queries and allocations reused it.
    sql = "SELECT number AS n, toString(number) AS s, toDecimal128(number, 18) AS d FROM numbers(2000000)"
    for query in (store.query_arrow, store.readers(size=1).query_arrow):
        table = query(sql)
        gc.collect()
        for _ in range(4):
            query("SELECT number * 7 AS n, repeat('x', 50) AS s FROM numbers(2000000)")
        gc.collect()
        churn = [bytearray(b"\xff" * 50_000_000) for _ in range(3)]
        assert pc.sum(table["n"]).as_py() == 1999999 * 2000000 // 2
        assert table["s"][1999999].as_py() == "1999999"
        assert table["d"][12345].as_py() == Decimal(12345)
        del churn

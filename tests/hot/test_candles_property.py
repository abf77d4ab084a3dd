"""Candles equal a plain Decimal recomputation from the stored trades at every moment: after every insert
batch, after merges (OPTIMIZE ... FINAL) and after a restart, with duplicates, timestamp ties and random
batching."""

from __future__ import annotations

from decimal import Decimal

import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from k2.hot.chdb_store import ChdbStore
from k2.hot.ddl import TIMEFRAMES
from k2.model.trade import DECIMAL_TYPE, EXACT, TRADE_SCHEMA, TS_TYPE, Trade, trades_from_table
from tests.candles import normalize, recompute, stored

T0 = 1_784_073_600_000_000  # 2026-07-15 00:00 UTC
PAIRS = [("binance", "BTC-USDT", "BTCUSDT"), ("kraken", "BTC-USD", "BTC/USD"), ("coinbase", "ETH-USD", "ETH-USD")]
STORE_TABLES = ["trades_store"] + [f"ohlcv_{tf}_store" for tf, _, _ in TIMEFRAMES]


def to_table(trades: list[Trade]) -> pa.Table:
    cols = list(zip(*[(t.exchange, t.symbol, t.native_symbol, t.trade_id, t.price, t.qty, t.side, t.ts, t.ts_recv) for t in trades]))
    return pa.Table.from_arrays(
        [
            pa.array(cols[0], pa.string()),
            pa.array(cols[1], pa.string()),
            pa.array(cols[2], pa.string()),
            pa.array(cols[3], pa.uint64()),
            pa.array(cols[4], DECIMAL_TYPE),
            pa.array(cols[5], DECIMAL_TYPE),
            pa.array(cols[6], pa.string()),
            pa.array(cols[7], pa.int64()).cast(TS_TYPE),
            pa.array(cols[8], pa.int64()).cast(TS_TYPE),
        ],
        schema=TRADE_SCHEMA,
    )


@st.composite
def trade_streams(draw):
    n = draw(st.integers(1, 60))
    trades: list[Trade] = []
    for _ in range(n):
        if trades and draw(st.integers(0, 5)) == 0:
            trades.append(draw(st.sampled_from(trades)))  # an exact duplicate (replay, reconnect snapshot)
            continue
        ex, sym, native = draw(st.sampled_from(PAIRS))
        # few distinct times -> many ties; spread over ~2 days so every timeframe gets several buckets
        ts = T0 + draw(st.sampled_from([0, 1, 59_999_999, 60_000_000, 299_999_999, 3_600_000_000, 86_399_999_999, 86_400_000_000, 90_000_000_000]))
        ts += draw(st.integers(0, 3)) * 1_000
        price = Decimal(draw(st.integers(1, 10**9))).scaleb(-draw(st.integers(0, 8)))
        qty = Decimal(draw(st.integers(1, 10**9))).scaleb(-draw(st.integers(0, 10)))
        tid = draw(st.integers(1, 40))
        trades.append(Trade(ex, sym, native, tid, price, qty, draw(st.sampled_from(["buy", "sell"])), ts, ts + 1000))
    cuts = sorted(set(draw(st.lists(st.integers(1, max(1, n - 1)), max_size=6))))
    return trades, cuts


def first_occurrences(trades: list[Trade]) -> list[Trade]:
    seen, out = set(), []
    for t in trades:
        if t.key not in seen:
            seen.add(t.key)
            out.append(t)
    return out


def check(store, expected_trades):
    stored_trades = trades_from_table(
        store.query_arrow("SELECT exchange, symbol, native_symbol, trade_id, price, qty, side, ts, ts_recv FROM trades").cast(TRADE_SCHEMA)
    )
    keys = [t.key for t in stored_trades]
    assert len(keys) == len(set(keys)), "a trade is stored twice"
    assert {t.key: (t.price, t.qty, t.ts) for t in stored_trades} == {
        t.key: (t.price.normalize(EXACT), t.qty.normalize(EXACT), t.ts) for t in expected_trades
    }
    for tf, _, _ in TIMEFRAMES:
        assert normalize(stored(store, tf)) == normalize(recompute(stored_trades, tf)), tf
        assert normalize(stored(store, tf)) == normalize(recompute(expected_trades, tf)), tf


@pytest.fixture
def shared_store(tmp_path):
    # chdb runs one embedded server per process: only one store may be open at a time
    s = ChdbStore(tmp_path / "data")
    yield s
    s.close()


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(trade_streams())
def test_candles_equal_recomputation_after_every_batch_and_merge(shared_store, stream):
    trades, cuts = stream
    store = shared_store
    for t in STORE_TABLES:
        store.execute(f"TRUNCATE TABLE {t}")
    bounds = [0, *cuts, len(trades)]
    for a, b in zip(bounds, bounds[1:]):
        if a < b:
            store.insert_trades(to_table(trades[a:b]))
            check(store, first_occurrences(trades[:b]))
    # replaying the whole stream again changes nothing
    res = store.insert_trades(to_table(trades))
    assert res.inserted == 0 and res.duplicates == len(trades)
    for t in STORE_TABLES:
        store.execute(f"OPTIMIZE TABLE {t} FINAL")
    check(store, first_occurrences(trades))


def test_candles_survive_restart_and_merges(tmp_path):
    trades = [
        Trade("binance", "BTC-USDT", "BTCUSDT", i, Decimal(100 + (i * 7) % 13).scaleb(-2) + 1, Decimal(i).scaleb(-3), "buy", T0 + (i // 3) * 20_000_000, T0)
        for i in range(1, 200)
    ]
    s = ChdbStore(tmp_path / "d")
    for k in range(0, len(trades), 17):
        s.insert_trades(to_table(trades[k : k + 17]))
    s.close()
    s = ChdbStore(tmp_path / "d")  # restart
    s.insert_trades(to_table(trades[::2]))  # duplicate replay after restart
    for t in STORE_TABLES:
        s.execute(f"OPTIMIZE TABLE {t} FINAL")
    check(s, trades)
    # ties on timestamp: open/close follow trade id among equal times
    one = stored(s, "1m")[("binance", "BTC-USDT", T0 // 1_000_000)]
    first_min = sorted((t for t in trades if t.ts < T0 + 60_000_000), key=lambda t: (t.ts, t.trade_id))
    assert one[0] == first_min[0].price and one[3] == first_min[-1].price
    assert one[7] == len(first_min)
    s.close()

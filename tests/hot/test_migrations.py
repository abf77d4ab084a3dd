from __future__ import annotations

from k2.hot.chdb_store import ChdbStore
from k2.hot.ddl import LATEST_VERSION, TIMEFRAMES

VIEWS = {"trades", "dead_letters", "gaps", *(f"ohlcv_{tf}" for tf, _, _ in TIMEFRAMES)}
CANDLE_COLUMNS = ["exchange", "symbol", "bucket", "open", "high", "low", "close", "volume", "quote_volume", "vwap", "trade_count"]


def names(store, sql):
    return store.query_arrow(sql).column(0).to_pylist()


def test_schema_is_created_once_and_migrations_are_idempotent(tmp_path):
    s = ChdbStore(tmp_path / "d")
    assert s.migrate() == LATEST_VERSION
    assert s.migrate() == LATEST_VERSION
    assert names(s, "SELECT version FROM k2_schema_migrations ORDER BY version") == list(range(1, LATEST_VERSION + 1))
    tables = set(names(s, "SELECT name FROM system.tables WHERE database = currentDatabase()"))
    assert VIEWS <= tables and {"raw_frames", "trades_store"} <= tables
    s.close()
    s = ChdbStore(tmp_path / "d")  # reopen: nothing re-applied
    assert names(s, "SELECT version FROM k2_schema_migrations ORDER BY version") == list(range(1, LATEST_VERSION + 1))
    s.close()


def test_sql_contract_columns(store):
    cols = names(store, "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'trades' ORDER BY position")
    assert cols[:8] == ["exchange", "symbol", "trade_id", "price", "qty", "side", "ts", "ts_recv"]
    for tf, _, _ in TIMEFRAMES:
        cols = names(store, f"SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'ohlcv_{tf}' ORDER BY position")
        assert cols == CANDLE_COLUMNS, tf
    cols = names(store, "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'dead_letters' ORDER BY position")
    assert {"exchange", "ts_recv", "reason", "frame"} <= set(cols)


def test_gaps_view_columns(store):
    cols = names(store, "SELECT name FROM system.columns WHERE database = currentDatabase() AND table = 'gaps' ORDER BY position")
    assert cols[:6] == ["exchange", "symbol", "first_missing_id", "last_missing_id", "detected", "filled"]
    assert {"status", "missing", "recovered", "reason", "ts_before_gap", "ts_after_gap"} <= set(cols)


def test_a_later_gap_row_replaces_the_earlier_one(store):
    from k2.venues.gaps import Gap, RangeSet, gap_table

    gap = Gap("kraken", "BTC-USD", 11, 13, 1_800_000_000_000_000, "live stream jumped from id 10 to 14",
              1_784_073_600_000_000, 1_784_073_600_000_900, RangeSet([(11, 13)]))
    store.insert_gaps(gap_table([gap.row(1_800_000_000_000_000)]))
    gap.missing.remove_ids(__import__("numpy").array([11, 12, 13], dtype="uint64"))
    gap.status, gap.recovered = "filled", 3
    store.insert_gaps(gap_table([gap.row(1_800_000_000_000_001)]))
    rows = store.query_arrow("SELECT symbol, first_missing_id, last_missing_id, filled, status, missing, recovered FROM gaps").to_pylist()
    assert rows == [{"symbol": "BTC-USD", "first_missing_id": 11, "last_missing_id": 13, "filled": True,
                     "status": "filled", "missing": 0, "recovered": 3}]

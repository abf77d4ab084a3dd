from __future__ import annotations

import pytest

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


def test_migration_6_converts_tuple_keyed_candles_and_later_trades_still_order_by_time_then_id(tmp_path, monkeypatch):
    """A store written before migration 6 (open/close keyed on the tuple) is converted in place: every candle keeps
    its values, and trades inserted afterwards, earlier and later in the same buckets and tying on time, still pick
    open and close by (time, trade id), across converted and new states. Buckets whose trades retention has dropped
    keep their candles (converted, not rebuilt)."""
    from decimal import Decimal

    import k2.hot.chdb_store as cs
    from k2.hot import ddl
    from k2.model.trade import Trade
    from tests.candles import normalize, recompute, stored
    from tests.hot.test_candles_property import T0, to_table

    def trade(i, ts, price):
        return Trade("binance", "BTC-USDT", "BTCUSDT", i, Decimal(price), Decimal("0.5"), "buy", ts, ts)

    before = [trade(i, T0 + (i % 7) * 15_000_000 + (i // 7) * 60_000_000, f"{100 + i}.25") for i in range(10, 60)]
    gone = [trade(i, T0 + 40 * 86_400_000_000 + i, f"{300 + i}.5") for i in range(1, 5)]  # a later month
    monkeypatch.setattr(cs, "MIGRATIONS", {v: m for v, m in ddl.MIGRATIONS.items() if v < 6})
    s = ChdbStore(tmp_path / "d")
    s.insert_trades(to_table(before[:25]))
    s.insert_trades(to_table(before[25:] + gone))
    assert "Tuple" in names(s, "SELECT type FROM system.columns WHERE table = 'ohlcv_1m_store' AND name = 'open'")[0]
    old = {tf: normalize(stored(s, tf)) for tf, _, _ in TIMEFRAMES}
    s.execute("DELETE FROM trades_store WHERE trade_id < 5")  # as retention drops them (lightweight DELETE): candles stay
    s.close()
    monkeypatch.undo()

    s = ChdbStore(tmp_path / "d")  # migrates 5 -> 6
    assert names(s, "SELECT max(version) FROM k2_schema_migrations") == [LATEST_VERSION]
    for tf, _, _ in TIMEFRAMES:
        assert names(s, f"SELECT type FROM system.columns WHERE table = 'ohlcv_{tf}_store' AND name = 'open'") == [
            f"AggregateFunction(argMin, Decimal(38, 18), {ddl.ORDER_KEY_TYPE})"
        ], tf
        assert normalize(stored(s, tf)) == old[tf], tf
    leftovers = names(s, "SELECT name FROM system.tables WHERE database = currentDatabase() AND name LIKE 'ohlcv_%_store_v%'")
    assert leftovers == []
    # later trades: one before the first trade of a bucket (new open), one after its last (new close), and one tying
    # on the time of the first with a lower id (it comes first) and a higher id (it does not)
    first = min(before, key=lambda t: (t.ts, t.trade_id))
    late = [trade(1_000_000, T0 - 1, "1.5"), trade(1_000_001, T0 + 3 * 60_000_000 - 1, "2.5"),
            trade(9, first.ts, "3.5"), trade(1_000_002, first.ts, "4.5")]
    s.insert_trades(to_table(late))
    check_trades = before + late
    for tf, _, _ in TIMEFRAMES:
        got = normalize(stored(s, tf))
        want = normalize(recompute(check_trades, tf))
        gone_buckets = normalize(recompute(gone, tf))
        assert got == {**want, **gone_buckets}, tf
    for t in ["trades_store"] + [f"ohlcv_{tf}_store" for tf, _, _ in TIMEFRAMES]:
        s.execute(f"OPTIMIZE TABLE {t} FINAL")
    for tf, _, _ in TIMEFRAMES:
        assert normalize(stored(s, tf)) == {**normalize(recompute(check_trades, tf)), **normalize(recompute(gone, tf))}, tf
    s.close()


def test_migration_6_stopped_between_its_renames_finishes_on_the_next_open(tmp_path, monkeypatch):
    """Killed after the old 1m store was renamed away and before the converted one took its name: the next open
    puts the converted table in place, drops the leftovers, recreates the views, and no candle changes."""
    from decimal import Decimal

    import k2.hot.chdb_store as cs
    from k2.hot import ddl
    from k2.model.trade import Trade
    from tests.hot.test_candles_property import T0, to_table

    monkeypatch.setattr(cs, "MIGRATIONS", {v: m for v, m in ddl.MIGRATIONS.items() if v < 6})
    s = ChdbStore(tmp_path / "d")
    s.insert_trades(to_table([Trade("binance", "BTC-USDT", "BTCUSDT", i, Decimal(100 + i % 17), Decimal("0.5"), "buy",
                                    T0 + i * 1_000_000, T0) for i in range(1, 300)]))
    before = {tf: s.query_arrow(f"SELECT * FROM ohlcv_{tf} ORDER BY ALL") for tf, _, _ in TIMEFRAMES}

    class Killed(Exception):
        pass

    def execute(sql):
        s._exec(sql)
        if sql.startswith("RENAME TABLE ohlcv_1m_store TO"):
            raise Killed

    try:
        ddl._v6_packed_order_keys(execute, s.query_arrow)
    except Killed:
        pass
    assert names(s, "SELECT name FROM system.tables WHERE name LIKE 'ohlcv_1m_store%' ORDER BY name") == [
        "ohlcv_1m_store_v5", "ohlcv_1m_store_v6"]
    s.close()
    monkeypatch.undo()

    s = ChdbStore(tmp_path / "d")
    assert names(s, "SELECT name FROM system.tables WHERE name LIKE 'ohlcv_%_store%' ORDER BY name") == sorted(
        f"ohlcv_{tf}_store" for tf, _, _ in TIMEFRAMES)
    assert len(names(s, "SELECT name FROM system.tables WHERE name LIKE 'ohlcv_%_mv'")) == len(TIMEFRAMES)
    for tf, _, _ in TIMEFRAMES:
        assert s.query_arrow(f"SELECT * FROM ohlcv_{tf} ORDER BY ALL").equals(before[tf]), tf
    s.insert_trades(to_table([Trade("binance", "BTC-USDT", "BTCUSDT", 1000, Decimal("1"), Decimal("1"), "sell", T0, T0)]))  # before every other trade of the day
    assert names(s, "SELECT open FROM ohlcv_1d") == [Decimal("1")]
    s.close()


def _schema(store) -> dict[str, tuple]:
    """Every table and view of the store: its definition (database name taken out) and its columns."""
    db = names(store, "SELECT currentDatabase()")[0]
    tables = store.query_arrow(
        "SELECT name, engine, create_table_query AS q FROM system.tables WHERE database = currentDatabase()"
    ).to_pylist()
    columns = store.query_arrow(
        "SELECT table, name, position, type, default_kind, default_expression, compression_codec "
        "FROM system.columns WHERE database = currentDatabase() ORDER BY table, position"
    ).to_pylist()
    return {
        t["name"]: (t["engine"], t["q"].replace(f"{db}.", ""), [tuple(c.values())[1:] for c in columns if c["table"] == t["name"]])
        for t in tables
    }


def test_a_new_store_is_created_at_the_baseline_exactly_as_the_migrations_would_create_it(tmp_path, monkeypatch):
    """A new store gets ddl.BASELINE in one go instead of replaying every migration: same tables, views, columns,
    codecs, settings, projections and recorded versions. When a migration is added, bring the baseline up to it."""
    import k2.hot.chdb_store as cs
    from k2.hot import ddl

    assert ddl.BASELINE_VERSION == LATEST_VERSION, "add the new migration's effect to ddl.BASELINE"
    executed: list[str] = []
    monkeypatch.setattr(cs, "BASELINE_VERSION", -1)  # the chain, as a store created before the baseline existed
    chain = ChdbStore(tmp_path / "chain")
    want, want_versions = _schema(chain), names(chain, "SELECT description FROM k2_schema_migrations ORDER BY version")
    chain.close()
    monkeypatch.undo()

    real_exec = ChdbStore._exec
    monkeypatch.setattr(ChdbStore, "_exec", lambda self, sql: (executed.append(sql), real_exec(self, sql))[1])
    base = ChdbStore(tmp_path / "base")
    got, got_versions = _schema(base), names(base, "SELECT description FROM k2_schema_migrations ORDER BY version")
    base.close()
    assert any(sql == ddl.BASELINE[0] for sql in executed) and not any(sql.startswith("ALTER") for sql in executed)
    assert sorted(got) == sorted(want)
    for name in want:
        assert got[name] == want[name], name
    assert got_versions == want_versions == [ddl.MIGRATIONS[v][0] for v in sorted(ddl.MIGRATIONS)]


@pytest.mark.parametrize("created", [1, 10, None])
def test_a_baseline_stopped_half_way_is_finished_on_the_next_open(tmp_path, monkeypatch, created):
    """Killed after the first ``created`` statements of the baseline (None: all of them, before the versions were
    recorded): the next open finds the baseline begun, runs it again (every statement IF NOT EXISTS) and records
    the versions; the schema is the one the migrations create."""
    import k2.hot.chdb_store as cs
    from k2.hot import ddl

    created = len(ddl.BASELINE) if created is None else created
    class Killed(Exception):
        pass

    real_exec = ChdbStore._exec
    seen = []

    def exec_and_stop(self, sql):
        if sql in ddl.BASELINE:
            seen.append(sql)
        if len(seen) > created or sql.startswith("INSERT INTO k2_schema_migrations"):
            raise Killed
        real_exec(self, sql)

    monkeypatch.setattr(ChdbStore, "_exec", exec_and_stop)
    with pytest.raises(Killed):
        ChdbStore(tmp_path / "d")
    monkeypatch.undo()
    monkeypatch.setattr(cs, "BASELINE_VERSION", -1)
    reference = ChdbStore(tmp_path / "ref")
    want = _schema(reference)
    reference.close()
    monkeypatch.undo()
    s = ChdbStore(tmp_path / "d")
    assert names(s, "SELECT version FROM k2_schema_migrations ORDER BY version") == list(range(1, LATEST_VERSION + 1))
    assert _schema(s) == want
    s.close()


def test_a_store_whose_first_migration_was_stopped_half_way_goes_on_through_the_migrations(tmp_path, monkeypatch):
    """An older K2 killed during migration 1 left V1-shaped tables and no version: not the baseline's, so the
    migrations run over them (the baseline would keep their old codecs and miss raw_frames.ingest_seq)."""
    import k2.hot.chdb_store as cs
    from k2.hot import ddl

    monkeypatch.setattr(cs, "BASELINE_VERSION", -1)
    reference = ChdbStore(tmp_path / "ref")
    want = _schema(reference)
    reference.close()
    monkeypatch.undo()

    class Killed(Exception):
        pass

    real_exec = ChdbStore._exec

    def exec_v1_part(self, sql):
        if sql == ddl.V1[12]:  # after the tables and the first candle views of migration 1
            raise Killed
        real_exec(self, sql)

    monkeypatch.setattr(cs, "BASELINE_VERSION", -1)
    monkeypatch.setattr(ChdbStore, "_exec", exec_v1_part)
    with pytest.raises(Killed):
        ChdbStore(tmp_path / "d")
    monkeypatch.undo()
    s = ChdbStore(tmp_path / "d")
    assert names(s, "SELECT version FROM k2_schema_migrations ORDER BY version") == list(range(1, LATEST_VERSION + 1))
    assert _schema(s) == want
    s.close()

"""Hot retention (checked, never of un-offloaded rows), views spanning both tiers, time travel."""

from __future__ import annotations

import time
from collections import namedtuple

import pytest
from pyiceberg.expressions import EqualTo

from k2.capture.synth import write_synthetic_capture
from k2.cli import main
from k2.cold.catalog import open_catalog
from k2.cold.offload import Offloader
from k2.cold.tiers import RetentionRefused, apply_retention
from k2.hot.chdb_store import ChdbStore
from k2.hot.ddl import _v9_candle_views_without_prewhere
from k2.pipeline.replay import replay_files
from k2.settings import load_settings
from tests.candles import normalize, recompute, stored
from tests.cold.test_offload import late_trades

T0 = 1_784_073_600_000_000
DAY = 86_400_000_000
NOW = T0 + 20 * DAY
Row = namedtuple("Row", "exchange symbol trade_id price qty ts")


@pytest.fixture
def tiers(tmp_path, parsers):
    # hot keeps 15 days of trades (cutoff T0 + 5 d) and 12 days of candles (cutoff T0 + 8 d)
    settings = load_settings(None, data_dir=str(tmp_path / "data"),
                             cold={"hot_retention_days": 15, "hot_candle_retention_days": 12})
    store = ChdbStore(settings.data_dir)
    for n, (start, seed) in enumerate(((T0, 21), (T0 + 10 * DAY, 22))):
        cap = tmp_path / f"c{n}.jsonl"
        write_synthetic_capture(cap, 3_000, seed=seed, rate=40.0, start_us=start, id_offset=n * 500_000)
        replay_files([cap], store, parsers)
    catalog = open_catalog(settings)
    Offloader(store, catalog, settings, clock=lambda: NOW).run_cycle()
    yield settings, store, catalog
    store.close()


def view_trades(store) -> list[Row]:
    rows = store.query_arrow(
        "SELECT exchange, symbol, trade_id, CAST(price AS Decimal(38, 18)) AS price, CAST(qty AS Decimal(38, 18)) AS qty, "
        "toUnixTimestamp64Micro(ts) AS ts FROM trades"
    ).to_pylist()
    return [Row(**r) for r in rows]


def count(store, sql) -> int:
    return store.query_arrow(sql).column(0)[0].as_py()


def test_retention_drops_only_what_cold_holds_and_views_span_both_tiers(tiers, tmp_path):
    settings, store, catalog = tiers
    before = sorted(view_trades(store))
    assert len(before) == 6_000
    res = apply_retention(store, catalog, settings, NOW)
    assert res.trades_dropped == 3_000 and res.partitions_checked > 0
    assert count(store, "SELECT count() FROM trades_store") == 3_000
    assert res.candle_buckets_dropped["1m"] > 0
    assert count(store, f"SELECT count() FROM ohlcv_1m_store WHERE bucket < toDateTime({(T0 + 8 * DAY) // 1_000_000}, 'UTC')") == 0
    after = sorted(view_trades(store))
    assert after == before  # no duplicate where the tiers overlap, no hole where they meet
    for tf in ("1m", "15m", "1h", "1d"):
        assert normalize(stored(store, tf)) == normalize(recompute(after, tf)), tf
    # migration 9 (candle views without PREWHERE on their hot part) run on a store whose views span both tiers
    # keeps their cold part
    _v9_candle_views_without_prewhere(store.execute, store.query_arrow)
    for tf in ("1m", "1d"):
        view = count(store, f"SELECT create_table_query FROM system.tables WHERE database = 'default' AND name = 'ohlcv_{tf}'")
        assert f"cold_ohlcv_{tf}" in view and "SETTINGS optimize_move_to_prewhere = 0" in view, view
        assert normalize(stored(store, tf)) == normalize(recompute(after, tf)), tf
    vwap = store.query_arrow(
        "SELECT exchange, symbol, toDate(ts) AS d, sum(price * qty) / sum(qty) AS v, count() AS n FROM trades GROUP BY ALL"
    ).num_rows
    assert vwap == count(store, "SELECT count() FROM (SELECT DISTINCT exchange, symbol, toDate(ts) FROM trades)")
    # a reopen must not "repair" candles of months retention thinned
    store.close()
    reopened = ChdbStore(settings.data_dir)
    try:
        assert reopened.repaired_months == []
        assert normalize(stored(reopened, "1m")) == normalize(recompute(after, "1m"))
        assert sorted(view_trades(reopened)) == before
    finally:
        reopened.close()
        tiers_store_reopen(tiers)


def tiers_store_reopen(tiers):
    """The fixture closes its store at teardown; give it an open one again."""
    settings, _, _ = tiers
    tiers[1].__init__(settings.data_dir)


def test_retention_never_drops_rows_not_yet_offloaded(tiers):
    settings, store, catalog = tiers
    store.insert_trades(late_trades(store, 4, T0 + 1_000_000))  # old exchange time, new ingest_seq
    apply_retention(store, catalog, settings, NOW)
    assert count(store, "SELECT count() FROM trades_store WHERE ts < fromUnixTimestamp64Micro(%d, 'UTC')" % (T0 + DAY)) == 4
    assert count(store, "SELECT count() FROM trades") == 6_004
    Offloader(store, catalog, settings, clock=lambda: NOW).run_cycle()
    apply_retention(store, catalog, settings, NOW)
    # the late rows are cold now and dropped, but one: the row holding the highest ingest_seq always stays hot,
    # so the sequence never restarts lower
    assert count(store, "SELECT count() FROM trades_store") == 3_000 + 1
    assert count(store, "SELECT count() FROM trades") == 6_004
    assert count(store, "SELECT count() FROM (SELECT exchange, symbol, trade_id FROM trades GROUP BY ALL HAVING count() > 1)") == 0


def test_retention_refuses_when_cold_lacks_a_row(tiers):
    settings, store, catalog = tiers
    victim = count(store, "SELECT min(trade_id) FROM trades_store WHERE symbol = 'BTC-USDT'")
    catalog.load_table("k2.trades").delete(EqualTo("trade_id", victim))
    with pytest.raises(RetentionRefused, match="BTC-USDT"):
        apply_retention(store, catalog, settings, NOW)
    assert count(store, "SELECT count() FROM trades_store") == 6_000


def test_sql_as_of_reads_an_older_snapshot(tiers, tmp_path, capsys):
    settings, store, catalog = tiers
    time.sleep(0.05)
    between = time.time_ns() // 1000
    time.sleep(0.05)
    store.insert_trades(late_trades(store, 5, T0 + 2_000_000))
    Offloader(store, catalog, settings, clock=lambda: NOW).run_cycle()
    store.close()
    try:
        d = ["--data-dir", str(settings.data_dir)]
        assert main(["sql", "SELECT count() FROM trades", "--format", "csv", "--as-of", str(between), *d]) == 0
        assert capsys.readouterr().out.splitlines()[1] == "6000"
        assert main(["sql", "SELECT count() FROM trades", "--format", "csv", "--as-of", "2200-01-01", *d]) == 0
        assert capsys.readouterr().out.splitlines()[1] == "6005"
        assert main(["sql", "SELECT sum(trade_count) FROM ohlcv_1d", "--format", "csv", "--as-of", str(between), *d]) == 0
        assert capsys.readouterr().out.splitlines()[1] == "6000"
        assert main(["sql", "SELECT count() FROM trades", "--as-of", "2001-01-01", *d]) == 2
        assert "no snapshot" in capsys.readouterr().err
    finally:
        tiers_store_reopen(tiers)

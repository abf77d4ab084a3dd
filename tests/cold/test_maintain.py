"""Cold-tier maintenance: compaction keeps every row and watermark, expiry, orphan removal, hot/cold audit."""

from __future__ import annotations

import shutil
import time
from datetime import date
from decimal import Context, Decimal, localcontext
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from k2.capture.synth import write_synthetic_capture
from k2.cold.catalog import open_catalog
from k2.cold.maintain import (
    ORPHAN_MIN_AGE_MS,
    AuditRow,
    MaintainReport,
    _partition_files,
    audit,
    carried_properties,
    compact,
    compact_table,
    expire_snapshots,
    live_files,
    maintain,
    remove_orphan_files,
    rewrite_partition,
)
from k2.cold.offload import CANDLE_CLOSED_KEY, CANDLE_SEQ_KEY, SEQ_KEY, Offloader, latest_property
from k2.cold.tables import TABLES, TRADES, candle_table
from k2.hot.chdb_store import ChdbStore
from k2.model.trade import TRADE_SCHEMA
from k2.pipeline.replay import replay_files
from k2.settings import load_settings
from tests.cold.test_offload import NOW, T0, check_cold_equals_hot

DAY_US = 86_400_000_000
TRADES_T = "k2.trades"
T0_DATE = date(2026, 7, 15)


@pytest.fixture
def env(tmp_path, parsers):
    """6,000 trades on 2026-07-15 offloaded in commits of 1,000: several small files per partition."""
    settings = load_settings(None, data_dir=str(tmp_path / "data"), cold={"offload_batch_rows": 1_000})
    store = ChdbStore(settings.data_dir)
    cap = tmp_path / "c.jsonl"
    write_synthetic_capture(cap, 6_000, seed=11, rate=40.0)
    replay_files([cap], store, parsers)
    catalog = open_catalog(settings)
    Offloader(store, catalog, settings, clock=lambda: NOW).run_cycle()
    yield settings, store, catalog
    store.close()


def offload(env) -> int:
    settings, store, catalog = env
    return Offloader(store, catalog, settings, clock=lambda: NOW).run_cycle().trades


def more_trades(store, per_pair: int, ts0: int) -> int:
    """``per_pair`` new trades for the first stored symbol of every exchange, ids above the stored ones, from
    ``ts0`` 10 ms apart (few candle buckets: the offload reads late buckets one filter term each)."""
    pairs = store.query_arrow(
        "SELECT exchange, symbol, any(native_symbol) AS native, max(trade_id) AS top FROM trades_store "
        "WHERE (exchange, symbol) IN (SELECT exchange, min(symbol) FROM trades_store GROUP BY exchange) "
        "GROUP BY exchange, symbol ORDER BY exchange, symbol"
    ).to_pylist()
    cols: dict[str, list] = {name: [] for name in TRADE_SCHEMA.names}
    for k, p in enumerate(pairs):
        for i in range(per_pair):
            cols["exchange"].append(p["exchange"])
            cols["symbol"].append(p["symbol"])
            cols["native_symbol"].append(p["native"])
            cols["trade_id"].append(p["top"] + 1 + i)
            cols["price"].append(Decimal(f"{100 + k}.{i:04d}5"))
            cols["qty"].append(Decimal(f"0.{i + 1:06d}7"))
            cols["side"].append("buy" if i % 2 else "sell")
            cols["ts"].append(ts0 + k * 1_000 + i * 10_000)
            cols["ts_recv"].append(ts0 + k * 1_000 + i * 10_000 + 500)
    cols["trade_id"] = pa.array(np.array(cols["trade_id"], dtype=np.uint64))
    table = pa.Table.from_pydict(cols, schema=TRADE_SCHEMA)
    return store.insert_trades(table).inserted


def rows_of(catalog, name: str, snapshot_id: int | None = None) -> list[dict]:
    """Every row of a table (through its metadata), in a canonical order, as Python values."""
    t = catalog.load_table(name).scan(snapshot_id=snapshot_id).to_arrow()
    return t.sort_by([(c, "ascending") for c in t.column_names]).to_pylist()


def file_count(catalog, name: str) -> int:
    t = catalog.load_table(name)
    return len(list(t.scan().plan_files())) if t.current_snapshot() else 0


def disk_files(table) -> set[str]:
    root = Path(table.location().removeprefix("file://"))
    return {str(p) for sub in ("data", "metadata") for p in (root / sub).rglob("*") if p.is_file()}


def local(path: str) -> str:
    return path.removeprefix("file://")


def exact_sum(pairs) -> Decimal:
    with localcontext(Context(prec=120)):
        return sum((p * q for p, q in pairs), Decimal(0))


# -- compaction ------------------------------------------------------------------------------------------
def test_compaction_rewrites_small_files_keeping_rows_and_watermarks(env):
    settings, store, catalog = env
    n = more_trades(store, 40, T0 + 3_600_000_000)  # an hour later: new candle buckets, a late 1d bucket
    assert n == 120 and offload(env) == n
    before = {name: rows_of(catalog, name) for name in TABLES}
    files = {name: file_count(catalog, name) for name in TABLES}
    props = {name: carried_properties(catalog.load_table(name)) for name in TABLES}
    small = _partition_files(catalog.load_table(TRADES_T))
    assert len(small) == 3 and all(len(f) >= 4 for f in small.values())  # every offload commit added files
    assert files[TRADES_T] == sum(len(f) for f in small.values())
    assert files["k2.raw_frames"] >= 6 and files[candle_table("1m")] == 2
    assert props[TRADES_T] == {SEQ_KEY: str(6_000 + n)}
    assert set(props[candle_table("1d")]) == {CANDLE_SEQ_KEY, CANDLE_CLOSED_KEY}

    stats = {name: compact_table(catalog, name) for name in TABLES}
    trades = catalog.load_table(TRADES_T)
    parts = _partition_files(trades)
    assert len(parts) == 3 and all(len(f) == 1 for f in parts.values())  # one file per (day, exchange)
    assert stats[TRADES_T].files_removed == files[TRADES_T] and stats[TRADES_T].files_added == 3
    assert stats[TRADES_T].rows == len(before[TRADES_T]) and stats[TRADES_T].skipped == []
    for name in TABLES:
        assert rows_of(catalog, name) == before[name], name  # value for value
        assert carried_properties(catalog.load_table(name)) == props[name], name
        assert file_count(catalog, name) == files[name] - stats[name].files_removed + stats[name].files_added
        assert file_count(catalog, name) <= files[name]
    assert stats[candle_table("1m")].files_removed == 2 and file_count(catalog, candle_table("1m")) == 1
    assert file_count(catalog, "k2.raw_frames") == 3
    # both snapshots of a rewrite (delete, append) state the watermark; latest_property reads it from them
    newest = sorted(trades.snapshots(), key=lambda s: s.sequence_number)[-2:]
    assert [s.summary.operation.value for s in newest] == ["delete", "append"]
    assert all(s.summary[SEQ_KEY] == props[TRADES_T][SEQ_KEY] for s in newest)
    assert latest_property(trades, SEQ_KEY) == props[TRADES_T][SEQ_KEY]
    # the new files hold their rows in the table's sort order (exchange, symbol, trade_id)
    for (_, values), (f,) in parts.items():
        t = pq.read_table(trades.io.new_input(f.file_path).open())
        keys = list(zip(*(t.column(c).to_pylist() for c in ("exchange", "symbol", "trade_id"))))
        assert keys == sorted(keys) and len(keys) == f.record_count and {k[0] for k in keys} == {values[1]}
    # nothing left to do: no commit at all
    n_snaps = len(trades.snapshots())
    assert all(compact(catalog, name) == 0 for name in TABLES)
    assert len(catalog.load_table(TRADES_T).snapshots()) == n_snaps
    # the next offload continues from the carried watermark: nothing moves twice, cold == hot
    assert offload(env) == 0
    n = more_trades(store, 25, T0 + 7_200_000_000)
    assert offload(env) == n
    check_cold_equals_hot(store, catalog)


def test_compaction_splits_by_target_file_rows(env):
    _, _, catalog = env
    before = rows_of(catalog, TRADES_T)
    files = _partition_files(catalog.load_table(TRADES_T))
    counts = {k: sum(f.record_count for f in v) for k, v in files.items()}
    assert all(len(v) == 3 and 1_500 < counts[k] <= 3_000 for k, v in files.items())
    assert compact(catalog, TRADES_T, target_file_rows=1_500) == 9
    after = _partition_files(catalog.load_table(TRADES_T))
    for key, n in counts.items():  # as few files as the target allows, evenly filled
        sizes = sorted(f.record_count for f in after[key])
        assert len(sizes) == 2 and sum(sizes) == n and sizes[-1] <= 1_500 and sizes[-1] - sizes[0] <= 1
    assert rows_of(catalog, TRADES_T) == before
    # files of ~1,000 rows are not small below 500 rows: a second run leaves them alone
    assert compact(catalog, TRADES_T, target_file_rows=1_500, small_file_rows=500) == 0
    # nor does a run whose rewrite would not end with fewer files (no endless rewriting)
    assert compact(catalog, TRADES_T, target_file_rows=1_500, small_file_rows=2_000) == 0
    assert compact(catalog, TRADES_T, target_file_rows=1_000_000, small_file_rows=2_000) == 6


def test_compaction_never_commits_over_a_concurrent_offload(env):
    settings, store, catalog = env
    stale = catalog.load_table(TRADES_T)
    key = next(k for k in _partition_files(stale) if k[1][1] == "kraken")
    more_trades(store, 5, T0 + 3_600_000_000)
    assert offload(env) > 0  # a newer watermark lands after compaction read the table
    fresh = latest_property(catalog.load_table(TRADES_T), SEQ_KEY)
    before = rows_of(catalog, TRADES_T)
    on_disk = disk_files(stale)
    from pyiceberg.exceptions import CommitFailedException

    with pytest.raises(CommitFailedException):
        rewrite_partition(stale, key, 1_000_000)
    table = catalog.load_table(TRADES_T)
    assert latest_property(table, SEQ_KEY) == fresh and rows_of(catalog, TRADES_T) == before
    # the failed attempt's data files are gone again (only a metadata json the catalog refused may remain)
    assert {p for p in disk_files(table) - on_disk if p.endswith(".parquet")} == set()
    # compaction re-reads the table and succeeds, carrying the fresh watermark
    assert compact(catalog, TRADES_T) > 0
    assert latest_property(catalog.load_table(TRADES_T), SEQ_KEY) == fresh
    assert rows_of(catalog, TRADES_T) == before and offload(env) == 0
    check_cold_equals_hot(store, catalog)


# -- snapshot expiry -------------------------------------------------------------------------------------
def test_expire_snapshots_keeps_current_data_and_watermark(env):
    settings, store, catalog = env
    for name in TABLES:
        compact(catalog, name)
    before = {name: rows_of(catalog, name) for name in TABLES}
    trades = catalog.load_table(TRADES_T)
    snaps = trades.snapshots()
    oldest = min(snaps, key=lambda s: s.sequence_number).snapshot_id
    assert rows_of(catalog, TRADES_T, oldest) != before[TRADES_T]  # time travel works before expiry
    now_ms = time.time_ns() // 1_000_000
    assert expire_snapshots(catalog, TRADES_T, older_than_ms=0) == 0  # nothing is that old
    assert expire_snapshots(catalog, TRADES_T, older_than_ms=now_ms + 1_000, keep_last=3) == len(snaps) - 3
    assert len(catalog.load_table(TRADES_T).snapshots()) == 3
    assert expire_snapshots(catalog, TRADES_T, older_than_ms=now_ms + 1_000) == 2
    trades = catalog.load_table(TRADES_T)
    assert [s.snapshot_id for s in trades.snapshots()] == [trades.current_snapshot().snapshot_id]
    with pytest.raises(ValueError, match="Snapshot not found"):
        trades.scan(snapshot_id=oldest).to_arrow()
    assert rows_of(catalog, TRADES_T) == before[TRADES_T]
    assert latest_property(trades, SEQ_KEY) == "6000"
    for name in TABLES:
        if name != TRADES_T:
            expire_snapshots(catalog, name, now_ms + 1_000)
        t = catalog.load_table(name)
        assert len(t.snapshots()) == 1 and rows_of(catalog, name) == before[name], name
    assert latest_property(catalog.load_table(candle_table("5m")), CANDLE_SEQ_KEY) == "6000"
    assert offload(env) == 0
    check_cold_equals_hot(store, catalog)


def test_expire_keeps_the_newest_snapshot_stating_each_watermark(env):
    settings, store, catalog = env
    trades = catalog.load_table(TRADES_T)
    trades.append(TRADES.as_arrow().empty_table())  # a foreign commit that states no watermark
    assert trades.current_snapshot().summary[SEQ_KEY] is None
    n = len(trades.snapshots())
    assert expire_snapshots(catalog, TRADES_T, time.time_ns() // 1_000_000 + 1_000) == n - 2
    trades = catalog.load_table(TRADES_T)
    assert len(trades.snapshots()) == 2 and latest_property(trades, SEQ_KEY) == "6000"
    assert offload(env) == 0  # the watermark survived: nothing is offloaded twice
    check_cold_equals_hot(store, catalog)


# -- orphan files ----------------------------------------------------------------------------------------
def plant_strays(table) -> list[Path]:
    data_file = next(iter(table.scan().plan_files())).file.file_path
    stray_data = Path(local(data_file)).with_name("00000-9-stray.parquet")
    shutil.copyfile(local(data_file), stray_data)
    stray_meta = Path(local(table.metadata_location)).with_name("99999-stray.metadata.json")
    shutil.copyfile(local(table.metadata_location), stray_meta)
    return [stray_data, stray_meta]


def test_orphan_removal_deletes_only_unreferenced_old_files(env):
    _, _, catalog = env
    table = catalog.load_table(TRADES_T)
    before = rows_of(catalog, TRADES_T)
    strays = plant_strays(table)
    planted_ms = max(p.stat().st_mtime_ns for p in strays) // 1_000_000
    # too young: kept (an in-flight commit's files look exactly like this)
    assert remove_orphan_files(catalog, TRADES_T, planted_ms - 1) == 0 and all(p.exists() for p in strays)
    live = {local(p) for p in live_files(table)}
    assert remove_orphan_files(catalog, TRADES_T, planted_ms + 1_000) == 2  # exactly the two planted files
    assert not any(p.exists() for p in strays)
    assert disk_files(table) == live  # everything referenced is still there, nothing else is
    assert rows_of(catalog, TRADES_T) == before


def test_orphan_removal_after_compaction_and_expiry_leaves_exactly_the_live_files(env):
    settings, store, catalog = env
    old = {local(t.file.file_path) for t in catalog.load_table(TRADES_T).scan().plan_files()}
    before = rows_of(catalog, TRADES_T)
    compact(catalog, TRADES_T)
    future = time.time_ns() // 1_000_000 + 1_000
    assert expire_snapshots(catalog, TRADES_T, future) > 0
    removed = remove_orphan_files(catalog, TRADES_T, future)
    table = catalog.load_table(TRADES_T)
    assert removed > len(old) and not any(Path(p).exists() for p in old)  # old data files, manifests, lists
    assert disk_files(table) == {local(p) for p in live_files(table)}
    assert rows_of(catalog, TRADES_T) == before
    assert remove_orphan_files(catalog, TRADES_T, future) == 0
    assert offload(env) == 0
    check_cold_equals_hot(store, catalog)


# -- audit -----------------------------------------------------------------------------------------------
def hot_expected(store, where: str = "1") -> dict:
    rows = store.query_arrow(
        f"SELECT exchange, toDate(ts) AS day, trade_id, price, qty FROM trades_store WHERE {where}"
    ).to_pylist()
    out: dict = {}
    for r in rows:
        out.setdefault((r["exchange"], r["day"]), []).append(r)
    return {
        k: (len(v), exact_sum((r["price"], r["qty"]) for r in v),
            min(r["trade_id"] for r in v), max(r["trade_id"] for r in v))
        for k, v in out.items()
    }


def test_audit_ok_then_not_offloaded_then_tampered(env):
    _, store, catalog = env
    want = hot_expected(store)
    rows = audit(store, catalog)
    assert len(rows) == 3 and all(isinstance(r, AuditRow) for r in rows)
    for r in rows:
        assert r.status == "ok"
        assert (r.hot_rows, r.hot_quote, r.hot_min_id, r.hot_max_id) == want[(r.exchange, r.day)]
        assert (r.cold_rows, r.cold_quote, r.cold_min_id, r.cold_max_id) == want[(r.exchange, r.day)]
    assert sum(r.hot_rows for r in rows) == 6_000
    # trades not offloaded yet (above the cold watermark) are no difference
    assert more_trades(store, 10, T0 + 3_600_000_000) > 0
    assert audit(store, catalog) == rows
    # tampering with offloaded hot rows: the partition is named, with both sides' values
    kraken = store.query_arrow(
        "SELECT trade_id, price, qty FROM trades_store WHERE exchange = 'kraken' AND ingest_seq <= 6000 "
        "ORDER BY trade_id LIMIT 2"
    ).to_pylist()
    ids = ", ".join(str(r["trade_id"]) for r in kraken)
    store.execute(
        f"ALTER TABLE trades_store UPDATE qty = qty * 2 WHERE exchange = 'kraken' AND trade_id IN ({ids}) "
        "SETTINGS mutations_sync = 2"
    )
    got = {r.exchange: r for r in audit(store, catalog)}
    k = got["kraken"]
    assert k.status == "MISMATCH" and k.hot_rows == k.cold_rows and k.hot_min_id == k.cold_min_id
    assert k.hot_quote - k.cold_quote == exact_sum((r["price"], r["qty"]) for r in kraken)
    assert got["binance"].status == got["coinbase"].status == "ok"
    victim = store.query_arrow(
        "SELECT max(trade_id) AS id FROM trades_store WHERE exchange = 'binance' AND ingest_seq <= 6000"
    ).to_pylist()[0]["id"]
    store.execute(f"DELETE FROM trades_store WHERE exchange = 'binance' AND trade_id = {victim}")
    got = {r.exchange: r for r in audit(store, catalog)}
    b = got["binance"]
    assert b.status == "MISMATCH" and b.hot_rows == b.cold_rows - 1 and b.cold_max_id == victim
    assert b.hot_max_id < victim and got["coinbase"].status == "ok"
    report = MaintainReport(audit=list(got.values()))
    assert not report.ok and {r.exchange for r in report.mismatches} == {"binance", "kraken"}
    assert any(line.strip().startswith("binance 2026-07-15 MISMATCH") for line in report.lines())


def test_audit_cold_only_partitions_and_a_day_cut_by_retention(env):
    settings, store, catalog = env
    day1 = hot_expected(store)
    assert more_trades(store, 30, T0 + DAY_US + 3_600_000_000) > 0  # 2026-07-16
    offload(env)
    # retention through the hot tier's own code path: cutoff 50 s into the first day, mid-partition
    from k2.cold.tiers import apply_retention

    res = apply_retention(store, catalog, settings, T0 + 50_000_000 + int(settings.cold.hot_retention_days * DAY_US))
    assert res.trades_dropped > 0
    rows = audit(store, catalog)
    assert len(rows) == 6 and all(r.status == "ok" for r in rows), [r.line() for r in rows if r.status != "ok"]
    first = [r for r in rows if r.day == T0_DATE]
    remaining = hot_expected(store, f"toDate(ts) = '{T0_DATE}' AND ingest_seq <= 6000")
    for r in first:  # compared on the rows the hot tier still holds, not the whole cold day
        assert (r.hot_rows, r.hot_quote) == (r.cold_rows, r.cold_quote) == remaining[(r.exchange, r.day)][:2]
        assert r.hot_rows < day1[(r.exchange, r.day)][0]
    # the whole first day leaves the hot tier: cold only, counted from the Iceberg metadata
    store.execute(f"DELETE FROM trades_store WHERE toDate(ts) = '{T0_DATE}'")
    rows = audit(store, catalog)
    only = {(r.exchange, r.day): r for r in rows if r.status == "cold only"}
    assert set(only) == set(day1)
    for key, r in only.items():
        assert (r.hot_rows, r.cold_rows, r.hot_quote, r.cold_quote) == (0, day1[key][0], None, None)
    assert [r.status for r in rows if r.day != T0_DATE] == ["ok"] * 3



# -- everything ------------------------------------------------------------------------------------------
def test_maintain_runs_every_step_and_leaves_cold_equal_hot(env):
    settings, store, catalog = env
    more_trades(store, 40, T0 + 3_600_000_000)
    offload(env)
    before = {name: rows_of(catalog, name) for name in TABLES}
    # a young stray file: today's maintain keeps it (it may belong to a commit in flight)
    stray = plant_strays(catalog.load_table(TRADES_T))[0]
    trade_files = file_count(catalog, TRADES_T)
    today = maintain(store, catalog, settings)
    assert today.expired == {name: 0 for name in TABLES} and stray.exists()
    assert today.compacted[TRADES_T].files_removed == trade_files > 3 and today.ok
    assert file_count(catalog, TRADES_T) == 3
    assert {r.status for r in today.audit} == {"ok"}
    # eight days later: snapshots older than 7 days go, then every unreferenced file older than a day
    later = maintain(store, catalog, settings, now_ms=time.time_ns() // 1_000_000 + 8 * 86_400_000)
    assert later.ok and sum(s.files_removed for s in later.compacted.values()) == 0
    assert later.expired[TRADES_T] > 0 and later.orphans_removed[TRADES_T] > 0 and not stray.exists()
    assert ORPHAN_MIN_AGE_MS == 86_400_000
    for name in TABLES:
        t = catalog.load_table(name)
        assert rows_of(catalog, name) == before[name], name
        assert len(t.snapshots()) == 1 and disk_files(t) == {local(p) for p in live_files(t)}, name
    lines = later.lines()
    assert lines[0].startswith("compaction")
    assert any(line.startswith("audit") and "0 MISMATCH" in line for line in lines)
    assert latest_property(catalog.load_table(TRADES_T), SEQ_KEY) == str(later.trade_watermark)
    assert offload(env) == 0
    check_cold_equals_hot(store, catalog)

"""Hot retention, and the views that make the two tiers one query surface.

Retention drops hot trades older than ``cold.hot_retention_days`` only after checking that the cold tier holds
them: for every (exchange, symbol, day) about to be dropped, both tiers must agree on the row count, the exact
``sum(price * qty)`` and the lowest and highest trade id of exactly those rows (the predicate is evaluated on
``ts`` and ``ingest_seq``, which both tiers store identically). Any disagreement refuses the whole drop.
The row with the highest ``ingest_seq`` is always kept, so the sequence never restarts lower after a restart.

What was dropped is recorded in ``k2_tier_state``: trades with ``ts < cutoff AND ingest_seq <= seq``, candle
buckets ``< cutoff``. Cutoffs only move forward, so that one predicate describes every drop so far. The public
views then read the hot tables plus exactly those rows from Iceberg (``IcebergLocal``/``IcebergS3`` engine
tables ``cold_trades``, ``cold_ohlcv_<tf>``): no row twice where the tiers overlap, no hole where they meet.
Before any drop the views stay hot-only (and as fast as before).

``k2 sql --as-of TIME`` reads database ``k2_asof``: the same view names over the cold tables only, with
``iceberg_timestamp_ms`` set to TIME (Iceberg time travel).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path

import pyarrow as pa

from k2.cold.offload import seq_watermark
from k2.cold.tables import NAMESPACE, candle_table
from k2.hot.chdb_store import sql_str
from k2.hot.ddl import DEC, QDEC, TIMEFRAMES, WIDE, candle_view_query, trades_view_select

log = logging.getLogger("k2.retention")
US = 1_000_000
DAY_US = 86_400 * US
ENUM_SIDE = "Enum8('buy' = 1, 'sell' = 2)"


class RetentionRefused(RuntimeError):
    """The cold tier does not hold what the hot tier was about to drop."""


@dataclass
class RetentionResult:
    trades_dropped: int = 0
    trade_cutoff_us: int = 0
    trade_seq: int = 0
    candle_cutoff_us: int = 0
    candle_buckets_dropped: dict[str, int] = field(default_factory=dict)
    partitions_checked: int = 0


# -- cold tables inside the hot engine ---------------------------------------------------------------
def _engine(settings, location: str) -> str:
    if location.startswith("file://"):
        return f"IcebergLocal({sql_str(location[len('file://'):])})"
    if location.startswith("/"):
        return f"IcebergLocal({sql_str(location)})"
    if location.startswith(("s3://", "s3a://")):
        c = settings.cold
        url = location.split("://", 1)[1]
        endpoint = (c.s3_endpoint or "https://s3.amazonaws.com").rstrip("/")
        args = [sql_str(f"{endpoint}/{url}/")]
        if c.s3_access_key_id is not None and c.s3_secret_access_key is not None:
            # ClickHouse hides engine credentials in SHOW CREATE TABLE and system.tables
            args += [sql_str(c.s3_access_key_id.get_secret_value()), sql_str(c.s3_secret_access_key.get_secret_value())]
        return f"IcebergS3({', '.join(args)})"
    raise ValueError(f"cannot read an Iceberg warehouse at {location!r} from ClickHouse")


def files_root(store, location: str) -> None:
    """Make the embedded engine allowed to read a local warehouse.

    chdb runs ClickHouse with ``user_files_path = '.'``: local files (and so ``IcebergLocal`` tables) are readable
    only inside the process's working directory, checked at every query. When the warehouse is not inside it,
    the working directory becomes the store's data directory (which holds the default warehouse). K2's own SQL
    guard refuses every user query that names a file, so this widens nothing a user can reach.
    """
    if not location.startswith(("file://", "/")):
        return
    path = Path(location[len("file://"):] if location.startswith("file://") else location).resolve()
    cwd = Path.cwd().resolve()
    if cwd == path or cwd in path.parents:
        return
    root = Path(store.path).resolve().parent  # the data directory
    if root != path and root not in path.parents:
        root = Path(path.anchor)
    os.chdir(root)
    log.info("working directory is now %s (the embedded engine reads Iceberg files only below it)", root)


def install_cold_tables(store, catalog, settings) -> None:
    """``cold_trades`` and ``cold_ohlcv_<tf>``: the Iceberg tables, readable from the hot engine (idempotent)."""
    files_root(store, catalog.load_table(f"{NAMESPACE}.trades").location())
    names = {"cold_trades": f"{NAMESPACE}.trades", **{f"cold_ohlcv_{tf}": candle_table(tf) for tf, _, _ in TIMEFRAMES}}
    existing = {
        r["name"]: r["create_table_query"]
        for r in store.query_arrow(
            "SELECT name, create_table_query FROM system.tables WHERE database = currentDatabase() AND name LIKE 'cold_%'"
        ).to_pylist()
    }
    for local, ident in names.items():
        engine = _engine(settings, catalog.load_table(ident).location())
        if local in existing:
            if engine.split("(", 1)[0] in existing[local] and _path_of(engine) in existing[local]:
                continue
            store.execute(f"DROP TABLE {local}")
        store.execute(f"CREATE TABLE IF NOT EXISTS {local} ENGINE = {engine}")


def _path_of(engine: str) -> str:
    return engine.split("'", 2)[1] if "'" in engine else engine


def tier_state(store) -> dict[str, tuple[int, int]]:
    """layer -> (cutoff µs, seq) of what retention dropped from the hot tier."""
    rows = store.query_arrow(
        "SELECT layer, toUnixTimestamp64Micro(cutoff) AS c, seq FROM k2_tier_state FINAL"
    ).to_pylist()
    return {r["layer"]: (int(r["c"]), int(r["seq"])) for r in rows}


def _record(store, layer: str, cutoff: int, seq: int, now_us: int) -> None:
    store.execute(
        "INSERT INTO k2_tier_state (layer, cutoff, seq, cold_location, updated) VALUES "
        f"({sql_str(layer)}, fromUnixTimestamp64Micro({cutoff}, 'UTC'), {seq}, '', fromUnixTimestamp64Micro({now_us}, 'UTC'))"
    )


# -- the views -----------------------------------------------------------------------------------------
def install_views(store) -> None:
    """(Re)create ``trades`` and ``ohlcv_*`` as hot + the cold rows retention dropped; hot-only otherwise."""
    state = tier_state(store)
    hot = trades_view_select()
    if "trades" in state:
        cutoff, seq = state["trades"]
        cold = f"""SELECT exchange, symbol, toUInt64(trade_id) AS trade_id,
    CAST(price AS {WIDE}) AS price,
    CAST(qty AS {WIDE}) AS qty,
    CAST(side, {sql_str(ENUM_SIDE)}) AS side, ts, ts_recv, native_symbol, toUInt64(ingest_seq) AS ingest_seq,
    price * qty AS quote_qty
FROM cold_trades
WHERE ts < fromUnixTimestamp64Micro({cutoff}, 'UTC') AND ingest_seq <= {seq}"""
        store.execute(f"CREATE OR REPLACE VIEW trades AS\n{hot}\nUNION ALL\n{cold}")
    else:
        store.execute(f"CREATE OR REPLACE VIEW trades AS\n{hot}")
    for tf, _, _ in TIMEFRAMES:
        layer = f"ohlcv_{tf}"
        hot_c = candle_view_query(tf)
        if layer in state:
            cutoff, _ = state[layer]
            cold_c = _cold_candles_select(f"cold_ohlcv_{tf}") + f"\nWHERE bucket < toDateTime(intDiv({cutoff}, 1000000), 'UTC')"
            store.execute(f"CREATE OR REPLACE VIEW {layer} AS\n{hot_c}\nUNION ALL\n{cold_c}")
        else:
            store.execute(f"CREATE OR REPLACE VIEW {layer} AS\n{hot_c}")


def _cold_candles_select(table: str) -> str:
    return f"""SELECT * FROM (SELECT exchange, symbol, toDateTime(bucket, 'UTC') AS bucket,
    CAST(open AS {DEC}) AS open, CAST(high AS {DEC}) AS high, CAST(low AS {DEC}) AS low, CAST(close AS {DEC}) AS close,
    CAST(volume AS {DEC}) AS volume, CAST(quote_volume AS {QDEC}) AS quote_volume, CAST(vwap AS {DEC}) AS vwap,
    toUInt64(trade_count) AS trade_count
FROM {table})"""


def install_asof_views(store) -> None:
    """Database ``k2_asof``: ``trades`` and ``ohlcv_*`` over the cold tier only (for time travel)."""
    store.execute("CREATE DATABASE IF NOT EXISTS k2_asof")
    store.execute(f"""CREATE OR REPLACE VIEW k2_asof.trades AS
SELECT exchange, symbol, toUInt64(trade_id) AS trade_id, CAST(price AS {WIDE}) AS price, CAST(qty AS {WIDE}) AS qty,
    CAST(side, {sql_str(ENUM_SIDE)}) AS side, ts, ts_recv, native_symbol, toUInt64(ingest_seq) AS ingest_seq,
    price * qty AS quote_qty
FROM default.cold_trades""")
    for tf, _, _ in TIMEFRAMES:
        store.execute(f"CREATE OR REPLACE VIEW k2_asof.ohlcv_{tf} AS\n{_cold_candles_select(f'default.cold_ohlcv_{tf}')}")


# -- retention -------------------------------------------------------------------------------------------
def apply_retention(store, catalog, settings, now_us: int) -> RetentionResult:
    """Drop what the cold tier provably holds and is older than the retention settings; update the views."""
    res = RetentionResult()
    c = settings.cold
    state = tier_state(store)
    trades_tbl = catalog.load_table(f"{NAMESPACE}.trades")
    wm = seq_watermark(trades_tbl)
    top = store.query_arrow("SELECT max(ingest_seq) AS s, count() AS n FROM trades_store").to_pylist()[0]
    prev_cut, prev_seq = state.get("trades", (0, 0))
    cutoff = max(prev_cut, now_us - int(c.hot_retention_days * DAY_US))
    seq = max(prev_seq, min(wm, int(top["s"]) - 1 if top["n"] else -1))
    if seq >= 0 and cutoff > 0:
        res.partitions_checked = _check_cold_holds(store, catalog, cutoff, seq, prev_cut, prev_seq)
        n = store.query_arrow(
            f"SELECT count() AS n FROM trades_store WHERE ts < fromUnixTimestamp64Micro({cutoff}, 'UTC') AND ingest_seq <= {seq}"
        ).to_pylist()[0]["n"]
        if n:
            store.execute(
                f"DELETE FROM trades_store WHERE ts < fromUnixTimestamp64Micro({cutoff}, 'UTC') AND ingest_seq <= {seq}"
            )
        _record(store, "trades", cutoff, seq, now_us)
        res.trades_dropped, res.trade_cutoff_us, res.trade_seq = int(n), cutoff, seq
    from k2.cold.offload import CANDLE_CLOSED_KEY, latest_property

    ccut_want = now_us - int(c.hot_candle_retention_days * DAY_US)
    for tf, _, _ in TIMEFRAMES:
        closed = int(latest_property(catalog.load_table(candle_table(tf)), CANDLE_CLOSED_KEY) or 0)
        prev, _ = state.get(f"ohlcv_{tf}", (0, 0))
        ccut = max(prev, min(ccut_want, closed))  # only buckets the cold tier has closed
        if ccut <= prev or ccut <= 0:
            continue
        n = store.query_arrow(
            f"SELECT count() AS n FROM ohlcv_{tf}_store WHERE bucket < toDateTime(intDiv({ccut}, 1000000), 'UTC')"
        ).to_pylist()[0]["n"]
        if n:
            store.execute(f"DELETE FROM ohlcv_{tf}_store WHERE bucket < toDateTime(intDiv({ccut}, 1000000), 'UTC')")
        _record(store, f"ohlcv_{tf}", ccut, 0, now_us)
        res.candle_buckets_dropped[tf] = int(n)
        res.candle_cutoff_us = ccut
    install_cold_tables(store, catalog, settings)
    install_views(store)
    return res


def _check_cold_holds(store, catalog, cutoff: int, seq: int, prev_cut: int, prev_seq: int) -> int:
    """Per (exchange, symbol, day) of the rows about to be dropped: both tiers agree, or RetentionRefused."""
    pred = (
        f"ts < fromUnixTimestamp64Micro({cutoff}, 'UTC') AND ingest_seq <= {seq} "
        f"AND NOT (ts < fromUnixTimestamp64Micro({prev_cut}, 'UTC') AND ingest_seq <= {prev_seq})"
    )

    def per_day(source: str) -> str:
        # the same aggregate on both tiers (cold ids are Int64, hot ids UInt64)
        return (
            "SELECT exchange, symbol, toDate(ts, 'UTC') AS day, count() AS n, "
            f"toString(sum(CAST(price AS {WIDE}) * CAST(qty AS {WIDE}))) AS quote, "
            f"toUInt64(min(trade_id)) AS lo, toUInt64(max(trade_id)) AS hi "
            f"FROM {source} WHERE {pred} GROUP BY exchange, symbol, day"
        )

    hot = store.query_arrow(per_day("trades_store")).to_pylist()
    if not hot:
        return 0
    from pyiceberg.expressions import And, LessThan, LessThanOrEqual, Not

    # only the rows not dropped before: files holding nothing but earlier drops are skipped by their statistics
    cold_rows = catalog.load_table(f"{NAMESPACE}.trades").scan(
        row_filter=And(
            And(LessThan("ts", cutoff), LessThanOrEqual("ingest_seq", seq)),
            Not(And(LessThan("ts", prev_cut), LessThanOrEqual("ingest_seq", prev_seq))),
        ),
        selected_fields=("exchange", "symbol", "trade_id", "price", "qty", "ts", "ingest_seq"),
    ).to_arrow()
    cold = {
        (r["exchange"], r["symbol"], r["day"]): r
        for r in store.query_arrow_over(
            per_day("Python(table)"), cold_rows if cold_rows.num_rows else _empty_cold()
        ).to_pylist()
    }
    for h in hot:
        key = (h["exchange"], h["symbol"], h["day"])
        c = cold.get(key)
        if c is None or (c["n"], Decimal(c["quote"]), c["lo"], c["hi"]) != (h["n"], Decimal(h["quote"]), h["lo"], h["hi"]):
            raise RetentionRefused(
                f"cold tier does not hold hot {key[0]} {key[1]} {key[2]}: hot {h['n']} rows sum {h['quote']} "
                f"ids {h['lo']}..{h['hi']}, cold {c and (c['n'], c['quote'], c['lo'], c['hi'])}; nothing dropped"
            )
    return len(hot)


def _empty_cold() -> pa.Table:
    from k2.cold.tables import TRADES

    return TRADES.as_arrow().empty_table()

"""Versioned DDL of the hot store. Plain ClickHouse SQL: the same statements run on a ClickHouse server.

Layers:
  raw_frames          every frame as received (audit, re-processing); duplicates collapse on merge or FINAL
  dead_letters_store  frames that failed to parse or validate, with the reason
  trades_store        deduplicated trades. Dedup on (exchange, symbol, trade_id) happens in the writer
                      *before* the insert, because a materialized view sees every inserted block.
  ohlcv_<tf>_store    candle states (AggregatingMergeTree). 1m is built from trades; 5m..1d from the
                      1m blocks (a cascade: the coarser views aggregate a few thousand 1m rows per insert
                      instead of every trade again). open/close are argMin/argMax states keyed on
                      (ts, trade_id) (packed into one UInt128 since migration 6), so merges never make them
                      arbitrary.
  gaps_store          sequence gaps seen by the live feeds; one row per gap, latest status wins
Public views: trades, ohlcv_1m ... ohlcv_1d, dead_letters, gaps.

Migrations are append-only: never edit a released one, add the next version (and bring BASELINE up to it).
"""

from __future__ import annotations

DEC = "Decimal(38, 18)"
WIDE = "Decimal(76, 18)"
QDEC = "Decimal(76, 36)"
TS = "DateTime64(6, 'UTC')"

#: (name, interval SQL, source) in cascade order.
TIMEFRAMES: list[tuple[str, str, int]] = [
    ("1m", "INTERVAL 1 MINUTE", 60),
    ("5m", "INTERVAL 5 MINUTE", 300),
    ("15m", "INTERVAL 15 MINUTE", 900),
    ("30m", "INTERVAL 30 MINUTE", 1800),
    ("1h", "INTERVAL 1 HOUR", 3600),
    ("1d", "INTERVAL 1 DAY", 86400),
]
TIMEFRAME_SECONDS = {name: sec for name, _, sec in TIMEFRAMES}


#: The order key of the open/close states up to migration 5: the tuple (exchange time, trade id).
TUPLE_KEY, TUPLE_KEY_TYPE = "(ts, trade_id)", f"Tuple({TS}, UInt64)"
#: From migration 6 on, the same key packed into one UInt128: exchange time in µs in the high 64 bits, the trade id
#: in the low 64. It orders exactly like the tuple for every time after 1970 (stored times are after 2009) and every
#: UInt64 id, and argMin/argMax compare a plain integer instead of a tuple: the 1m view cost 1.0 -> 0.45 µs per
#: inserted trade (5M trades in 600,000-trade inserts), on the writer's critical path.
ORDER_KEY = "bitOr(bitShiftLeft(toUInt128(toUnixTimestamp64Micro(ts)), 64), toUInt128(trade_id))"
ORDER_KEY_TYPE = "UInt128"


def _candle_store(name: str, key_type: str = TUPLE_KEY_TYPE, table: str | None = None) -> str:
    return f"""CREATE TABLE IF NOT EXISTS {table or f"ohlcv_{name}_store"} (
    exchange LowCardinality(String),
    symbol LowCardinality(String),
    bucket DateTime('UTC'),
    open AggregateFunction(argMin, {DEC}, {key_type}),
    high SimpleAggregateFunction(max, {DEC}),
    low SimpleAggregateFunction(min, {DEC}),
    close AggregateFunction(argMax, {DEC}, {key_type}),
    volume SimpleAggregateFunction(sum, {DEC}),
    quote_volume SimpleAggregateFunction(sum, {QDEC}),
    trade_count SimpleAggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (exchange, symbol, bucket)
SETTINGS index_granularity = 256"""


def _candle_mv(name: str, interval: str, key: str = TUPLE_KEY) -> str:
    if name == "1m":
        return f"""CREATE MATERIALIZED VIEW IF NOT EXISTS ohlcv_1m_mv TO ohlcv_1m_store AS
{_one_minute_select(key)}"""
    return _cascade_mv(name, interval)


def candle_rebuild_sql(month: int) -> str:
    """Re-aggregate one month (YYYYMM) of trades into the 1m store; the cascade refills 5m ... 1d."""
    select = _one_minute_select(ORDER_KEY)
    return f"INSERT INTO ohlcv_1m_store {select.replace('FROM trades_store', f'FROM trades_store WHERE toYYYYMM(ts) = {int(month)}')}"


def _one_minute_select(key: str) -> str:
    return f"""SELECT exchange, symbol,
    toStartOfMinute(toDateTime(ts, 'UTC')) AS bucket,
    argMinState(price, {key}) AS open,
    max(price) AS high,
    min(price) AS low,
    argMaxState(price, {key}) AS close,
    sum(qty) AS volume,
    -- Decimal(76, 18) x Decimal(38, 18) is Decimal(76, 36): exact, 40 integer digits. (Decimal(38, 18) x
    -- Decimal(38, 18) would silently overflow in ClickHouse.)
    sum(CAST(price AS {WIDE}) * qty) AS quote_volume,
    toUInt64(count()) AS trade_count
FROM trades_store
GROUP BY exchange, symbol, bucket"""


def _cascade_mv(name: str, interval: str) -> str:
    return f"""CREATE MATERIALIZED VIEW IF NOT EXISTS ohlcv_{name}_mv TO ohlcv_{name}_store AS
SELECT exchange, symbol,
    toDateTime(toStartOfInterval(bucket, {interval}), 'UTC') AS bucket,
    argMinMergeState(open) AS open,
    max(high) AS high,
    min(low) AS low,
    argMaxMergeState(close) AS close,
    sum(volume) AS volume,
    sum(quote_volume) AS quote_volume,
    sum(trade_count) AS trade_count
FROM ohlcv_1m_store
GROUP BY exchange, symbol, bucket"""


#: Settings of the hot part of every candle view (since migration 9). PREWHERE reads the columns of a query's
#: filter first and the other columns only for the rows that pass. A candle view passes down to its store only
#: filters on the store's sort key (exchange, symbol, bucket): conditions on open, volume and the rest apply to
#: aggregates, above the GROUP BY. The primary index already narrows key filters to a few 256-row granules, so
#: PREWHERE saves no read there, and deciding it cost the planner 0.7-1.6 ms on every read (a day of 1m candles,
#: alternating blocks on one store: 0.6 ms of wall time in a fast hour, 2.4 ms in a slow one; benchmarks/RESULTS.md
#: section 3). The ``trades`` view keeps PREWHERE: its usual filters (ts, price) are not key columns. In a view that
#: also reads the cold tier, the SETTINGS clause applies to the hot SELECT of the UNION only.
CANDLE_VIEW_SETTINGS = "optimize_move_to_prewhere = 0"


def candle_view_query(name: str) -> str:
    """The hot part of the ``ohlcv_<name>`` view as created since migration 9: ``candle_view_select`` and
    ``CANDLE_VIEW_SETTINGS``."""
    return f"{candle_view_select(name)}\nSETTINGS {CANDLE_VIEW_SETTINGS}"


def candle_view_select(name: str) -> str:
    """The hot part of the ``ohlcv_<name>`` view (the cold tier may be UNIONed to it, see k2.cold.tiers)."""
    # One level, arguments qualified with the table alias (`s.volume`) so they never resolve to the output
    # aliases of the same name: a nested subquery did the same job ~2 ms slower per query.
    return f"""SELECT exchange, symbol, bucket,
    argMinMerge(s.open) AS open,
    max(s.high) AS high,
    min(s.low) AS low,
    argMaxMerge(s.close) AS close,
    sum(s.volume) AS volume,
    sum(s.quote_volume) AS quote_volume,
    CAST(sum(s.quote_volume) / sum(s.volume) AS {DEC}) AS vwap,
    sum(s.trade_count) AS trade_count
FROM ohlcv_{name}_store AS s
GROUP BY exchange, symbol, bucket"""


def _candle_view(name: str, select=candle_view_select) -> str:
    """The ``ohlcv_<name>`` view over ``select(name)``: migration 1 released it over ``candle_view_select``."""
    return f"CREATE VIEW IF NOT EXISTS ohlcv_{name} AS\n{select(name)}"


def trades_view_select() -> str:
    """The hot part of the ``trades`` view."""
    return f"""SELECT exchange, symbol, trade_id,
    CAST(price AS {WIDE}) AS price,
    CAST(qty AS {WIDE}) AS qty,
    side, ts, ts_recv, native_symbol, ingest_seq,
    price * qty AS quote_qty  -- over the aliases above: the same expression as a user's price * qty
FROM trades_store"""


def _trades_store(seq_codec: str, dec_codec: str) -> str:
    """trades_store, its sequences (ids, times) compressed with ``seq_codec`` and its decimals with ``dec_codec``."""
    return f"""CREATE TABLE IF NOT EXISTS trades_store (
    exchange LowCardinality(String),
    symbol LowCardinality(String),
    native_symbol LowCardinality(String),
    trade_id UInt64 CODEC({seq_codec}),
    price {DEC} CODEC({dec_codec}),
    qty {DEC} CODEC({dec_codec}),
    side Enum8('buy' = 1, 'sell' = 2),
    ts {TS} CODEC({seq_codec}),
    ts_recv {TS} CODEC({seq_codec}),
    ingest_seq UInt64 CODEC({seq_codec}),
    INDEX ts_minmax ts TYPE minmax GRANULARITY 1,
    INDEX seq_minmax ingest_seq TYPE minmax GRANULARITY 1,
    -- daily aggregates, in exactly the expressions the `trades` view expands to, so "daily volume and VWAP
    -- per pair" written against `trades` is answered from this projection instead of a full scan
    PROJECTION p_daily (
        SELECT exchange, symbol, toDate(ts),
            sum(CAST(qty AS {WIDE})),
            sum(CAST(price AS {WIDE}) * CAST(qty AS {WIDE})),
            min(price), max(price), count()
        GROUP BY exchange, symbol, toDate(ts)
    )
) ENGINE = MergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (exchange, symbol, trade_id)
SETTINGS lightweight_mutation_projection_mode = 'rebuild', deduplicate_merge_projection_mode = 'rebuild'"""


DEAD_LETTERS_STORE = f"""CREATE TABLE IF NOT EXISTS dead_letters_store (
    exchange LowCardinality(String),
    conn String,
    ts_recv {TS},
    reason String,
    frame String CODEC(ZSTD(3)),
    frame_hash UInt64 DEFAULT cityHash64(frame),
    recorded_at {TS} DEFAULT now64(6, 'UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_recv)
ORDER BY (exchange, ts_recv, frame_hash, reason)"""

DEAD_LETTERS_VIEW = """CREATE VIEW IF NOT EXISTS dead_letters AS
SELECT exchange, conn, ts_recv, reason, frame, recorded_at
FROM dead_letters_store FINAL"""


V1: list[str] = [
    f"""CREATE TABLE IF NOT EXISTS raw_frames (
    exchange LowCardinality(String),
    conn LowCardinality(String),
    ts_recv {TS} CODEC(Delta, ZSTD(1)),
    frame String CODEC(ZSTD(1)),
    frame_hash UInt64 DEFAULT cityHash64(frame)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_recv)
ORDER BY (exchange, ts_recv, frame_hash)""",
    DEAD_LETTERS_STORE,
    _trades_store("Delta, ZSTD(1)", "ZSTD(1)"),
    *[_candle_store(name) for name, _, _ in TIMEFRAMES],
    *[_candle_mv(name, interval) for name, interval, _ in TIMEFRAMES],
    # price and qty are widened to Decimal(76, 18) in the view: ClickHouse multiplies Decimal(38, 18) values
    # into Decimal(38, 36) and overflows silently, so a user's plain `price * qty` would be wrong. Widened,
    # `price * qty` is an exact Decimal(76, 36); `quote_qty` is that product, spelled out.
    f"CREATE VIEW IF NOT EXISTS trades AS\n{trades_view_select()}",
    *[_candle_view(name) for name, _, _ in TIMEFRAMES],
    DEAD_LETTERS_VIEW,
]

# Sequence gaps found by the live feeds, and what backfill made of them. A gap's row is written when it is
# detected (status 'pending') and again when it is settled; ReplacingMergeTree keeps the latest version.
V2: list[str] = [
    f"""CREATE TABLE IF NOT EXISTS gaps_store (
    exchange LowCardinality(String),
    symbol LowCardinality(String),
    first_missing_id UInt64,
    last_missing_id UInt64,
    detected {TS},
    status Enum8('pending' = 1, 'filled' = 2, 'partial' = 3, 'unfilled' = 4),
    missing UInt64,
    recovered UInt64,
    reason String,
    ts_before_gap {TS},
    ts_after_gap {TS},
    updated {TS}
) ENGINE = ReplacingMergeTree(updated)
ORDER BY (exchange, symbol, first_missing_id, last_missing_id)""",
    """CREATE VIEW IF NOT EXISTS gaps AS
SELECT exchange, symbol, first_missing_id, last_missing_id, detected,
    CAST(status = 'filled' AS Bool) AS filled, toString(status) AS status, missing, recovered, reason,
    ts_before_gap, ts_after_gap, updated
FROM gaps_store FINAL""",
]

# The cold tier offloads raw frames by a monotonic ingestion sequence, like trades.
V3: list[str] = [
    "ALTER TABLE raw_frames ADD COLUMN IF NOT EXISTS ingest_seq UInt64 DEFAULT 0 CODEC(Delta, ZSTD(1))",
]

# What the hot tier no longer holds because the cold tier does (retention), per layer: rows with
# ts < cutoff AND ingest_seq <= seq were dropped (trades); buckets < cutoff were dropped (candles).
V4: list[str] = [
    f"""CREATE TABLE IF NOT EXISTS k2_tier_state (
    layer LowCardinality(String),
    cutoff {TS},
    seq UInt64,
    cold_location String,
    updated {TS}
) ENGINE = ReplacingMergeTree(updated)
ORDER BY layer""",
]

# The hot raw layer is written once per frame and read rarely (audit, capture export, the offload), so it favours
# write speed. Measured on 3M replayed frames: LZ4 stores a frame in 1.57 µs of CPU, inserts and merges included,
# against 1.79 µs for ZSTD(1), for 1.64x the bytes on disk. The cold tier keeps raw frames as zstd Parquet, and
# hot retention drops them once offloaded. (Metadata only: applies to new and merged parts.)
V5: list[str] = [
    "ALTER TABLE raw_frames MODIFY COLUMN frame String CODEC(LZ4)",
]



def _v6_packed_order_keys(execute, query) -> None:
    """Migration 6: candle states keyed on the packed UInt128 instead of the tuple (see ORDER_KEY).

    Candle stores can hold buckets whose trades the hot tier no longer has (retention), so they are converted, not
    rebuilt: each stored state's bytes are (has, price: 16 bytes, has, exchange time: Int64, trade id: UInt64), all
    little-endian, the on-disk format of argMin/argMax states over a Decimal128 and a (DateTime64, UInt64) tuple.
    The conversion checks that format on every row and that every converted candle finalizes to the same values,
    and stops with an error otherwise. Re-runnable: a store already converted is left as it is.
    """
    for name, _, _ in TIMEFRAMES:
        execute(f"DROP VIEW IF EXISTS ohlcv_{name}_mv")  # nothing flows into the stores while they change
    for name, _, _ in TIMEFRAMES:
        store, new, old = f"ohlcv_{name}_store", f"ohlcv_{name}_store_v6", f"ohlcv_{name}_store_v5"
        types = {
            r["table"]: r["type"]
            for r in query(
                "SELECT table, type FROM system.columns WHERE database = currentDatabase() "
                f"AND table IN ('{store}', '{new}') AND name = 'open'"
            ).to_pylist()
        }
        if store not in types and new in types:  # stopped between the two renames
            execute(f"RENAME TABLE {new} TO {store}")
        elif "Tuple" not in types.get(store, ""):
            pass  # converted already
        elif not query(f"SELECT count() AS n FROM {store}").to_pylist()[0]["n"]:
            execute(f"DROP TABLE {store}")  # empty (a new store): nothing to convert
            execute(_candle_store(name, ORDER_KEY_TYPE))
        else:
            execute(f"DROP TABLE IF EXISTS {new}")
            execute(_candle_store(name, ORDER_KEY_TYPE, table=new))
            bad = query(
                f"SELECT count() AS n FROM {store} WHERE length(unhex(hex(open))) != 34 OR length(unhex(hex(close))) != 34"
            ).to_pylist()[0]["n"]
            if bad:
                raise RuntimeError(f"migration 6: {bad} candle states of {store} are not in the expected format")

            def key(col: str) -> str:
                b = f"unhex(hex({col}))"
                return (f"bitOr(bitShiftLeft(toUInt128(reinterpretAsInt64(substring({b}, 19, 8))), 64), "
                        f"toUInt128(reinterpretAsUInt64(substring({b}, 27, 8))))")

            execute(f"""INSERT INTO {new}
SELECT exchange, symbol, bucket,
    argMinState(finalizeAggregation(open), {key("open")}) AS open, max(high) AS high, min(low) AS low,
    argMaxState(finalizeAggregation(close), {key("close")}) AS close,
    sum(volume) AS volume, sum(quote_volume) AS quote_volume, sum(trade_count) AS trade_count
FROM {store}
GROUP BY exchange, symbol, bucket""")
            check = candle_view_select(name)
            differ = query(
                f"SELECT count() AS n FROM ({check}) AS a FULL OUTER JOIN ({check.replace(f'FROM {store} AS s', f'FROM {new} AS s')}) "
                "AS b USING (exchange, symbol, bucket) WHERE NOT (a.open = b.open AND a.close = b.close AND a.high = b.high "
                "AND a.low = b.low AND a.volume = b.volume AND a.quote_volume = b.quote_volume AND a.trade_count = b.trade_count)"
            ).to_pylist()[0]["n"]
            if differ:
                raise RuntimeError(f"migration 6: {differ} converted candles of {store} differ from the originals")
            execute(f"RENAME TABLE {store} TO {old}")
            execute(f"RENAME TABLE {new} TO {store}")
        execute(f"DROP TABLE IF EXISTS {old}")
    for name, interval, _ in TIMEFRAMES:
        execute(_candle_mv(name, interval, ORDER_KEY))


V6: list = [_v6_packed_order_keys]

# The raw layer is an append-only log read by time range (capture export) and ingestion sequence (offload): bigger
# parts make none of that faster, but merging them rewrites every frame again. A 10M-trade replay spent ~6 of ~51
# CPU-s re-merging its 30 MB raw parts. Parts now stop growing at 64 MiB (compressed): small live parts still merge
# up to that size, larger ones are left alone. Replayed duplicates in different large parts are collapsed by FINAL
# (capture export reads with FINAL) instead of by a merge.
V7: list[str] = [
    "ALTER TABLE raw_frames MODIFY SETTING max_bytes_to_merge_at_max_space_in_pool = 67108864",
]

# LZ4, ClickHouse's own default codec, instead of ZSTD(1) on the trades and the raw layer's other columns. The hot
# tier is written once per trade and read hot; the cold tier keeps zstd Parquet. Three alternating pairs of
# 10M-trade replays: 37.3 against 39.7 CPU-s median (-6%); trades_store takes 1.65x the bytes (20 instead of 12
# bytes a trade). Delta stays in front of LZ4 on the sequences. (Metadata only: applies to new and merged parts.)
V8: list[str] = [
    f"""ALTER TABLE trades_store
    MODIFY COLUMN trade_id UInt64 CODEC(Delta, LZ4),
    MODIFY COLUMN price {DEC} CODEC(LZ4),
    MODIFY COLUMN qty {DEC} CODEC(LZ4),
    MODIFY COLUMN ts {TS} CODEC(Delta, LZ4),
    MODIFY COLUMN ts_recv {TS} CODEC(Delta, LZ4),
    MODIFY COLUMN ingest_seq UInt64 CODEC(Delta, LZ4)""",
    f"""ALTER TABLE raw_frames
    MODIFY COLUMN ts_recv {TS} CODEC(Delta, LZ4),
    MODIFY COLUMN ingest_seq UInt64 DEFAULT 0 CODEC(Delta, LZ4)""",
]


def _v9_candle_views_without_prewhere(execute, query) -> None:
    """Migration 9: the candle views again, their hot part with CANDLE_VIEW_SETTINGS. Through the cold tier's
    ``install_views``, so a view that also reads the cold tier (after hot retention) keeps that part. (Imported here:
    the cold tier's module imports this one.)"""
    from types import SimpleNamespace

    from k2.cold.tiers import install_views

    install_views(SimpleNamespace(execute=execute, query_arrow=query))


V9: list = [_v9_candle_views_without_prewhere]

#: version -> (description, statements). Append only. A statement is SQL, or a function of (execute, query) for a
#: step that has to look at the store first.
MIGRATIONS: dict[int, tuple[str, list[str]]] = {
    1: ("raw frames, dead letters, deduplicated trades, cascaded OHLCV candles, public views", V1),
    2: ("sequence gaps of the live feeds and their backfill (gaps_store, view gaps)", V2),
    3: ("ingestion sequence of raw frames (cold-tier offload key)", V3),
    4: ("hot retention state: what only the cold tier holds (k2_tier_state)", V4),
    5: ("raw frames compressed with LZ4 in the hot tier (write speed; the cold tier keeps zstd)", V5),
    6: ("candle open/close states keyed on (time, trade id) packed into a UInt128 (2x cheaper than a tuple)", V6),
    7: ("raw frame parts stop merging at 64 MiB (an append-only log gains nothing from rewrites)", V7),
    8: ("LZ4 on the hot trades and raw frames (ClickHouse's default codec; the cold tier keeps zstd)", V8),
    9: ("candle views read their stores without PREWHERE (key filters only; saves planning on every read)", V9),
}

#: The schema at version BASELINE_VERSION, created in one go on a new store. Replaying the migrations on an
#: empty store is slow (migration 6 drops and re-creates the candle tables migration 1 has just created), and every
#: new store pays it: each `k2 replay` into a fresh directory, most tests. Opening a new store took ~980 ms with the
#: chain of eight and ~700 ms with these 26 statements (~6 ms each). When a migration is added, the chain runs on new stores
#: too until the baseline is brought up to it: tests/hot/test_migrations.py checks that the baseline is at the latest
#: version and creates exactly what the chain creates.
BASELINE_VERSION = 9
BASELINE: list[str] = [
    # the settings in the order migration 7 left them (index_granularity first)
    f"""CREATE TABLE IF NOT EXISTS raw_frames (
    exchange LowCardinality(String),
    conn LowCardinality(String),
    ts_recv {TS} CODEC(Delta, LZ4),
    frame String CODEC(LZ4),
    frame_hash UInt64 DEFAULT cityHash64(frame),
    ingest_seq UInt64 DEFAULT 0 CODEC(Delta, LZ4)
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_recv)
ORDER BY (exchange, ts_recv, frame_hash)
SETTINGS index_granularity = 8192, max_bytes_to_merge_at_max_space_in_pool = 67108864""",
    DEAD_LETTERS_STORE,
    _trades_store("Delta, LZ4", "LZ4"),
    *[_candle_store(name, ORDER_KEY_TYPE) for name, _, _ in TIMEFRAMES],
    *[_candle_mv(name, interval, ORDER_KEY) for name, interval, _ in TIMEFRAMES],
    f"CREATE VIEW IF NOT EXISTS trades AS\n{trades_view_select()}",
    *[_candle_view(name, candle_view_query) for name, _, _ in TIMEFRAMES],
    DEAD_LETTERS_VIEW,
    *V2,
    *V4,
]

MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS k2_schema_migrations (
    version UInt32,
    description String,
    applied_at DateTime64(6, 'UTC') DEFAULT now64(6, 'UTC')
) ENGINE = MergeTree ORDER BY version"""

LATEST_VERSION = max(MIGRATIONS)

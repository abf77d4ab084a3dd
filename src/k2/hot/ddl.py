"""Versioned DDL of the hot store. Plain ClickHouse SQL: the same statements run on a ClickHouse server.

Layers:
  raw_frames          every frame as received (audit, re-processing); duplicates collapse on merge
  dead_letters_store  frames that failed to parse or validate, with the reason
  trades_store        deduplicated trades. Dedup on (exchange, symbol, trade_id) happens in the writer
                      *before* the insert, because a materialized view sees every inserted block.
  ohlcv_<tf>_store    candle states (AggregatingMergeTree). 1m is built from trades; 5m..1d from the
                      1m blocks (a cascade: the coarser views aggregate a few thousand 1m rows per insert
                      instead of every trade again). open/close are argMin/argMax states keyed on
                      (ts, trade_id), so merges never make them arbitrary.
  gaps_store          sequence gaps seen by the live feeds; one row per gap, latest status wins
Public views: trades, ohlcv_1m ... ohlcv_1d, dead_letters, gaps.

Migrations are append-only: never edit a released one, add the next version.
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


def _candle_store(name: str) -> str:
    return f"""CREATE TABLE IF NOT EXISTS ohlcv_{name}_store (
    exchange LowCardinality(String),
    symbol LowCardinality(String),
    bucket DateTime('UTC'),
    open AggregateFunction(argMin, {DEC}, Tuple({TS}, UInt64)),
    high SimpleAggregateFunction(max, {DEC}),
    low SimpleAggregateFunction(min, {DEC}),
    close AggregateFunction(argMax, {DEC}, Tuple({TS}, UInt64)),
    volume SimpleAggregateFunction(sum, {DEC}),
    quote_volume SimpleAggregateFunction(sum, {QDEC}),
    trade_count SimpleAggregateFunction(sum, UInt64)
) ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(bucket)
ORDER BY (exchange, symbol, bucket)
SETTINGS index_granularity = 256"""


def _candle_mv(name: str, interval: str) -> str:
    if name == "1m":
        return f"""CREATE MATERIALIZED VIEW IF NOT EXISTS ohlcv_1m_mv TO ohlcv_1m_store AS
{_ONE_MINUTE_SELECT}"""
    return _cascade_mv(name, interval)


def candle_rebuild_sql(month: int) -> str:
    """Re-aggregate one month (YYYYMM) of trades into the 1m store; the cascade refills 5m ... 1d."""
    return f"INSERT INTO ohlcv_1m_store {_ONE_MINUTE_SELECT.replace('FROM trades_store', f'FROM trades_store WHERE toYYYYMM(ts) = {int(month)}')}"


_ONE_MINUTE_SELECT = f"""SELECT exchange, symbol,
    toStartOfMinute(toDateTime(ts, 'UTC')) AS bucket,
    argMinState(price, (ts, trade_id)) AS open,
    max(price) AS high,
    min(price) AS low,
    argMaxState(price, (ts, trade_id)) AS close,
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


def _candle_view(name: str) -> str:
    return f"CREATE VIEW IF NOT EXISTS ohlcv_{name} AS\n{candle_view_select(name)}"


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


def trades_view_select() -> str:
    """The hot part of the ``trades`` view."""
    return f"""SELECT exchange, symbol, trade_id,
    CAST(price AS {WIDE}) AS price,
    CAST(qty AS {WIDE}) AS qty,
    side, ts, ts_recv, native_symbol, ingest_seq,
    price * qty AS quote_qty  -- over the aliases above: the same expression as a user's price * qty
FROM trades_store"""


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
    f"""CREATE TABLE IF NOT EXISTS dead_letters_store (
    exchange LowCardinality(String),
    conn String,
    ts_recv {TS},
    reason String,
    frame String CODEC(ZSTD(3)),
    frame_hash UInt64 DEFAULT cityHash64(frame),
    recorded_at {TS} DEFAULT now64(6, 'UTC')
) ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts_recv)
ORDER BY (exchange, ts_recv, frame_hash, reason)""",
    f"""CREATE TABLE IF NOT EXISTS trades_store (
    exchange LowCardinality(String),
    symbol LowCardinality(String),
    native_symbol LowCardinality(String),
    trade_id UInt64 CODEC(Delta, ZSTD(1)),
    price {DEC} CODEC(ZSTD(1)),
    qty {DEC} CODEC(ZSTD(1)),
    side Enum8('buy' = 1, 'sell' = 2),
    ts {TS} CODEC(Delta, ZSTD(1)),
    ts_recv {TS} CODEC(Delta, ZSTD(1)),
    ingest_seq UInt64 CODEC(Delta, ZSTD(1)),
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
SETTINGS lightweight_mutation_projection_mode = 'rebuild', deduplicate_merge_projection_mode = 'rebuild'""",
    *[_candle_store(name) for name, _, _ in TIMEFRAMES],
    *[_candle_mv(name, interval) for name, interval, _ in TIMEFRAMES],
    # price and qty are widened to Decimal(76, 18) in the view: ClickHouse multiplies Decimal(38, 18) values
    # into Decimal(38, 36) and overflows silently, so a user's plain `price * qty` would be wrong. Widened,
    # `price * qty` is an exact Decimal(76, 36); `quote_qty` is that product, spelled out.
    f"CREATE VIEW IF NOT EXISTS trades AS\n{trades_view_select()}",
    *[_candle_view(name) for name, _, _ in TIMEFRAMES],
    """CREATE VIEW IF NOT EXISTS dead_letters AS
SELECT exchange, conn, ts_recv, reason, frame, recorded_at
FROM dead_letters_store FINAL""",
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

#: version -> (description, statements). Append only.
MIGRATIONS: dict[int, tuple[str, list[str]]] = {
    1: ("raw frames, dead letters, deduplicated trades, cascaded OHLCV candles, public views", V1),
    2: ("sequence gaps of the live feeds and their backfill (gaps_store, view gaps)", V2),
    3: ("ingestion sequence of raw frames (cold-tier offload key)", V3),
    4: ("hot retention state: what only the cold tier holds (k2_tier_state)", V4),
    5: ("raw frames compressed with LZ4 in the hot tier (write speed; the cold tier keeps zstd)", V5),
}

MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS k2_schema_migrations (
    version UInt32,
    description String,
    applied_at DateTime64(6, 'UTC') DEFAULT now64(6, 'UTC')
) ENGINE = MergeTree ORDER BY version"""

LATEST_VERSION = max(MIGRATIONS)

"""Iceberg table specs of the cold tier (namespace ``k2``).

| table | partitioned by | sorted by |
|---|---|---|
| ``k2.trades`` | ``day(ts)``, ``exchange`` | exchange, symbol, trade_id |
| ``k2.ohlcv_1m`` ... ``k2.ohlcv_1d`` | ``month(bucket)`` | exchange, symbol, bucket |
| ``k2.raw_frames`` | ``day(ts_recv)``, ``exchange`` | exchange, ts_recv |

Parquet with zstd (level 1: the offload is write-bound; level 3 cost 30% more CPU for ~10% smaller files). The common questions (a day of one pair's trades, a month of candles) read one partition.
Iceberg has no unsigned integers: ``trade_id`` and ``ingest_seq`` are ``long`` (every exchange id fits; the offload
refuses one that does not rather than wrapping it). Decimals are ``decimal(38, 18)`` as in the hot tier; a candle's
``quote_volume`` (``Decimal(76, 36)`` in ClickHouse) is stored as ``decimal(38, 18)`` when that is exact, which it is
whenever prices and quantities together carry at most 18 decimal places (all real exchange data), and the offload
refuses a candle it could not store exactly.
"""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.table.sorting import SortField, SortOrder
from pyiceberg.transforms import DayTransform, IdentityTransform, MonthTransform
from pyiceberg.types import DecimalType, LongType, NestedField, StringType, TimestamptzType

from k2.hot.ddl import TIMEFRAMES

NAMESPACE = "k2"
DEC = DecimalType(38, 18)
TABLE_PROPERTIES = {"write.parquet.compression-codec": "zstd", "write.parquet.compression-level": "1"}
#: candle files hold every pair of a month sorted by (exchange, symbol, bucket): small row groups let a reader
#: skip the other pairs by row-group statistics (a month of one pair's 1m candles reads ~2% of the file)
CANDLE_PROPERTIES = {**TABLE_PROPERTIES, "write.parquet.row-group-limit": "8192"}

TRADES = Schema(
    NestedField(1, "exchange", StringType(), required=True),
    NestedField(2, "symbol", StringType(), required=True),
    NestedField(3, "native_symbol", StringType(), required=True),
    NestedField(4, "trade_id", LongType(), required=True),
    NestedField(5, "price", DEC, required=True),
    NestedField(6, "qty", DEC, required=True),
    NestedField(7, "side", StringType(), required=True),
    NestedField(8, "ts", TimestamptzType(), required=True),
    NestedField(9, "ts_recv", TimestamptzType(), required=True),
    NestedField(10, "ingest_seq", LongType(), required=True),
)
TRADES_SPEC = PartitionSpec(
    PartitionField(8, 1000, DayTransform(), "ts_day"), PartitionField(1, 1001, IdentityTransform(), "exchange")
)
TRADES_SORT = SortOrder(SortField(source_id=1), SortField(source_id=2), SortField(source_id=4))

CANDLES = Schema(
    NestedField(1, "exchange", StringType(), required=True),
    NestedField(2, "symbol", StringType(), required=True),
    NestedField(3, "bucket", TimestamptzType(), required=True),
    NestedField(4, "open", DEC, required=True),
    NestedField(5, "high", DEC, required=True),
    NestedField(6, "low", DEC, required=True),
    NestedField(7, "close", DEC, required=True),
    NestedField(8, "volume", DEC, required=True),
    NestedField(9, "quote_volume", DEC, required=True),
    NestedField(10, "vwap", DEC, required=True),
    NestedField(11, "trade_count", LongType(), required=True),
)
CANDLES_SPEC = PartitionSpec(PartitionField(3, 1000, MonthTransform(), "bucket_month"))
CANDLES_SORT = SortOrder(SortField(source_id=1), SortField(source_id=2), SortField(source_id=3))

RAW = Schema(
    NestedField(1, "exchange", StringType(), required=True),
    NestedField(2, "conn", StringType(), required=True),
    NestedField(3, "ts_recv", TimestamptzType(), required=True),
    NestedField(4, "frame", StringType(), required=True),
)
RAW_SPEC = PartitionSpec(
    PartitionField(3, 1000, DayTransform(), "ts_recv_day"), PartitionField(1, 1001, IdentityTransform(), "exchange")
)
RAW_SORT = SortOrder(SortField(source_id=1), SortField(source_id=3))


def candle_table(tf: str) -> str:
    return f"{NAMESPACE}.ohlcv_{tf}"


TABLES: dict[str, tuple[Schema, PartitionSpec, SortOrder, dict[str, str]]] = {
    f"{NAMESPACE}.trades": (TRADES, TRADES_SPEC, TRADES_SORT, TABLE_PROPERTIES),
    **{candle_table(tf): (CANDLES, CANDLES_SPEC, CANDLES_SORT, CANDLE_PROPERTIES) for tf, _, _ in TIMEFRAMES},
    f"{NAMESPACE}.raw_frames": (RAW, RAW_SPEC, RAW_SORT, TABLE_PROPERTIES),
}


def arrow_schema(schema: Schema) -> pa.Schema:
    return schema.as_arrow()

"""The queries the HTTP API and the notebook client answer, over the views that span both tiers.

Everything here is synchronous and runs in worker threads; the API adds caching and concurrency limits on top.
SQL is built only from validated values: exchange and symbol come from the instrument table, times are
integers, the timeframe is parsed; user text never reaches a statement unquoted.

Answers keep money exact: JSON carries decimals as strings (ClickHouse formats them, trailing zeros trimmed),
Arrow carries decimal128/decimal256 columns. Times are integer microseconds (JSON, CSV) or Arrow
``timestamp[us, UTC]`` columns.
"""

from __future__ import annotations

import base64
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import orjson
import pyarrow as pa

from k2.capture.export import parse_time
from k2.errors import BadRequest, DataError
from k2.hot.chdb_store import sql_str
from k2.hot.ddl import DEC, TIMEFRAME_SECONDS, TIMEFRAMES
from k2.model.instrument import EXCHANGES, InstrumentTable

#: ClickHouse output settings of every JSON answer: exact decimals as strings, integers as numbers; one object per
#: line (answers assembled from rows), or one JSON array
JSON_ROW_SETTINGS = "output_format_json_quote_decimals = 1, output_format_json_quote_64bit_integers = 0"
JSON_SETTINGS = JSON_ROW_SETTINGS + ", output_format_json_array_of_rows = 1"
MAX_TF_SECONDS = 366 * 86_400
#: Monday 1970-01-05 00:00 UTC: weeks start on Mondays (the epoch was a Thursday)
WEEK_OFFSET_S = 4 * 86_400
_TF = re.compile(r"^([1-9][0-9]{0,6})([mhdw])$")
_UNIT_S = {"m": 60, "h": 3600, "d": 86_400, "w": 604_800}
MAX_TIME_S = 2**32 - 1  # ClickHouse DateTime ends in 2106
TRADE_COLUMNS = ("exchange", "symbol", "trade_id", "price", "qty", "side", "ts", "ts_recv")
CANDLE_COLUMNS = ("bucket", "open", "high", "low", "close", "volume", "quote_volume", "vwap", "trade_count")


def now_us() -> int:
    return time.time_ns() // 1000


@dataclass(frozen=True)
class Timeframe:
    name: str
    seconds: int
    source: str  # the stored timeframe it is read from (itself when stored)
    offset: int  # bucket alignment, seconds after the epoch (weeks: Monday)

    @property
    def stored(self) -> bool:
        return self.name == self.source

    def floor(self, t_s: int) -> int:
        return (t_s - self.offset) // self.seconds * self.seconds + self.offset

    def ceil(self, t_s: int) -> int:
        return -((self.offset - t_s) // self.seconds) * self.seconds + self.offset


def parse_timeframe(text: str) -> Timeframe:
    """``1m`` ... ``1d`` (stored) or any whole multiple of a minute: ``2m``, ``90m``, ``4h``, ``3d``, ``1w``."""
    m = _TF.match(text.strip())
    if not m:
        raise BadRequest(
            f"unknown timeframe {text!r}: use a whole number of minutes, hours, days or weeks such as "
            f"{', '.join(n for n, _, _ in TIMEFRAMES)}, 2m, 4h or 1w"
        )
    n, unit = int(m.group(1)), m.group(2)
    seconds = n * _UNIT_S[unit]
    if seconds > MAX_TF_SECONDS:
        raise BadRequest(f"timeframe {text!r} is longer than a year; use at most 52w or 366d")
    name = f"{n}{unit}"
    for stored, sec in TIMEFRAME_SECONDS.items():  # a stored one, whatever its spelling (60m is 1h)
        if sec == seconds and unit != "w":
            return Timeframe(stored, sec, stored, 0)
    offset = WEEK_OFFSET_S if unit == "w" else 0
    source = max(
        (name_ for name_, _, sec in TIMEFRAMES if seconds % sec == 0 and offset % sec == 0),
        key=lambda n_: TIMEFRAME_SECONDS[n_],
    )
    return Timeframe(name, seconds, source, offset)


def time_param(value: str | int | None, name: str) -> int | None:
    """Integer µs or ISO 8601 (UTC) -> µs; None stays None."""
    if value is None or value == "":
        return None
    if isinstance(value, int):
        return value
    try:
        return parse_time(str(value), name)
    except DataError as exc:
        raise BadRequest(str(exc)) from None


def _cursor_encode(ts: int, exchange: str, trade_id: int) -> str:
    raw = orjson.dumps([ts, exchange, trade_id])
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _cursor_decode(cursor: str) -> tuple[int, str, int]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        ts, exchange, trade_id = orjson.loads(raw)
        if not (isinstance(ts, int) and isinstance(trade_id, int) and exchange in EXCHANGES):
            raise ValueError
        return ts, exchange, trade_id
    except Exception:
        raise BadRequest("invalid cursor: pass back the next_cursor of the previous page unchanged") from None


def _bucket_of(row: bytes) -> int:
    return int(row[10 : row.index(b",", 10)])  # rows start with {"bucket":


@dataclass
class CandleAnswer:
    """A JSON candle answer kept as rows, so a refresh can replace its newest buckets only."""

    tf: Timeframe
    exchange: str
    symbol: str
    lo: int  # first bucket, s
    hi: int  # end bound, s
    head: bytes
    rows: list[bytes]
    _body: bytes | None = None

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = self.head[:-1] + b',"candles":[' + b",".join(self.rows) + b"]}"
        return self._body


@dataclass(frozen=True)
class TradesPage:
    body: dict  # {"trades": [...], "next_cursor": str | None}
    rows: int


class QueryService:
    """Validated, exact queries over one store (hot and cold through the views)."""

    def __init__(self, store, instruments: InstrumentTable, *, max_json_rows: int = 100_000,
                 max_bulk_rows: int = 50_000_000, clock=now_us) -> None:
        self.store = store
        self.instruments = instruments
        self.max_json_rows = max_json_rows
        self.max_bulk_rows = max_bulk_rows
        self.clock = clock
        self._by_pair = {(i.exchange, i.symbol): i for i in instruments}

    # -- validation ---------------------------------------------------------------------------------
    def exchange(self, exchange: str | None, *, required: bool) -> str | None:
        if exchange is None or exchange == "":
            if required:
                raise BadRequest(f"exchange is required: one of {', '.join(EXCHANGES)}")
            return None
        ex = exchange.strip().lower()
        if ex not in EXCHANGES:
            raise BadRequest(f"unknown exchange {exchange!r}: use one of {', '.join(EXCHANGES)}")
        return ex

    def symbol(self, exchange: str | None, symbol: str | None) -> str:
        if not symbol:
            raise BadRequest("symbol is required, e.g. BTC-USDT (GET /v1/symbols lists them)")
        sym = symbol.strip().upper().replace("/", "-")
        exchanges = [exchange] if exchange else list(EXCHANGES)
        if not any((ex, sym) in self._by_pair for ex in exchanges):
            where = f" on {exchange}" if exchange else ""
            known = sorted({s for (ex, s) in self._by_pair if ex in exchanges})
            raise BadRequest(
                f"unknown symbol {symbol!r}{where}: use a canonical BASE-QUOTE symbol such as "
                f"{', '.join(known[:6])} (GET /v1/symbols lists all {len(known)})"
            )
        return sym

    def pairs(self, exchange: str | None, symbol: str) -> list[tuple[str, str]]:
        exchanges = [exchange] if exchange else list(EXCHANGES)
        return [(ex, symbol) for ex in exchanges if (ex, symbol) in self._by_pair]

    @staticmethod
    def _range(start: int | None, end: int | None, default_end: int, default_span_us: int) -> tuple[int, int]:
        end = default_end if end is None else end
        start = end - default_span_us if start is None else start
        if start >= end:
            raise BadRequest(f"start ({start}) must be before end ({end}); the range is start <= t < end")
        return max(start, 0), min(end, MAX_TIME_S * 1_000_000)

    # -- candles -------------------------------------------------------------------------------------
    def candle_range(self, tf: Timeframe, start: int | None, end: int | None) -> tuple[int, int, int]:
        """(first bucket s, end bound s, number of buckets) of the buckets B with start <= B < end.

        Default: the 1000 buckets up to now."""
        default_end = (tf.floor(self.clock() // 1_000_000) + tf.seconds) * 1_000_000
        s_us, e_us = self._range(start, end, default_end, 1000 * tf.seconds * 1_000_000)
        lo = tf.ceil(-(-s_us // 1_000_000))  # first bucket start >= start
        hi = tf.ceil(-(-e_us // 1_000_000))  # buckets B < end are those < hi
        return lo, hi, max((hi - lo) // tf.seconds, 0)

    def candles_sql(self, tf: Timeframe, exchange: str, symbol: str, lo: int, hi: int, *, arrow: bool,
                    limit: int | None = None) -> str:
        where = (
            f"v.exchange = {sql_str(exchange)} AND v.symbol = {sql_str(symbol)} "
            f"AND v.bucket >= toDateTime({lo}, 'UTC') AND v.bucket < toDateTime({min(hi, MAX_TIME_S)}, 'UTC')"
        )
        out_time = "toDateTime64(b, 6, 'UTC')" if arrow else "toInt64(toUnixTimestamp(b)) * 1000000"
        tail = f" LIMIT {int(limit)}" if limit else ""
        if tf.stored:
            return (
                f"SELECT {out_time.replace('(b', '(bucket')} AS bucket, open, high, low, close, volume, quote_volume, "
                f"vwap, trade_count FROM ohlcv_{tf.name} AS v WHERE {where} ORDER BY v.bucket{tail}"
            )
        # (columns are qualified: the output aliases `bucket`, `ts` would shadow them in WHERE)
        # exact roll-up of the stored candles: first open and last close by bucket, extremes, sums
        b = (
            f"toDateTime(intDiv(toInt64(toUnixTimestamp(bucket)) - {tf.offset}, {tf.seconds}) * {tf.seconds} "
            f"+ {tf.offset}, 'UTC')"
        )
        return (
            f"SELECT {out_time} AS bucket, argMin(c_open, c_bucket) AS open, max(c_high) AS high, "
            f"min(c_low) AS low, argMax(c_close, c_bucket) AS close, sum(c_volume) AS volume, "
            f"sum(c_qv) AS quote_volume, CAST(sum(c_qv) / sum(c_volume) AS {DEC}) AS vwap, "
            f"sum(c_count) AS trade_count FROM (SELECT {b} AS b, bucket AS c_bucket, open AS c_open, "
            f"high AS c_high, low AS c_low, close AS c_close, volume AS c_volume, quote_volume AS c_qv, "
            f"trade_count AS c_count FROM ohlcv_{tf.source} AS v WHERE {where}) GROUP BY b ORDER BY b{tail}"
        )

    def ohlcv_json(self, tf: Timeframe, exchange: str, symbol: str, start: int | None, end: int | None) -> bytes:
        return self.ohlcv_answer(tf, exchange, symbol, start, end).body

    def ohlcv_answer(self, tf: Timeframe, exchange: str, symbol: str, start: int | None,
                     end: int | None) -> "CandleAnswer":
        lo, hi, n = self.candle_range(tf, start, end)
        if n > self.max_json_rows:
            raise BadRequest(
                f"too large a range: {n} buckets of {tf.name} (at most {self.max_json_rows} in JSON); narrow "
                "start/end, use a coarser timeframe, or ask format=csv, arrow or parquet for a bulk download"
            )
        head = orjson.dumps({"exchange": exchange, "symbol": symbol, "timeframe": tf.name,
                             "start": lo * 1_000_000, "end": hi * 1_000_000})
        rows = self._candle_rows(tf, exchange, symbol, lo, hi) if n else []
        return CandleAnswer(tf, exchange, symbol, lo, hi, head, rows)

    def ohlcv_refresh(self, old: "CandleAnswer", since_us: int) -> "CandleAnswer":
        """``old`` brought up to date after writes of trades at ``since_us`` and later: the buckets before the
        first touched one are kept, the rest read again."""
        first = max(old.tf.floor(since_us // 1_000_000), old.lo)
        if first >= old.hi:
            return old  # the writes fell after the range
        keep = [r for r in old.rows if _bucket_of(r) < first * 1_000_000]
        fresh = self._candle_rows(old.tf, old.exchange, old.symbol, first, old.hi)
        return CandleAnswer(old.tf, old.exchange, old.symbol, old.lo, old.hi, old.head, keep + fresh)

    def _candle_rows(self, tf: Timeframe, exchange: str, symbol: str, lo: int, hi: int) -> list[bytes]:
        """One JSON object (bytes) per candle, oldest first; each starts with ``{"bucket":<µs>,``."""
        sql = self.candles_sql(tf, exchange, symbol, lo, hi, arrow=False)
        text = self.store.query_text(f"{sql} SETTINGS {JSON_ROW_SETTINGS}", "JSONEachRow")
        return [ln for ln in text.encode().split(b"\n") if ln]

    def ohlcv_arrow(self, tf: Timeframe, exchange: str, symbol: str, start: int | None, end: int | None) -> pa.Table:
        return pa.concat_tables(list(self.ohlcv_chunks(tf, exchange, symbol, start, end)))

    def ohlcv_chunks(self, tf: Timeframe, exchange: str, symbol: str, start: int | None, end: int | None,
                     chunk_buckets: int = 100_000) -> Iterator[pa.Table]:
        """Arrow chunks of at most ``chunk_buckets`` candles, oldest first (bounded memory)."""
        lo, hi, n = self.candle_range(tf, start, end)
        if n > self.max_bulk_rows:
            raise BadRequest(f"too large a range: {n} buckets of {tf.name} (at most {self.max_bulk_rows}); narrow start/end")
        step = chunk_buckets * tf.seconds
        first = True
        for a in range(lo, max(hi, lo + 1), step):
            b = min(a + step, hi)
            table = self.store.query_arrow(self.candles_sql(tf, exchange, symbol, a, b, arrow=True))
            if table.num_rows or first:
                first = False
                yield _exact_candles(table)

    # -- trades --------------------------------------------------------------------------------------
    def trades_sql(self, exchange: str | None, symbol: str, s_us: int, e_us: int, *, arrow: bool,
                   after: tuple[int, str, int] | None, limit: int | None, desc: bool = False) -> str:
        where = [f"t.symbol = {sql_str(symbol)}",
                 f"t.ts >= fromUnixTimestamp64Micro(toInt64({s_us}), 'UTC')",
                 f"t.ts < fromUnixTimestamp64Micro(toInt64({e_us}), 'UTC')"]
        if exchange:
            where.append(f"t.exchange = {sql_str(exchange)}")
        if after is not None:
            ts, ex, tid = after
            where.append(
                f"(t.ts, t.exchange, t.trade_id) {'<' if desc else '>'} (fromUnixTimestamp64Micro(toInt64({int(ts)}), 'UTC'), {sql_str(ex)}, "
                f"toUInt64({int(tid)}))"
            )
        times = "ts, ts_recv" if arrow else (
            "toUnixTimestamp64Micro(t.ts) AS ts, toUnixTimestamp64Micro(t.ts_recv) AS ts_recv")
        tail = f" LIMIT {int(limit)}" if limit else ""
        order = "t.ts DESC, t.exchange DESC, t.trade_id DESC" if desc else "t.ts, t.exchange, t.trade_id"
        return (
            f"SELECT toString(t.exchange) AS exchange, toString(t.symbol) AS symbol, t.trade_id AS trade_id, "
            f"t.price AS price, t.qty AS qty, toString(t.side) AS side, {times} FROM trades AS t "
            f"WHERE {' AND '.join(where)} ORDER BY {order}{tail}"
        )

    def trade_range(self, start: int | None, end: int | None) -> tuple[int, int]:
        """Default: the last hour."""
        return self._range(start, end, self.clock() + 1, 3600 * 1_000_000)

    def trades_page(self, exchange: str | None, symbol: str, start: int | None, end: int | None,
                    limit: int, cursor: str | None, desc: bool = False) -> TradesPage:
        """One page in (ts, exchange, trade_id) order (newest first when ``desc``); ``next_cursor`` continues it."""
        if limit < 1 or limit > self.max_json_rows:
            raise BadRequest(f"limit must be between 1 and {self.max_json_rows} (use format=csv/arrow/parquet for bulk)")
        s_us, e_us = self.trade_range(start, end)
        after = _cursor_decode(cursor) if cursor else None
        sql = self.trades_sql(exchange, symbol, s_us, e_us, arrow=False, after=after, limit=limit + 1, desc=desc)
        text = self.store.query_text(f"{sql} SETTINGS {JSON_SETTINGS}", "JSONEachRow").strip()
        rows = orjson.loads(text) if text else []
        nxt = None
        if len(rows) > limit:
            rows = rows[:limit]
            last = rows[-1]
            nxt = _cursor_encode(int(last["ts"]), last["exchange"], int(last["trade_id"]))
        return TradesPage({"trades": rows, "next_cursor": nxt}, len(rows))

    def trades_chunks(self, exchange: str | None, symbol: str, start: int | None, end: int | None,
                      limit: int | None = None, chunk_rows: int = 100_000, desc: bool = False) -> Iterator[pa.Table]:
        """Arrow chunks in (ts, exchange, trade_id) order (or newest first), paged by key (bounded memory)."""
        s_us, e_us = self.trade_range(start, end)
        cap = min(limit or self.max_bulk_rows, self.max_bulk_rows)
        after = None
        sent = 0
        while True:
            want = min(chunk_rows, cap - sent)
            table = self.store.query_arrow(
                self.trades_sql(exchange, symbol, s_us, e_us, arrow=True, after=after, limit=want, desc=desc))
            if table.num_rows or after is None:
                yield _exact_trades(table)
            sent += table.num_rows
            if table.num_rows < want or sent >= cap:
                return
            i = table.num_rows - 1
            after = (table.column("ts").cast(pa.int64())[i].as_py(), table.column("exchange")[i].as_py(),
                     table.column("trade_id")[i].as_py())

    def trades_arrow(self, exchange: str | None, symbol: str, start: int | None, end: int | None,
                     limit: int | None = None) -> pa.Table:
        return pa.concat_tables(list(self.trades_chunks(exchange, symbol, start, end, limit)))

    # -- catalogue -------------------------------------------------------------------------------------
    def symbols(self, exchange: str | None = None) -> list[dict]:
        return [
            {"exchange": i.exchange, "symbol": i.symbol, "native_symbol": i.native_symbol, "base": i.base,
             "quote": i.quote}
            for i in self.instruments if exchange is None or i.exchange == exchange
        ]


def _exact_trades(table: pa.Table) -> pa.Table:
    """Stable Arrow types whatever the engine returned for a chunk (an empty chunk included)."""
    return table.cast(_TRADE_ARROW) if table.schema != _TRADE_ARROW else table


def _exact_candles(table: pa.Table) -> pa.Table:
    return table.cast(_CANDLE_ARROW) if table.schema != _CANDLE_ARROW else table


_TS = pa.timestamp("us", tz="UTC")
_TRADE_ARROW = pa.schema([
    pa.field("exchange", pa.string(), nullable=False),
    pa.field("symbol", pa.string(), nullable=False),
    pa.field("trade_id", pa.uint64(), nullable=False),
    pa.field("price", pa.decimal256(76, 18), nullable=False),
    pa.field("qty", pa.decimal256(76, 18), nullable=False),
    pa.field("side", pa.string(), nullable=False),
    pa.field("ts", _TS, nullable=False),
    pa.field("ts_recv", _TS, nullable=False),
])
_CANDLE_ARROW = pa.schema([
    pa.field("bucket", _TS, nullable=False),
    pa.field("open", pa.decimal128(38, 18), nullable=False),
    pa.field("high", pa.decimal128(38, 18), nullable=False),
    pa.field("low", pa.decimal128(38, 18), nullable=False),
    pa.field("close", pa.decimal128(38, 18), nullable=False),
    pa.field("volume", pa.decimal128(38, 18), nullable=False),
    pa.field("quote_volume", pa.decimal256(76, 36), nullable=False),
    pa.field("vwap", pa.decimal128(38, 18), nullable=False),
    pa.field("trade_count", pa.uint64(), nullable=False),
])

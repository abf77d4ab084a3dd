"""Embedded hot store on chdb (ClickHouse in-process).

One ``ChdbStore`` per process owns the data directory (chdb's rule). One writer thread inserts; readers may
query concurrently on the same session.

Deduplication happens here, before the insert that feeds the candle views: duplicates inside the batch are
dropped (first occurrence wins), then the ids already stored are looked up through the primary key
(exchange, symbol, trade_id) over the id ranges the batch covers, and only new trades are inserted.
"""

from __future__ import annotations

import itertools
import os
import queue
import threading
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from k2.errors import QueryFailed, RetryableStoreError, StoreError
from k2.hot.ddl import (
    BASELINE,
    BASELINE_VERSION,
    LATEST_VERSION,
    MIGRATIONS,
    MIGRATIONS_TABLE,
    TIMEFRAMES,
    candle_rebuild_sql,
)
from k2.hot.store import InsertResult

_TRADE_COLUMNS = "exchange, symbol, native_symbol, trade_id, price, qty, side, ts, ts_recv, ingest_seq"
#: ids of one symbol closer than this are looked up as one range
_RANGE_GAP = 50_000
_MAX_RANGES = 48

RAW_SCHEMA = pa.schema(
    [
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("conn", pa.string(), nullable=False),
        pa.field("ts_recv", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("frame", pa.string(), nullable=False),
    ]
)
GAP_SCHEMA = pa.schema(
    [
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("symbol", pa.string(), nullable=False),
        pa.field("first_missing_id", pa.uint64(), nullable=False),
        pa.field("last_missing_id", pa.uint64(), nullable=False),
        pa.field("detected", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("status", pa.string(), nullable=False),
        pa.field("missing", pa.uint64(), nullable=False),
        pa.field("recovered", pa.uint64(), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("ts_before_gap", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("ts_after_gap", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("updated", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)
DEAD_SCHEMA = pa.schema(
    [
        pa.field("exchange", pa.string(), nullable=False),
        pa.field("conn", pa.string(), nullable=False),
        pa.field("ts_recv", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("reason", pa.string(), nullable=False),
        pa.field("frame", pa.binary(), nullable=False),
    ]
)


#: applied to every connection K2 opens on the store. ``analyzer_inline_views``: the analyzer substitutes a
#: plain view (``trades``, ``ohlcv_*``) with its defining query, so a read through a view is planned as one
#: query instead of an outer query over a separately planned inner one. Planning dominates the small reads a
#: user makes most (a day of 1m candles: ~8 ms of planning in 11-14 ms); inlining took 1-2 ms off it (plan
#: build and optimisation -2.4 ms, analysis +0.5 ms), with the same plan and rows (benchmarks/RESULTS.md section 3).
#: ``output_format_arrow_compression_method = 'lz4_frame'`` (chdb's default, pinned): chdb hands an Arrow result to
#: pyarrow without a copy and without keeping the result alive. Compressed, every column is decompressed into memory
#: pyarrow owns; uncompressed ('none', ~0.5 ms faster on a day of 1m candles), the table's columns point into
#: memory chdb frees once the result object goes, and later reads return other data (seen: a sum of 0..1,999,999
#: wrong, strings empty). Users cannot change it: ``k2 sql`` refuses SETTINGS clauses.
SESSION_SETTINGS = ("analyzer_inline_views = 1", "output_format_arrow_compression_method = 'lz4_frame'")


def open_session(path: Path):
    """A chdb connection to the store at ``path`` with K2's session settings."""
    from chdb import session

    sess = session.Session(str(path))
    sess.query("SET " + ", ".join(SESSION_SETTINGS))  # one statement: every connection opened pays it
    return sess


def sql_str(value: str) -> str:
    """A ClickHouse string literal."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _translate(exc: Exception) -> StoreError:
    text = str(exc)
    if "TIMEOUT_EXCEEDED" in text or "TOO_MANY_SIMULTANEOUS_QUERIES" in text or "MEMORY_LIMIT_EXCEEDED" in text:
        return RetryableStoreError(text)
    return StoreError(text)


class ChdbStore:
    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / "hot"
        self.path.mkdir(parents=True, exist_ok=True)
        try:
            self._session = open_session(self.path)
        except Exception as exc:  # chdb says "Error initializing EmbeddedServer" whatever the cause
            if _locked_by_another(self.path):
                raise StoreError(
                    f"the data directory {Path(data_dir)} is in use by another process (k2 up?): chdb allows one "
                    "process per store. Query the running one through its API (POST /v1/sql, "
                    "k2.connect('http://127.0.0.1:8000')), or stop it first"
                ) from None
            raise _translate(exc) from exc
        # raw frames go through a second connection to the same embedded server, so the writer can store
        # them while the trades of the same batch are inserted (one streaming insert per connection)
        self._raw_session = open_session(self.path)
        self._lock = threading.Lock()  # serialises trade writes (single writer)
        self._raw_lock = threading.Lock()
        self.migrate()
        row = self.query_arrow("SELECT max(ingest_seq) AS s, count() AS n FROM trades_store")
        self._next_seq = (row["s"][0].as_py() + 1) if row["n"][0].as_py() else 1
        row = self.query_arrow("SELECT max(ingest_seq) AS s FROM raw_frames")
        self._next_raw_seq = row["s"][0].as_py() + 1
        self._max_id: dict[str, int] | None = None  # highest stored trade_id per 'exchange<US>symbol'
        self._readers: ReaderPool | None = None
        self._cold_files_root()
        self.repaired_months = self.check_candles(repair=True)

    def _cold_files_root(self) -> None:
        """Views reading a local Iceberg warehouse need it inside the working directory (see k2.cold.tiers)."""
        rows = self.query_arrow(
            "SELECT create_table_query AS q FROM system.tables WHERE database = currentDatabase() "
            "AND name = 'cold_trades'"
        ).to_pylist()
        if rows and "IcebergLocal('" in rows[0]["q"]:
            from k2.cold.tiers import files_root

            files_root(self, rows[0]["q"].split("IcebergLocal('", 1)[1].split("'", 1)[0])

    # -- candle consistency ---------------------------------------------------------------------------
    def check_candles(self, repair: bool = False) -> list[int]:
        """Months (YYYYMM) whose candles do not count every stored trade; rebuilt from trades when ``repair``.

        ClickHouse materialized views are not transactional with their source insert: a process killed between
        the trades part and a candle part leaves the candles short. Parts are atomic, so comparing per-month
        trade counts with each candle store's ``sum(trade_count)`` finds any lost (or doubled) part. A month is
        rebuilt by dropping its candle partitions and re-aggregating its trades into the 1m store, whose
        cascade refills 5m ... 1d. Every candle store is partitioned by month and no bucket spans two months.
        """
        # trades_store is partitioned by toYYYYMM(ts): its per-month counts are metadata (no scan)
        trades = {
            r["m"]: r["n"]
            for r in self.query_arrow(
                "SELECT toUInt32(partition) AS m, sum(rows) AS n FROM system.parts "
                "WHERE database = currentDatabase() AND table = 'trades_store' AND active GROUP BY partition"
            ).to_pylist()
        }
        bad: set[int] = set()
        for name, _, _ in TIMEFRAMES:
            candles = {
                r["m"]: r["n"]
                for r in self.query_arrow(
                    f"SELECT toYYYYMM(bucket) AS m, sum(trade_count) AS n FROM ohlcv_{name}_store GROUP BY m"
                ).to_pylist()
            }
            bad.update(m for m in set(trades) | set(candles) if trades.get(m, 0) != candles.get(m, 0))
        # months retention has thinned (trades dropped once the cold tier held them, old candles dropped) are not
        # comparable: their candles legitimately count trades the hot tier no longer has
        thinned = self.query_arrow(
            "SELECT toYYYYMM(max(cutoff)) AS m, count() AS n FROM k2_tier_state FINAL"
        ).to_pylist()[0]
        if thinned["n"]:
            bad = {m for m in bad if m > thinned["m"]}
        months = sorted(bad)
        if repair:
            for month in months:
                with self._lock:
                    for name, _, _ in TIMEFRAMES:
                        self._exec(f"ALTER TABLE ohlcv_{name}_store DROP PARTITION {month}")
                    self._exec(candle_rebuild_sql(month))
        return months

    # -- schema ---------------------------------------------------------------------------------------
    def migrate(self) -> int:
        self._exec(MIGRATIONS_TABLE)
        done = set(self.query_arrow("SELECT version FROM k2_schema_migrations")["version"].to_pylist())
        if not done and max(MIGRATIONS) == BASELINE_VERSION and self._new_or_baseline_begun():
            # a new store: the latest schema at once (ddl.BASELINE; every statement IF NOT EXISTS, so a baseline
            # stopped half-way is finished by running it again)
            for stmt in BASELINE:
                self._exec(stmt)
            self._record_versions(sorted(MIGRATIONS))
            return LATEST_VERSION
        for version in sorted(MIGRATIONS):
            if version in done:
                continue
            for stmt in MIGRATIONS[version][1]:
                if callable(stmt):
                    stmt(self._exec, self.query_arrow)
                else:
                    self._exec(stmt)
            self._record_versions([version])
        return LATEST_VERSION

    def _record_versions(self, versions: list[int]) -> None:
        self._exec(
            "INSERT INTO k2_schema_migrations (version, description) VALUES "
            + ", ".join(f"({v}, {sql_str(MIGRATIONS[v][0])})" for v in versions)
        )

    def _new_or_baseline_begun(self) -> bool:
        """With no version recorded: True when the store has no table yet, or its tables were begun by the baseline
        (its first table, raw_frames, has ``ingest_seq``, which migration 1 did not create). A store whose
        migration 1 was stopped half-way (an older K2) has neither, and goes on through the migrations."""
        tables = self.query_arrow(
            "SELECT name FROM system.tables WHERE database = currentDatabase() AND name != 'k2_schema_migrations'"
        )["name"].to_pylist()
        if not tables:
            return True
        return bool(
            self.query_arrow(
                "SELECT count() AS n FROM system.columns WHERE database = currentDatabase() "
                "AND table = 'raw_frames' AND name = 'ingest_seq'"
            )["n"][0].as_py()
        )

    # -- writes ---------------------------------------------------------------------------------------
    def insert_trades(self, trades: pa.Table) -> InsertResult:
        n = trades.num_rows
        if n == 0:
            return InsertResult(0, 0)
        with self._lock:
            batch = trades.combine_chunks()
            g = _PairGroups(batch)  # computed once, used by every step below
            keep = _first_occurrences(g) & self._not_stored(g)
            rows = np.flatnonzero(keep)
            k = len(rows)
            fresh = None
            if k:
                fresh = batch if k == n else batch.take(pa.array(rows))
                seq = pa.array(np.arange(self._next_seq, self._next_seq + k, dtype=np.uint64))
                self._insert_arrow(f"INSERT INTO trades_store ({_TRADE_COLUMNS})", fresh.append_column("ingest_seq", seq))
                self._next_seq += k
                self._note_max_ids(g, None if k == n else keep)
            return InsertResult(k, n - k, fresh)

    def _note_max_ids(self, g: _PairGroups, keep: np.ndarray | None) -> None:
        """Raise the cached highest stored id of each pair to the highest id just inserted (``keep``: the rows
        inserted, None for all)."""
        max_ids = self._stored_max_ids()
        kept = None if keep is None else keep[g.order]
        for pair, ids, sl in g.groups():
            if kept is not None:
                ids = ids[kept[sl]]
                if not len(ids):
                    continue
            top = int(ids[-1]) if g.increasing else int(ids.max())
            if top > max_ids.get(pair, -1):
                max_ids[pair] = top

    def insert_raw(self, frames: pa.Table) -> None:
        """Safe to call concurrently with ``insert_trades`` (its own connection)."""
        if frames.num_rows:
            with self._raw_lock:
                n = frames.num_rows
                seq = pa.array(np.arange(self._next_raw_seq, self._next_raw_seq + n, dtype=np.uint64))
                self._insert_arrow(
                    "INSERT INTO raw_frames (exchange, conn, ts_recv, frame, ingest_seq)",
                    frames.append_column("ingest_seq", seq),
                    self._raw_session,
                    # ReplacingMergeTree would otherwise collapse identical rows of the block on insert: one more
                    # pass copying every frame (2.4M frames: 3.83 -> 2.60 CPU-s without it), for rows that are
                    # identical only when a capture repeats a line within one insert. Those stay until a merge or FINAL collapses
                    # them, like the duplicates of two inserts always did (capture export reads with FINAL).
                    settings="optimize_on_insert = 0",
                )
                self._next_raw_seq += n

    def insert_dead_letters(self, dead: pa.Table) -> None:
        if dead.num_rows:
            with self._lock:
                self._insert_arrow("INSERT INTO dead_letters_store (exchange, conn, ts_recv, reason, frame)", dead)

    def insert_gaps(self, gaps: pa.Table) -> None:
        if gaps.num_rows:
            with self._lock:
                self._insert_arrow(f"INSERT INTO gaps_store ({', '.join(GAP_SCHEMA.names)})", gaps)

    def last_trades(self) -> list[tuple[str, str, int, int]]:
        """(exchange, symbol, highest stored trade_id, its exchange time in µs) per pair: where feeds resume."""
        rows = self.query_arrow(
            "SELECT exchange, symbol, max(trade_id) AS id, toUnixTimestamp64Micro(argMax(ts, trade_id)) AS ts "
            "FROM trades_store GROUP BY exchange, symbol ORDER BY exchange, symbol"
        ).to_pylist()
        return [(r["exchange"], r["symbol"], int(r["id"]), int(r["ts"])) for r in rows]

    def _stored_max_ids(self) -> dict[str, int]:
        if self._max_id is None:
            rows = self.query_arrow(
                "SELECT exchange, symbol, max(trade_id) AS m FROM trades_store GROUP BY exchange, symbol"
            ).to_pylist()
            self._max_id = {f"{r['exchange']}{_SEP}{r['symbol']}": r["m"] for r in rows}
        return self._max_id

    def _not_stored(self, g: _PairGroups) -> np.ndarray:
        """True for the rows whose (exchange, symbol, trade_id) is not in the store yet.

        Ids above the highest stored id of their pair cannot be stored yet, so only the others are looked up,
        through the primary key over the id ranges they cover. (The cache only ever over-estimates after
        deletes, which costs a lookup, never a duplicate.)
        """
        fresh = np.ones(len(g.tid), dtype=bool)
        max_ids = self._stored_max_ids()
        conds = []
        for pair, ids, _ in g.groups():
            top = max_ids.get(pair)
            if top is None:
                continue
            if g.increasing:  # sorted already: the usual batch, every id new, costs one comparison
                if ids[0] > top:
                    continue
                ids = ids[: np.searchsorted(ids, np.uint64(top), side="right")]
            else:
                ids = np.sort(ids[ids <= top])
            if len(ids) == 0:
                continue
            e, s = pair.split(_SEP, 1)
            for lo, hi in _ranges(ids):
                conds.append(
                    f"(exchange = {sql_str(e)} AND symbol = {sql_str(s)} AND trade_id BETWEEN {lo} AND {hi})"
                )
        if not conds:
            return fresh
        existing = self.query_arrow(
            "SELECT concat(exchange, {sep}, symbol) AS pair, groupArray(trade_id) AS ids FROM trades_store "
            "WHERE {where} GROUP BY pair".format(sep=sql_str(_SEP), where=" OR ".join(conds))
        ).to_pylist()
        found = {row["pair"]: np.asarray(row["ids"], dtype=np.uint64) for row in existing}
        for pair, ids, sl in g.groups():
            if pair in found:
                fresh[g.order[sl]] &= ~np.isin(ids, found[pair])
        return fresh

    def _insert_arrow(self, statement: str, table: pa.Table, sess=None, settings: str = "") -> None:
        # chdb's Python() table function reads the Arrow table in place (no IPC copy): ~35% faster than
        # streaming ArrowStream bytes for the raw frames.
        cols = ", ".join(f"`{name}`" for name in table.column_names)
        try:
            sql = f"{statement} SELECT {cols} FROM Python(table)" + (f" SETTINGS {settings}" if settings else "")
            _with_arrow(sess or self._session, sql, table, "TabSeparated")
        except Exception as exc:  # chdb raises RuntimeError and friends
            raise _translate(exc) from exc

    # -- reads ----------------------------------------------------------------------------------------
    def _exec(self, sql: str) -> None:
        try:
            self._session.query(sql, "TabSeparated")
        except Exception as exc:
            raise _translate(exc) from exc

    def execute(self, sql: str) -> None:
        """Trusted internal statement (DDL, maintenance). Never reached by user SQL."""
        with self._lock:
            self._exec(sql)
            self._max_id = None  # the statement may have removed trades

    def query_arrow(self, sql: str) -> pa.Table:
        return _query_arrow(self._session, sql)

    def query_arrow_over(self, sql: str, table: pa.Table) -> pa.Table:
        """Trusted query over an Arrow table, named ``Python(table)`` in ``sql`` (chdb reads it in place)."""
        try:
            return _with_arrow(self._session, sql, table, "ArrowTable")
        except Exception as exc:
            raise QueryFailed(_clean(str(exc))) from exc

    def query_text(self, sql: str, fmt: str) -> str:
        return _query_text(self._session, sql, fmt)

    def readers(self, size: int = 4) -> "ReaderPool":
        """Read connections of their own (the API's): chdb runs one query at a time per connection, so reads on
        the main one would wait behind the writer's inserts and behind each other."""
        if self._readers is None:
            self._readers = ReaderPool(self.path, size)
        return self._readers

    def close(self) -> None:
        if self._readers is not None:
            self._readers.close()
            self._readers = None
        if self._session is not None:
            self._raw_session.close()
            self._session.close()
            self._session = None  # type: ignore[assignment]

    def __enter__(self) -> "ChdbStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class ReaderPool:
    """Up to ``size`` extra connections to the same embedded server, each used by one query at a time.

    Same answers as the store's own ``query_arrow``/``query_text`` (a committed insert is visible to every
    connection); queries on different connections run in parallel.
    """

    def __init__(self, path: Path, size: int) -> None:
        self.path = path
        self.size = max(1, size)
        self._free: queue.LifoQueue = queue.LifoQueue()
        self._all: list = []
        self._lock = threading.Lock()
        self._closed = False

    def _take(self):
        try:
            return self._free.get_nowait()
        except queue.Empty:
            pass
        with self._lock:
            if self._closed:
                raise StoreError("the store is closed")
            if len(self._all) < self.size:
                sess = open_session(self.path)
                self._all.append(sess)
                return sess
        return self._free.get()

    def query_arrow(self, sql: str) -> pa.Table:
        sess = self._take()
        try:
            return _query_arrow(sess, sql)
        finally:
            self._free.put(sess)

    def query_text(self, sql: str, fmt: str) -> str:
        sess = self._take()
        try:
            return _query_text(sess, sql, fmt)
        finally:
            self._free.put(sess)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for sess in self._all:
                try:
                    sess.close()
                except Exception:
                    pass
            self._all.clear()


def _query_arrow(sess, sql: str) -> pa.Table:
    try:
        return sess.query(sql, "ArrowTable")
    except Exception as exc:
        _clear(sess)
        raise QueryFailed(_clean(str(exc))) from exc


def _query_text(sess, sql: str, fmt: str) -> str:
    try:
        res = sess.query(sql, fmt)
    except Exception as exc:
        _clear(sess)
        raise QueryFailed(_clean(str(exc))) from exc
    return res.bytes().decode("utf-8", "replace") if hasattr(res, "bytes") else str(res)


def _clear(sess) -> None:
    # chdb was seen returning a failed query's leftover result to the next query (engine-notes.md)
    try:
        sess.query("SELECT 1", "TabSeparated")
    except Exception:
        pass


_arrow_names = itertools.count()


def _with_arrow(session, sql: str, table: pa.Table, fmt: str):
    """Run ``sql`` with ``Python(table)`` bound to ``table``.

    chdb finds the object named in ``Python(name)`` by looking through Python frames, and was seen picking up a
    ``table`` of *another thread* (an insert read the offload's table). Every call therefore binds its table
    under a name used nowhere else, in a namespace of its own.
    """
    name = f"k2_arrow_{next(_arrow_names)}"
    ns = {name: table, "_session": session, "_sql": sql.replace("Python(table)", f"Python({name})"), "_fmt": fmt}
    exec("_out = _session.query(_sql, _fmt)", ns)
    return ns["_out"]


def _locked_by_another(path: Path) -> bool:
    """Whether another process holds the embedded server's lock on ``path`` (ClickHouse's ``status`` file)."""
    import fcntl

    status = path / "status"
    if not status.exists():
        return False
    try:
        with open(status, "rb") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            fcntl.flock(fh, fcntl.LOCK_UN)
        return False
    except OSError:
        return True


def _clean(text: str) -> str:
    text = text.strip()
    for marker in ("Stack trace", "\n0. "):
        if marker in text:
            text = text.split(marker, 1)[0].strip()
    return text


_SEP = "\x1f"


def _pair_codes(batch: pa.Table) -> tuple[list[str], np.ndarray]:
    """Distinct 'exchange<US>symbol' strings of a single-chunk batch and each row's index into them.

    Exchange and symbol are dictionary-encoded apart (a handful of values each) and combined as small integers:
    joining the two strings of every row and encoding the result cost ~60 ms per 600,000 trades, on the writer's
    critical path."""
    ex = pc.dictionary_encode(batch.column("exchange").combine_chunks())
    sym = pc.dictionary_encode(batch.column("symbol").combine_chunks())
    ns = len(sym.dictionary)
    combo = ex.indices.to_numpy(zero_copy_only=False).astype(np.int64) * ns + sym.indices.to_numpy(zero_copy_only=False)
    present = np.zeros(len(ex.dictionary) * ns, dtype=bool)
    present[combo] = True
    used = np.flatnonzero(present)
    remap = np.zeros(len(present), dtype=np.int32)
    remap[used] = np.arange(len(used), dtype=np.int32)
    exchanges, symbols = ex.dictionary.to_pylist(), sym.dictionary.to_pylist()
    return [f"{exchanges[u // ns]}{_SEP}{symbols[u % ns]}" for u in used.tolist()], remap[combo]


class _PairGroups:
    """The rows of a single-chunk trade batch grouped by (exchange, symbol): one stable sort of small integer codes
    (a radix sort), the trade ids in that order, and whether every pair's ids are strictly increasing in batch order,
    as a live feed or a capture delivers them. Then there is no duplicate inside the batch, and each pair's lowest
    and highest ids are its first and last."""

    def __init__(self, batch: pa.Table) -> None:
        self.pairs, self.codes = _pair_codes(batch)
        self.tid = batch.column("trade_id").to_numpy()
        small = self.codes.astype(np.int16) if len(self.pairs) <= np.iinfo(np.int16).max else self.codes
        self.order = np.argsort(small, kind="stable")
        c = self.codes[self.order]
        self.grouped_tid = t = self.tid[self.order]
        cut = np.flatnonzero(c[1:] != c[:-1]) + 1
        self.starts = np.concatenate(([0], cut)) if len(c) else cut
        self.ends = np.concatenate((cut, [len(c)])) if len(c) else cut
        self.increasing = bool(np.all((t[1:] > t[:-1]) | (c[1:] != c[:-1])))

    def groups(self):
        """(pair, its ids in batch order, their slice of ``order``) per pair."""
        for a, b in zip(self.starts.tolist(), self.ends.tolist()):
            yield self.pairs[self.codes[self.order[a]]], self.grouped_tid[a:b], slice(a, b)


def _first_occurrences(g: _PairGroups) -> np.ndarray:
    """True for the first occurrence in the batch of each (pair, trade_id)."""
    keep = np.ones(len(g.tid), dtype=bool)
    if len(g.tid) < 2 or g.increasing:
        return keep
    order = np.lexsort((np.arange(len(g.tid)), g.tid, g.codes))
    c, t = g.codes[order], g.tid[order]
    dup = (c[1:] == c[:-1]) & (t[1:] == t[:-1])
    keep[order[1:][dup]] = False
    return keep


def _ranges(ids: np.ndarray) -> list[tuple[int, int]]:
    """Cover sorted ids with at most ``_MAX_RANGES`` [lo, hi] ranges, splitting at the widest gaps."""
    if len(ids) == 0:
        return []
    gaps = np.diff(ids)  # sorted, so never negative: no uint64 wrap-around
    cut = np.flatnonzero(gaps > _RANGE_GAP)
    if len(cut) >= _MAX_RANGES:
        cut = np.sort(cut[np.argsort(gaps[cut])[-(_MAX_RANGES - 1) :]])
    starts = np.concatenate(([0], cut + 1))
    ends = np.concatenate((cut, [len(ids) - 1]))
    return [(int(ids[s]), int(ids[e])) for s, e in zip(starts, ends)]

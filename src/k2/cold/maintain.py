"""Cold-tier maintenance (``k2 maintain``): compaction, snapshot expiry, orphan removal, hot/cold audit.

PyIceberg 0.12 has no compaction and no orphan removal, and its ``expire_snapshots`` deletes no files (see
``engine-notes.md``); this module builds the three from what PyIceberg does offer, always through the table's
metadata, never by guessing from directory contents.

Compaction: overwrite by partition
    Every offload commit adds at least one small file per partition it touches, so a busy day ends with
    hundreds of them. A partition holding more than one file below ``small_file_rows`` is rewritten in ONE
    transaction: ``delete`` with a filter on the partition's values (the row range its transforms select, e.g.
    ``exchange = 'binance' AND ts in [day, day + 1)``), then one fast-append snapshot holding the same rows,
    sorted by the table's sort order, in ``ceil(rows / target_file_rows)`` files. The rows written are the
    rows the same filter scans at the same snapshot, so delete and append cover exactly the same rows (the
    count is checked against the files' record counts before anything is committed). Partition values are
    the only filter Iceberg can drop whole files by (no row is rewritten twice), which is why a partition,
    not an arbitrary range, is the unit. Readers see either the old files or the new ones, never both.

How watermarks survive
    The offload keeps its exactly-once watermarks in snapshot summary properties (``k2.offload.ingest_seq``,
    ``k2.candles.*``) and reads them back with :func:`k2.cold.offload.latest_property`, the newest snapshot
    carrying the key. Both snapshots of a compaction carry every ``k2.*`` property forward with the values
    the table had, so the newest snapshot always states the watermark, and expiring older snapshots can never
    lose it. A stale value would be fatal (the next offload would move rows twice), so a compaction commit
    must not be re-applied on top of a commit it has not seen: PyIceberg 0.12 retries a failed commit by
    re-running the snapshot producers on the refreshed table *with the original snapshot properties*, which
    would publish an older watermark over a concurrent offload's newer one. Compaction therefore commits with
    ``commit.retry.num-retries = 0`` (set on its private in-memory copy of the table; nothing is written to
    the catalog) and the catalog's optimistic check on the branch head refuses the commit if anything else
    landed since it read the table; it then re-reads and tries again (up to ``COMPACT_ATTEMPTS`` times).
    Expiry additionally never expires the newest snapshot carrying each ``k2.*`` key. The other way round, a
    delete + append transaction (the offload's candle commit) begun before a compaction commit of the same
    partition fails PyIceberg's retry validation ("Added data files were found matching the filter"); the
    offload's next cycle redoes it (its recomputation is idempotent), but running maintenance between offload
    cycles avoids the wasted cycle.

What orphan removal considers live
    Everything under the table's data and metadata locations is listed first (``pyarrow.fs`` through the
    table's ``PyArrowFileIO``: ``file://``, ``s3://``, ``gs://``, ``hdfs://``), then the table is loaded again,
    and a file is kept when it is any of: the current metadata JSON; a metadata JSON of the metadata log; a
    statistics file; the manifest list of any snapshot still in the metadata; any manifest such a list names;
    any data or delete file that such a manifest records as ADDED or EXISTING (a DELETED entry only records
    that the file left the table; a snapshot still reading it lists it in its own manifests). Files
    younger than ``older_than_ms`` (mtime) are kept too, so the files of an in-flight commit, written before
    the catalog points at them, are never removed (``maintain`` uses ``ORPHAN_MIN_AGE_MS`` = 1 day). Before
    deleting anything the listing must contain the files of the snapshot current before listing started;
    if it does not (a path-form mismatch), nothing is removed. Other FileIO implementations (fsspec) have no
    listing here and raise ``NotImplementedError``.

Audit
    Per (exchange, UTC day of ``ts``) the hot and cold tiers must agree on row count, exact
    ``sum(price * qty)`` (ClickHouse ``Decimal(76, 36)`` on both sides: cold rows are aggregated by the same
    engine over the Arrow table), and the lowest and highest trade id, over the rows the cold tier is meant to
    hold (``ingest_seq <=`` the trade watermark) minus what hot retention dropped (``k2_tier_state``: ``ts <
    cutoff AND ingest_seq <= seq``, so a day retention cut through is compared on its remaining rows). A
    partition with no hot rows at all is ``cold only`` (retention): its row count comes from Iceberg metadata
    and its sum and ids are ``None``, so the whole history is not scanned every day; only the days the hot
    tier still has are read from the cold tier, one day at a time. Hot rows above the watermark (not offloaded
    yet) are outside the comparison: a partition holding only such rows is ``ok`` with zero rows on both
    sides. A partition whose values differ is ``MISMATCH``, with both sides' values.
"""

from __future__ import annotations

import itertools
import logging
import math
import posixpath
import time
import warnings
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.expressions import (
    AlwaysTrue,
    And,
    BooleanExpression,
    EqualTo,
    GreaterThanOrEqual,
    In,
    IsNull,
    LessThan,
    LessThanOrEqual,
)
from pyiceberg.table import Table, TableProperties
from pyiceberg.table.sorting import SortDirection
from pyiceberg.transforms import DayTransform, HourTransform, IdentityTransform, MonthTransform, YearTransform

from k2.cold.offload import SEQ_KEY, latest_property, seq_watermark
from k2.cold.tables import NAMESPACE, TABLES
from k2.hot.ddl import WIDE

log = logging.getLogger("k2.maintain")

#: orphan candidates must be at least this old (mtime): files of an in-flight commit are never touched
ORPHAN_MIN_AGE_MS = 86_400_000
#: snapshot properties with this prefix are offload state and are carried through every maintenance commit
K2_PREFIX = "k2."
#: tries per partition when a concurrent commit wins the race
COMPACT_ATTEMPTS = 3
DAY_MS = 86_400_000
US = 1_000_000
DAY_US = 86_400 * US
EPOCH = date(1970, 1, 1)
TRADES_TABLE = f"{NAMESPACE}.trades"


class UnexpectedLayout(ValueError):
    """A partition compaction cannot rewrite safely (it is left as it is)."""


# -- results -------------------------------------------------------------------------------------------
@dataclass
class CompactStats:
    table: str
    partitions: int = 0  # partitions rewritten
    files_removed: int = 0
    files_added: int = 0
    rows: int = 0  # rows rewritten
    skipped: list[str] = field(default_factory=list)  # "partition: why", left as they were for the next run


@dataclass(frozen=True)
class AuditRow:
    exchange: str
    day: date
    hot_rows: int
    cold_rows: int
    hot_quote: Decimal | None
    cold_quote: Decimal | None
    hot_min_id: int | None
    cold_min_id: int | None
    hot_max_id: int | None
    cold_max_id: int | None
    status: str  # "ok" | "cold only" | "MISMATCH"

    def line(self) -> str:
        return (
            f"{self.exchange} {self.day.isoformat()} {self.status}: rows hot {self.hot_rows} cold {self.cold_rows}, "
            f"sum(price*qty) hot {_fmt(self.hot_quote)} cold {_fmt(self.cold_quote)}, "
            f"ids hot {self.hot_min_id}..{self.hot_max_id} cold {self.cold_min_id}..{self.cold_max_id}"
        )


@dataclass
class MaintainReport:
    compacted: dict[str, CompactStats] = field(default_factory=dict)
    expired: dict[str, int] = field(default_factory=dict)
    orphans_removed: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # step:table -> why it was skipped
    audit: list[AuditRow] = field(default_factory=list)
    trade_watermark: int = -1
    seconds: float = 0.0

    @property
    def mismatches(self) -> list[AuditRow]:
        return [r for r in self.audit if r.status == "MISMATCH"]

    @property
    def ok(self) -> bool:
        return not self.mismatches and not self.errors

    def lines(self) -> list[str]:
        removed = sum(s.files_removed for s in self.compacted.values())
        added = sum(s.files_added for s in self.compacted.values())
        parts = sum(s.partitions for s in self.compacted.values())
        out = [f"compaction         {parts} partitions, {removed} files -> {added}"]
        out += [
            f"  {name:<17}{s.partitions} partitions, {s.files_removed} -> {s.files_added} files, {s.rows} rows"
            for name, s in self.compacted.items()
            if s.partitions
        ]
        out += [f"  {name} skipped {item}" for name, s in self.compacted.items() for item in s.skipped]
        out.append(f"snapshots expired  {sum(self.expired.values())}"
                   + "".join(f"  {n.split('.', 1)[-1]}={k}" for n, k in self.expired.items() if k))
        out.append(f"orphans removed    {sum(self.orphans_removed.values())}"
                   + "".join(f"  {n.split('.', 1)[-1]}={k}" for n, k in self.orphans_removed.items() if k))
        counts = {s: sum(1 for r in self.audit if r.status == s) for s in ("ok", "cold only", "MISMATCH")}
        out.append(
            f"audit              {len(self.audit)} partitions (trade watermark {self.trade_watermark}): "
            f"{counts['ok']} ok, {counts['cold only']} cold only, {counts['MISMATCH']} MISMATCH"
        )
        out += [f"  {r.line()}" for r in self.mismatches]
        out += [f"error              {k}: {v}" for k, v in self.errors.items()]
        out.append(f"seconds            {self.seconds:.2f}")
        return out


# -- compaction ------------------------------------------------------------------------------------------
def compact(catalog, table_name: str, *, target_file_rows: int = 1_000_000, small_file_rows: int = 100_000) -> int:
    """Rewrite every partition holding more than one file below ``small_file_rows``; returns data files removed."""
    return compact_table(
        catalog, table_name, target_file_rows=target_file_rows, small_file_rows=small_file_rows
    ).files_removed


def compact_table(
    catalog, table_name: str, *, target_file_rows: int = 1_000_000, small_file_rows: int = 100_000
) -> CompactStats:
    """:func:`compact` with the details (partitions, files added, rows, partitions skipped after conflicts)."""
    if target_file_rows < 1 or small_file_rows < 1:
        raise ValueError("target_file_rows and small_file_rows must be positive")
    stats = CompactStats(table_name)
    table = catalog.load_table(table_name)
    for key, files in _partition_files(table).items():
        if not _needs_compaction(files, small_file_rows, target_file_rows):
            continue
        for attempt in range(COMPACT_ATTEMPTS):
            if attempt:
                table = catalog.load_table(table_name)
                files = _partition_files(table).get(key, [])
                if not _needs_compaction(files, small_file_rows, target_file_rows):
                    break
            try:
                removed, added, rows, table = rewrite_partition(table, key, target_file_rows)
            except (CommitFailedException, ValidationException) as exc:
                log.info("compaction of %s %s lost a race (%s), retrying", table_name, _describe(table, key), exc)
                continue
            except UnexpectedLayout as exc:
                stats.skipped.append(f"{_describe(table, key)}: {exc}")
                log.warning("compaction of %s %s skipped: %s", table_name, _describe(table, key), exc)
                break
            stats.partitions += 1
            stats.files_removed += removed
            stats.files_added += added
            stats.rows += rows
            log.info("compacted %s %s: %d files -> %d (%d rows)", table_name, _describe(table, key),
                     removed, added, rows)
            break
        else:
            stats.skipped.append(f"{_describe(table, key)}: concurrent commits won {COMPACT_ATTEMPTS} times")
            log.warning("compaction of %s %s skipped: concurrent commits won %d times", table_name,
                        _describe(table, key), COMPACT_ATTEMPTS)
            table = catalog.load_table(table_name)
    return stats


def rewrite_partition(table: Table, key: tuple, target_file_rows: int) -> tuple[int, int, int, Table]:
    """Replace partition ``key`` (spec id, partition values) of ``table`` by sorted files, in one commit.

    Commits against exactly the snapshot ``table`` holds: if anything else committed since, the catalog
    refuses (``CommitFailedException``) and nothing changes. Returns (files removed, files added, rows, table
    after the commit).
    """
    from pyiceberg.io.pyarrow import _dataframe_to_data_files

    spec_id, values = key
    row_filter = partition_filter(table, spec_id, values)
    tasks = list(table.scan(row_filter=row_filter).plan_files())
    if any(t.delete_files for t in tasks):
        raise UnexpectedLayout("the partition has delete files; copy-on-write compaction expects none")
    expected = sum(t.file.record_count for t in tasks)
    rows = table.scan(row_filter=row_filter).to_arrow()
    if rows.num_rows != expected:
        # the filter selected part of a file: the partition is not what the filter describes, do not touch it
        raise UnexpectedLayout(f"its filter selects {rows.num_rows} rows of files holding {expected}")
    schema = table.schema().as_arrow()
    rows = _sorted(table, rows.select(schema.names).cast(schema))
    props = carried_properties(table)
    work = _without_commit_retries(table)
    written = []
    try:
        with work.transaction() as tx, warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Delete operation did not match any records")
            tx.delete(delete_filter=row_filter, snapshot_properties=props)
            with tx.update_snapshot(snapshot_properties=props).fast_append() as append:
                counter = itertools.count(0)
                for chunk in _chunks(rows, target_file_rows):
                    for data_file in _dataframe_to_data_files(
                        table_metadata=tx.table_metadata, df=chunk, io=work.io,
                        write_uuid=append.commit_uuid, counter=counter,
                    ):
                        written.append(data_file.file_path)
                        append.append_data_file(data_file)
    except (CommitFailedException, ValidationException):
        for path in written:  # these exceptions guarantee the commit did not land
            try:
                work.io.delete(path)
            except OSError:
                log.warning("could not delete %s of a failed compaction commit", path)
        raise
    return len(tasks), len(written), rows.num_rows, work


def carried_properties(table: Table) -> dict[str, str]:
    """Every ``k2.*`` snapshot property with the value the table states now (the newest snapshot carrying it)."""
    keys = {
        k for s in table.snapshots() if s.summary is not None
        for k in s.summary.additional_properties if k.startswith(K2_PREFIX)
    }
    out = {}
    for k in sorted(keys):
        value = latest_property(table, k)
        if value is not None:
            out[k] = value
    return out


def partition_filter(table: Table, spec_id: int, values) -> BooleanExpression:
    """The row filter selecting exactly partition ``values`` of spec ``spec_id``."""
    spec = table.specs()[spec_id]
    schema = table.schema()
    expr: BooleanExpression = AlwaysTrue()
    for pf, value in zip(spec.fields, values):
        name = schema.find_column_name(pf.source_id)
        if name is None:
            raise UnexpectedLayout(f"partition source column {pf.source_id} no longer exists")
        t = pf.transform
        if value is None:
            part: BooleanExpression = IsNull(name)
        elif isinstance(t, IdentityTransform):
            part = EqualTo(name, value)
        elif isinstance(t, (YearTransform, MonthTransform, DayTransform, HourTransform)):
            lo, hi = _time_range(t, int(value))
            if str(schema.find_type(pf.source_id)) == "date":
                part = And(GreaterThanOrEqual(name, lo // DAY_US), LessThan(name, hi // DAY_US))
            else:
                part = And(GreaterThanOrEqual(name, lo), LessThan(name, hi))
        else:
            raise UnexpectedLayout(f"compaction supports identity/year/month/day/hour partitions, not {t}")
        expr = part if isinstance(expr, AlwaysTrue) else And(expr, part)
    return expr


def _time_range(t, v: int) -> tuple[int, int]:
    """[start, end) in µs since the epoch of time-transform value ``v``."""
    if isinstance(t, HourTransform):
        return v * 3600 * US, (v + 1) * 3600 * US
    if isinstance(t, DayTransform):
        return v * DAY_US, (v + 1) * DAY_US
    months = v * 12 if isinstance(t, YearTransform) else v
    step = 12 if isinstance(t, YearTransform) else 1
    return _month_us(months), _month_us(months + step)


def _month_us(months: int) -> int:
    d = datetime(1970 + months // 12, months % 12 + 1, 1, tzinfo=timezone.utc)
    return (d - datetime(1970, 1, 1, tzinfo=timezone.utc)) // timedelta(microseconds=1)


def _partition_files(table: Table) -> dict[tuple, list]:
    """(spec id, partition values) -> data files of the current snapshot."""
    out: dict[tuple, list] = {}
    if table.current_snapshot() is None:
        return out
    for task in table.scan().plan_files():
        f = task.file
        values = tuple(f.partition[i] for i in range(len(f.partition)))
        out.setdefault((f.spec_id, values), []).append(f)
    return out


def _needs_compaction(files: list, small_file_rows: int, target_file_rows: int) -> bool:
    small = sum(1 for f in files if f.record_count < small_file_rows)
    rows = sum(f.record_count for f in files)
    # only when the rewrite ends with fewer files (never rewrites the same partition again and again)
    return small > 1 and math.ceil(rows / target_file_rows) < len(files)


def _sorted(table: Table, rows: pa.Table) -> pa.Table:
    order = table.sort_order()
    keys = []
    for sf in order.fields:
        name = table.schema().find_column_name(sf.source_id)
        if name is None or not isinstance(sf.transform, IdentityTransform):
            continue
        keys.append((name, "descending" if sf.direction == SortDirection.DESC else "ascending"))
    return rows.sort_by(keys) if keys and rows.num_rows else rows


def _chunks(rows: pa.Table, target_file_rows: int):
    """``ceil(n / target)`` slices of (nearly) equal size, in order."""
    n = rows.num_rows
    if n == 0:
        return
    k = math.ceil(n / target_file_rows)
    size = math.ceil(n / k)
    for start in range(0, n, size):
        yield rows.slice(start, size)


def _without_commit_retries(table: Table) -> Table:
    """An in-memory copy of ``table`` whose transactions do not retry a refused commit (see module docstring)."""
    props = {**table.metadata.properties, TableProperties.COMMIT_NUM_RETRIES: "0"}
    metadata = table.metadata.model_copy(update={"properties": props})
    return Table(table.name(), metadata, table.metadata_location, table.io, table.catalog, table.config)


def _describe(table: Table, key: tuple) -> str:
    spec_id, values = key
    try:
        spec = table.specs()[spec_id]
        return ",".join(f"{pf.name}={pf.transform.to_human_string(_type_of(table, pf), v)}"
                        for pf, v in zip(spec.fields, values))
    except Exception:  # only a label for logs and the report
        return repr(values)


def _type_of(table: Table, pf):
    return table.schema().find_type(pf.source_id)


# -- snapshot expiry -------------------------------------------------------------------------------------
def expire_snapshots(catalog, table_name: str, older_than_ms: int, keep_last: int = 1) -> int:
    """Expire snapshots older than ``older_than_ms``; returns how many. Data files stay (orphan removal).

    Never expired: the current snapshot and every branch/tag head, the newest ``keep_last`` snapshots, and
    the newest snapshot carrying each ``k2.*`` property (so :func:`latest_property` answers as before).
    """
    if keep_last < 0:
        raise ValueError("keep_last must be >= 0")
    table = catalog.load_table(table_name)
    ids = expirable_snapshot_ids(table, older_than_ms, keep_last)
    if not ids:
        return 0
    table.maintenance.expire_snapshots().by_ids(ids).commit()
    log.info("expired %d snapshots of %s", len(ids), table_name)
    return len(ids)


def expirable_snapshot_ids(table: Table, older_than_ms: int, keep_last: int = 1) -> list[int]:
    snaps = sorted(table.snapshots(), key=lambda s: (s.sequence_number or 0, s.timestamp_ms), reverse=True)
    keep = {s.snapshot_id for s in snaps[:keep_last]}
    keep |= {ref.snapshot_id for ref in table.metadata.refs.values()}
    if table.metadata.current_snapshot_id is not None:
        keep.add(table.metadata.current_snapshot_id)
    carriers: set[str] = set()
    for s in snaps:  # newest first: the first snapshot seen with a key is the one latest_property reads
        for k in (s.summary.additional_properties if s.summary is not None else {}):
            if k.startswith(K2_PREFIX) and k not in carriers:
                carriers.add(k)
                keep.add(s.snapshot_id)
    return sorted(s.snapshot_id for s in snaps if s.timestamp_ms < older_than_ms and s.snapshot_id not in keep)


# -- orphan files ----------------------------------------------------------------------------------------
def remove_orphan_files(catalog, table_name: str, older_than_ms: int) -> int:
    """Delete files under the table's data/metadata locations that nothing live references and whose mtime is
    before ``older_than_ms``; returns how many. See the module docstring for what is live."""
    from pyarrow.fs import FileSelector, FileType
    from pyiceberg.io.pyarrow import PyArrowFileIO

    before = catalog.load_table(table_name)
    io = before.io
    if not isinstance(io, PyArrowFileIO):
        raise NotImplementedError(
            f"orphan removal lists files through pyarrow.fs and needs PyArrowFileIO; {table_name} uses "
            f"{type(io).__name__} (set py-io-impl to pyiceberg.io.pyarrow.PyArrowFileIO)"
        )
    listed: dict[str, tuple[object, str, int | None]] = {}
    for root in _roots(before):
        scheme, netloc, path = io.parse_location(root, io.properties)
        fs = io.fs_by_scheme(scheme, netloc)
        for info in fs.get_file_info(FileSelector(path, recursive=True, allow_not_found=True)):
            if info.type == FileType.File:
                mtime = info.mtime_ns // 1_000_000 if info.mtime_ns is not None else None
                listed[_norm(info.path)] = (fs, info.path, mtime)
    # what was current before listing must have been listed, or paths are not being compared like for like
    must = {before.metadata_location}
    snap = before.current_snapshot()
    if snap is not None:
        must.add(snap.manifest_list)
        for m in snap.manifests(io):
            must.add(m.manifest_path)
            must.update(e.data_file.file_path for e in m.fetch_manifest_entry(io, discard_deleted=True))
    roots = [_key(io, r).rstrip("/") + "/" for r in _roots(before)]
    missing = [p for p in must if any(_key(io, p).startswith(r) for r in roots) and _key(io, p) not in listed]
    if missing:
        raise RuntimeError(
            f"orphan removal of {table_name} refused: {len(missing)} live files were not found by the listing "
            f"(e.g. {missing[0]}); nothing was deleted"
        )
    live = {_key(io, p) for p in live_files(catalog.load_table(table_name))}
    removed = 0
    for key, (fs, path, mtime) in sorted(listed.items()):
        if key in live or mtime is None or mtime >= older_than_ms:
            continue
        try:
            fs.delete_file(path)
        except FileNotFoundError:
            continue
        removed += 1
        log.info("removed orphan %s", path)
    return removed


def live_files(table: Table) -> set[str]:
    """Locations of every file the table's metadata still references (see the module docstring)."""
    meta = table.metadata
    io = table.io
    live = {table.metadata_location}
    live.update(e.metadata_file for e in meta.metadata_log)
    live.update(s.statistics_path for s in meta.statistics)
    live.update(s.statistics_path for s in meta.partition_statistics)
    seen: set[str] = set()
    for snap in meta.snapshots:
        live.add(snap.manifest_list)
        for m in snap.manifests(io):
            live.add(m.manifest_path)
            if m.manifest_path in seen:
                continue
            seen.add(m.manifest_path)
            live.update(e.data_file.file_path for e in m.fetch_manifest_entry(io, discard_deleted=True))
    return live


def _roots(table: Table) -> list[str]:
    loc = table.location().rstrip("/")
    props = table.metadata.properties
    return [props.get("write.data.path", f"{loc}/data"), props.get("write.metadata.path", f"{loc}/metadata")]


def _key(io, location: str) -> str:
    return _norm(io.parse_location(location, io.properties)[2])


def _norm(path: str) -> str:
    return posixpath.normpath(path)


# -- audit -----------------------------------------------------------------------------------------------
def audit(store, catalog) -> list[AuditRow]:
    """Hot vs cold trades per (exchange, UTC day of ts), over what the cold tier is meant to hold."""
    from k2.cold.tiers import tier_state

    trades = catalog.load_table(TRADES_TABLE)
    wm = seq_watermark(trades)
    dropped = tier_state(store).get("trades")
    scope = f"ingest_seq <= {wm}" if wm >= 0 else "0"
    if dropped is not None:
        cut, seq = dropped
        scope += f" AND NOT (ts < fromUnixTimestamp64Micro({int(cut)}, 'UTC') AND ingest_seq <= {int(seq)})"
    agg = (
        "SELECT exchange, toDate(ts, 'UTC') AS day, count() AS total, countIf(s) AS n, "
        f"toString(sumIf(CAST(price AS {WIDE}) * CAST(qty AS {WIDE}), s)) AS quote, "
        "toInt64(minIf(trade_id, s)) AS lo, toInt64(maxIf(trade_id, s)) AS hi "
        "FROM (SELECT exchange, ts, trade_id, price, qty, ({scope}) AS s FROM {source}) GROUP BY exchange, day"
    )
    hot_rows = store.query_arrow(agg.format(scope=scope, source="trades_store")).to_pylist()
    hot = {(r["exchange"], r["day"]): r for r in hot_rows}
    cold: dict[tuple[str, date], dict] = {}
    for day in sorted({d for _, d in hot}) if wm >= 0 else ():
        # one day at a time (one partition per exchange): memory stays bounded by a day of trades
        start = (day - EPOCH).days * DAY_US
        rows = trades.scan(
            row_filter=And(
                And(LessThanOrEqual("ingest_seq", wm), In("exchange", sorted({e for e, d in hot if d == day}))),
                And(GreaterThanOrEqual("ts", start), LessThan("ts", start + DAY_US)),
            ),
            selected_fields=("exchange", "trade_id", "price", "qty", "ts", "ingest_seq"),
        ).to_arrow()
        if rows.num_rows:
            for r in store.query_arrow_over(agg.format(scope=scope, source="Python(table)"), rows).to_pylist():
                cold[(r["exchange"], r["day"])] = r
    out: list[AuditRow] = []
    for key, h in hot.items():
        c = cold.get(key)
        hv = _side(h)
        cv = _side(c) if c is not None else (0, Decimal(0), None, None)
        out.append(_row(key, hv, cv, "ok" if hv == cv else "MISMATCH"))
    # partitions the hot tier no longer has at all (retention): cold only, never an error
    for key, n in sorted(_cold_partition_rows(trades).items()):
        if key in hot:
            continue
        out.append(_row(key, (0, None, None, None), (n, None, None, None), "cold only"))
    return sorted(out, key=lambda r: (r.exchange, r.day))


def _side(r: dict) -> tuple[int, Decimal, int | None, int | None]:
    n = int(r["n"])
    if n == 0:
        return 0, Decimal(0), None, None
    return n, Decimal(r["quote"]), int(r["lo"]), int(r["hi"])


def _row(key, hv, cv, status: str) -> AuditRow:
    return AuditRow(key[0], key[1], hv[0], cv[0], hv[1], cv[1], hv[2], cv[2], hv[3], cv[3], status)


def _cold_partition_rows(trades: Table) -> dict[tuple[str, date], int]:
    """(exchange, day) -> row count of the cold trades, from manifests only (no data read)."""
    out: dict[tuple[str, date], int] = {}
    if trades.current_snapshot() is None:
        return out
    schema = trades.schema()
    specs = trades.specs()
    for task in trades.scan().plan_files():
        f = task.file
        ex = day = None
        for i, pf in enumerate(specs[f.spec_id].fields):
            col = schema.find_column_name(pf.source_id)
            if col == "exchange" and isinstance(pf.transform, IdentityTransform):
                ex = f.partition[i]
            elif col == "ts" and isinstance(pf.transform, DayTransform):
                day = EPOCH + timedelta(days=int(f.partition[i]))
        if ex is None or day is None:
            raise ValueError(f"{TRADES_TABLE} is not partitioned by day(ts) and exchange (spec {f.spec_id})")
        out[(ex, day)] = out.get((ex, day), 0) + f.record_count
    return out


def _fmt(v: Decimal | None) -> str:
    return "-" if v is None else format(v.normalize(), "f")


# -- everything ------------------------------------------------------------------------------------------
def maintain(store, catalog, settings, *, now_ms: int | None = None) -> MaintainReport:
    """Compact every k2 table, expire old snapshots, remove orphans older than a day, then audit."""
    t0 = time.perf_counter()
    now = now_ms if now_ms is not None else time.time_ns() // 1_000_000
    rep = MaintainReport()
    names = list(TABLES)
    for name in names:
        rep.compacted[name] = compact_table(catalog, name)
    older = now - int(settings.cold.snapshot_retention_days * DAY_MS)
    for name in names:
        try:
            rep.expired[name] = expire_snapshots(catalog, name, older)
        except (CommitFailedException, ValidationException) as exc:
            rep.expired[name] = 0
            rep.errors[f"expire:{name}"] = f"concurrent commit, retried next run ({exc})"
    for name in names:
        rep.orphans_removed[name] = remove_orphan_files(catalog, name, now - ORPHAN_MIN_AGE_MS)
    rep.trade_watermark = seq_watermark(catalog.load_table(TRADES_TABLE), SEQ_KEY)
    rep.audit = audit(store, catalog)
    rep.seconds = time.perf_counter() - t0
    return rep

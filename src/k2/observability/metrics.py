"""Prometheus metrics over a registry the entry point passes in (never the default registry).

Two kinds of metric live here:

* **Pipeline state** (feeds, gaps, bus, hot writer, platform, offload, hot store, disk) is read *at scrape time*
  from the live objects by a collector registered on the registry. Nothing in the pipeline knows about metrics;
  a scrape always shows the current counters. Every source is read on its own: one that fails (the store busy,
  a dictionary resized under us) is left out of that scrape and counted in
  ``k2_metrics_scrape_errors_total{source}``. A scrape never raises.
* **API metrics** are pushed by the API middleware through :meth:`Metrics.observe_request` and friends.

Every family K2 exports is listed in :data:`METRICS` (name, type, labels, meaning); the deploy files
(``deploy/prometheus/alerts.yml``, ``deploy/grafana/k2-dashboard.json``) may only use names from it, which a
test checks against a real scrape.

Cost of a scrape: one query on the store's metadata (``system.tables`` joined with ``system.parts``), one
``max(ingest_seq)`` of ``trades_store`` above the last value seen (skip index: independent of the table's size),
one ``statvfs``; the rest are attribute reads. Measured on 2 cores: 8-10 ms a scrape with 3 M or 30 M stored
trades (the first scrape reads the ingest_seq column once: ~20 ms at 30 M). Disk usage is the filesystem's
(``shutil.disk_usage`` of the data directory): walking the data directory is too slow for a scrape, and the hot
store's own size is ``k2_store_bytes{table}``.

Usage (the entry point builds it; nothing is global)::

    registry = CollectorRegistry()
    metrics = Metrics(registry, platform=platform, store=platform.store, data_dir=settings.data_dir)
    body, content_type = metrics.render()          # GET /metrics
"""

from __future__ import annotations

import logging
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

if TYPE_CHECKING:  # duck-typed at run time: observability imports nothing it observes
    from k2.hot.chdb_store import ChdbStore
    from k2.pipeline.live import Platform

log = logging.getLogger("k2.metrics")


@dataclass(frozen=True)
class MetricSpec:
    """One exported family. ``name`` is the exposed name (counters end in ``_total``)."""

    name: str
    kind: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    help: str
    source: str  # feeds | gaps | bus | writer | platform | offload | store | disk | meta | api


_E = ("exchange",)


def _group(source: str, *rows: tuple[str, str, tuple[str, ...], str]) -> tuple[MetricSpec, ...]:
    return tuple(MetricSpec(name, kind, labels, text, source) for name, kind, labels, text in rows)


#: Every family K2 exports: (name, type, labels, meaning), grouped by the source it is read from.
METRICS: tuple[MetricSpec, ...] = (
    # -- feeds: k2.venues.session.FeedStatus of each exchange ---------------------------------------------------
    *_group("feeds",
        ("k2_feed_up", "gauge", _E, "1 while the exchange's feed is live (subscribed), else 0."),
        ("k2_feed_state", "gauge", ("exchange", "state"),
         "1 for the feed's current state (starting|connecting|subscribing|live|backoff|stopped), 0 for the others."),
        ("k2_feed_connects_total", "counter", _E, "WebSocket connections opened."),
        ("k2_feed_connect_failures_total", "counter", _E, "Connection attempts that failed."),
        ("k2_feed_disconnects_total", "counter", ("exchange", "reason"),
         "Connections closed, by reason kind (stale, closed, error, rotate, replaced, shutdown, stop, ...)."),
        ("k2_feed_rotations_total", "counter", _E, "Planned overlapping reconnects (Binance's 24 h limit)."),
        ("k2_feed_frames_total", "counter", _E, "WebSocket frames received."),
        ("k2_feed_trades_total", "counter", _E, "Trades parsed from the live stream."),
        ("k2_feed_dead_letters_total", "counter", _E,
         "Frames that failed to parse or validate (kept as dead letters)."),
        ("k2_feed_control_frames_total", "counter", _E, "Control frames (acks, heartbeats, pongs)."),
        ("k2_feed_messages_sent_total", "counter", _E, "Messages sent to the exchange (subscribe, ping)."),
        ("k2_feed_exchange_errors_total", "counter", _E, "Error frames sent by the exchange."),
        ("k2_feed_subscribe_failures_total", "counter", _E, "Subscriptions the exchange refused."),
        ("k2_feed_resubscribes_total", "counter", _E, "Quiet streams resubscribed by the per-stream watchdog."),
        ("k2_feed_sequence_gaps_total", "counter", _E, "Breaks in the exchange's message sequence numbers."),
        ("k2_feed_rest_requests_total", "counter", _E, "REST requests (backfill, reconcile, anchors)."),
        ("k2_feed_rest_errors_total", "counter", _E, "REST requests that failed."),
        ("k2_feed_rest_rate_limited_total", "counter", _E, "REST requests the exchange rate-limited."),
        ("k2_feed_backfilled_trades_total", "counter", _E, "Trades recovered over REST."),
        ("k2_feed_last_frame_age_seconds", "gauge", _E,
         "Seconds since the last frame was received (since the platform started when none yet)."),
        ("k2_feed_last_trade_age_seconds", "gauge", _E,
         "Seconds since the exchange time of the newest trade seen (since the platform started when none yet)."),
        ("k2_feed_lag_seconds", "gauge", _E,
         "Receive time minus exchange time of the newest trade (clock skew included)."),
    ),
    # -- gaps: k2.venues.gaps.GapTracker of each exchange -------------------------------------------------------
    *_group("gaps",
        ("k2_gaps_detected_total", "counter", _E, "Trade-id gaps detected."),
        ("k2_gaps_filled_total", "counter", _E, "Gaps completely filled (live or REST)."),
        ("k2_gaps_unfilled_total", "counter", _E,
         "Gaps backfill gave up on with trades still missing (status unfilled or partial)."),
        ("k2_gaps_pending", "gauge", _E, "Gaps still open (backfill pending)."),
        ("k2_gaps_pending_missing_trades", "gauge", _E, "Trade ids still missing in the open gaps."),
        ("k2_gaps_oldest_pending_age_seconds", "gauge", _E, "Age of the oldest open gap (0 when none)."),
    ),
    # -- bus: k2.bus.memory.MemoryBus ---------------------------------------------------------------------------
    *_group("bus",
        ("k2_bus_depth_batches", "gauge", (), "Batches waiting on the bus for the hot writer."),
        ("k2_bus_capacity_batches", "gauge", (), "Bus capacity; publishers block when depth reaches it."),
        ("k2_bus_published_batches_total", "counter", (), "Batches published on the bus."),
        ("k2_bus_acked_batches_total", "counter", (), "Batches acknowledged (stored) by the hot writer."),
    ),
    # -- hot writer: k2.hot.writer.HotWriter --------------------------------------------------------------------
    *_group("writer",
        ("k2_writer_up", "gauge", (), "1 while the hot writer thread runs without error, else 0."),
        ("k2_writer_batches_total", "counter", (), "Bus batches stored."),
        ("k2_writer_frames_total", "counter", (), "Frames accounted by the stored batches."),
        ("k2_writer_raw_frames_total", "counter", (), "Raw frames stored."),
        ("k2_writer_trades_in_total", "counter", (), "Trades handed to the store (before dedup)."),
        ("k2_writer_trades_stored_total", "counter", (), "New trades stored."),
        ("k2_writer_duplicates_total", "counter", (), "Trades dropped as already stored."),
        ("k2_writer_dead_letters_total", "counter", (), "Dead letters stored."),
        ("k2_writer_control_frames_total", "counter", (), "Control frames accounted."),
        ("k2_writer_ignored_frames_total", "counter", (), "Frames ignored (no trade, no control)."),
        ("k2_writer_inserts_total", "counter", (), "Store inserts (coalesced batches)."),
        ("k2_writer_gap_rows_total", "counter", (), "Gap rows stored."),
    ),
    # -- platform -----------------------------------------------------------------------------------------------
    *_group("platform",
        ("k2_platform_uptime_seconds", "gauge", (), "Seconds since `k2 up` built the platform."),
    ),
    # -- offload: the cold-tier loop of `k2 up` -----------------------------------------------------------------
    *_group("offload",
        ("k2_offload_cycles_total", "counter", (), "Offload cycles that succeeded."),
        ("k2_offload_errors_total", "counter", (), "Offload cycles that failed (retried next interval)."),
        ("k2_offload_interval_seconds", "gauge", (), "Configured offload interval (cold.offload_interval_s)."),
        ("k2_offload_last_success_age_seconds", "gauge", (),
         "Seconds since the last successful offload cycle was seen (since the platform started when none yet; "
         "precise to one scrape interval)."),
        ("k2_offload_watermark_ingest_seq", "gauge", (),
         "Trade ingest_seq the cold tier holds up to (after this process's last successful cycle)."),
        ("k2_offload_last_trades", "gauge", (), "Trades moved by the last successful cycle."),
        ("k2_offload_last_duration_seconds", "gauge", (), "Duration of the last successful cycle."),
    ),
    # -- hot store: ClickHouse metadata -------------------------------------------------------------------------
    *_group("store",
        ("k2_store_rows", "gauge", ("table",), "Rows in the active parts of each hot-store table (rows removed by a lightweight DELETE count until their part merges)."),
        ("k2_store_bytes", "gauge", ("table",), "Bytes on disk of each hot-store table (active parts)."),
        ("k2_store_parts", "gauge", ("table",), "Active parts of each hot-store table."),
        ("k2_store_last_ingest_seq", "gauge", (), "Newest stored trade ingest_seq (0 when empty)."),
        ("k2_offload_behind_rows", "gauge", (),
         "Stored trades not yet in the cold tier (newest ingest_seq - offload watermark); exported once this "
         "process has completed an offload cycle."),
    ),
    # -- disk: the data directory's filesystem ------------------------------------------------------------------
    *_group("disk",
        ("k2_disk_free_bytes", "gauge", (), "Free bytes (for unprivileged users) on the data directory's filesystem."),
        ("k2_disk_total_bytes", "gauge", (), "Size of the data directory's filesystem."),
    ),
    # -- the scrape itself --------------------------------------------------------------------------------------
    *_group("meta",
        ("k2_metrics_scrape_errors_total", "counter", ("source",),
         "Scrapes in which reading a source failed (that source's families were left out)."),
        ("k2_metrics_scrape_duration_seconds", "gauge", (), "Time this scrape spent reading the sources."),
    ),
    # -- API: pushed by the API middleware ----------------------------------------------------------------------
    *_group("api",
        ("k2_api_requests_total", "counter", ("route", "method", "status"), "API requests answered."),
        ("k2_api_request_duration_seconds", "histogram", ("route", "method"), "API request latency."),
        ("k2_api_rate_limited_total", "counter", ("route",), "API requests refused by the rate limiter."),
        ("k2_api_stream_clients", "gauge", (), "Connected live-stream clients."),
        ("k2_api_stream_messages_total", "counter", (), "Messages sent to live-stream clients."),
        ("k2_api_stream_dropped_clients_total", "counter", (), "Live-stream clients disconnected for falling behind."),
        ("k2_api_sql_refused_total", "counter", (), "SQL queries refused by the read-only guard."),
    ),
)
SPECS: dict[str, MetricSpec] = {m.name: m for m in METRICS}

FEED_STATES = ("starting", "connecting", "subscribing", "live", "backoff", "stopped")
#: the order sources are read in (offload before store: the store's "behind" needs the offload watermark)
SOURCES = ("feeds", "gaps", "bus", "writer", "platform", "offload", "store", "disk")
API_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
MAX_ROUTES = 64  # distinct route labels; more (a caller passing raw paths) collapse into "other"
MAX_REASONS = 16  # distinct disconnect reason labels
_REASON = re.compile(r"[a-z][a-z0-9_-]{0,23}")

_FEED_COUNTERS = (
    ("k2_feed_connects_total", "connects"),
    ("k2_feed_connect_failures_total", "connect_failures"),
    ("k2_feed_rotations_total", "rotations"),
    ("k2_feed_frames_total", "frames"),
    ("k2_feed_trades_total", "trades"),
    ("k2_feed_dead_letters_total", "dead_letters"),
    ("k2_feed_control_frames_total", "control"),
    ("k2_feed_messages_sent_total", "messages_sent"),
    ("k2_feed_exchange_errors_total", "exchange_errors"),
    ("k2_feed_subscribe_failures_total", "subscribe_failures"),
    ("k2_feed_resubscribes_total", "resubscribes"),
    ("k2_feed_sequence_gaps_total", "sequence_gaps"),
    ("k2_feed_rest_requests_total", "rest_requests"),
    ("k2_feed_rest_errors_total", "rest_errors"),
    ("k2_feed_rest_rate_limited_total", "rest_rate_limited"),
    ("k2_feed_backfilled_trades_total", "backfilled_trades"),
)
_WRITER_COUNTERS = (
    ("k2_writer_batches_total", "batches"),
    ("k2_writer_frames_total", "frames"),
    ("k2_writer_raw_frames_total", "raw_frames"),
    ("k2_writer_trades_in_total", "trades_in"),
    ("k2_writer_trades_stored_total", "trades_stored"),
    ("k2_writer_duplicates_total", "duplicates"),
    ("k2_writer_dead_letters_total", "dead_letters"),
    ("k2_writer_control_frames_total", "control"),
    ("k2_writer_ignored_frames_total", "ignored"),
    ("k2_writer_inserts_total", "inserts"),
    ("k2_writer_gap_rows_total", "gap_rows"),
)

# Per-table row/byte counts are metadata (no scan); the LEFT JOIN gives empty tables a 0 instead of no sample.
_STORE_TABLES_SQL = """SELECT t.name AS table, t.total_rows AS rows, t.total_bytes AS bytes, p.parts AS parts
FROM system.tables AS t
LEFT JOIN (SELECT table, count() AS parts FROM system.parts WHERE active AND database = currentDatabase()
           GROUP BY table) AS p ON p.table = t.name
WHERE t.database = currentDatabase() AND t.engine LIKE '%MergeTree'"""
# ingest_seq is not in the primary key: a plain max() reads the whole column (~20 ms on 30 M rows). It only grows,
# so each scrape asks only above the last value seen, which the seq_minmax skip index answers from the newest
# granules (~4 ms whatever the table's size); only the first scrape reads the column.
_LAST_SEQ_SQL = "SELECT max(ingest_seq) AS seq FROM trades_store WHERE ingest_seq > {floor}"


def _family(spec: MetricSpec) -> Metric:
    cls = CounterMetricFamily if spec.kind == "counter" else GaugeMetricFamily
    return cls(spec.name, spec.help, labels=spec.labels)


class _Families:
    """The families one source produces; handed over only if the whole source was read."""

    def __init__(self) -> None:
        self.families: dict[str, Metric] = {}

    def add(self, name: str, value: float, *labels: str) -> None:
        fam = self.families.get(name)
        if fam is None:
            fam = self.families[name] = _family(SPECS[name])
        fam.add_metric(list(labels), float(value))


class _StateCollector:
    """Reads the pipeline's live objects at scrape time (see the module docstring)."""

    def __init__(self, platform, store, data_dir: Path | None, clock: Callable[[], float],
                 monotonic: Callable[[], float]) -> None:
        self.platform = platform
        self.store = store
        self.data_dir = data_dir
        self.clock = clock
        self.monotonic = monotonic
        self._lock = threading.Lock()  # scrapes may run concurrently
        self._errors = dict.fromkeys(SOURCES, 0)
        self._last_error: dict[str, str] = {}
        self._reasons: set[str] = set()
        self._last_seq = 0  # newest trade ingest_seq seen in the store

    # -- prometheus_client Collector protocol ----------------------------------------------------------------
    def describe(self) -> list[Metric]:
        """The families this collector may export (lets the registry refuse a duplicate name)."""
        return [_family(s) for s in METRICS if s.source != "api"]

    def collect(self) -> Iterator[Metric]:
        t0 = time.perf_counter()
        ctx: dict[str, Any] = {"now": self.clock(), "mono": self.monotonic()}
        out: list[Metric] = []
        for source in self._sources():
            fams = _Families()
            try:
                getattr(self, f"_read_{source}")(fams, ctx)
            except Exception as exc:  # never fail the scrape: skip the source, count it
                self._failed(source, exc)
                continue
            out.extend(fams.families.values())
        errors = _family(SPECS["k2_metrics_scrape_errors_total"])
        with self._lock:
            for source, n in self._errors.items():
                errors.add_metric([source], n)
        duration = _family(SPECS["k2_metrics_scrape_duration_seconds"])
        duration.add_metric([], time.perf_counter() - t0)
        yield from out
        yield errors
        yield duration

    # -- sources ---------------------------------------------------------------------------------------------
    def _sources(self) -> list[str]:
        wanted = []
        if self.platform is not None:
            wanted += ["feeds", "gaps", "bus", "writer", "platform", "offload"]
        if self.store is not None:
            wanted.append("store")
        if self.data_dir is not None:
            wanted.append("disk")
        return [s for s in SOURCES if s in wanted]

    def _failed(self, source: str, exc: Exception) -> None:
        text = f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._errors[source] += 1
            repeated = self._last_error.get(source) == text
            self._last_error[source] = text
        # a store down for an hour must not log at every scrape: the counter says it is still failing
        log.log(logging.DEBUG if repeated else logging.WARNING, "metrics: reading %s failed: %s", source, text)

    def _uptime(self, ctx) -> float:
        return max(0.0, ctx["mono"] - self.platform.started)

    def _read_feeds(self, out: _Families, ctx) -> None:
        now, uptime = ctx["now"], self._uptime(ctx)

        def age(us: int) -> float:
            return max(0.0, now - us / 1e6) if us else uptime

        for ex, session in list(self.platform.sessions.items()):
            st = session.status
            state = st.state
            out.add("k2_feed_up", state == "live", ex)
            for s in FEED_STATES if state in FEED_STATES else (*FEED_STATES, state):
                out.add("k2_feed_state", s == state, ex, s)
            for name, attr in _FEED_COUNTERS:
                out.add(name, getattr(st, attr), ex)
            reasons: dict[str, int] = {}
            for reason, n in dict(st.disconnects).items():
                label = self._reason(reason)
                reasons[label] = reasons.get(label, 0) + n
            for label, n in sorted(reasons.items()):
                out.add("k2_feed_disconnects_total", n, ex, label)
            out.add("k2_feed_last_frame_age_seconds", age(st.last_frame_us), ex)
            out.add("k2_feed_last_trade_age_seconds", age(st.last_trade_us), ex)
            out.add("k2_feed_lag_seconds", st.lag_us / 1e6, ex)

    def _reason(self, reason: str) -> str:
        """A bounded label for a disconnect reason kind."""
        with self._lock:
            if reason in self._reasons:
                return reason
            if _REASON.fullmatch(reason) and len(self._reasons) < MAX_REASONS:
                self._reasons.add(reason)
                return reason
        return "other"

    def _read_gaps(self, out: _Families, ctx) -> None:
        now = ctx["now"]
        for ex, tracker in list(self.platform.trackers.items()):
            out.add("k2_gaps_detected_total", tracker.detected, ex)
            out.add("k2_gaps_filled_total", tracker.filled, ex)
            out.add("k2_gaps_unfilled_total", tracker.unfilled, ex)
            gaps = _open_gaps(tracker)
            out.add("k2_gaps_pending", len(gaps), ex)
            out.add("k2_gaps_pending_missing_trades", sum(g.missing.count for g in gaps), ex)
            oldest = min((g.detected_us for g in gaps), default=None)
            out.add("k2_gaps_oldest_pending_age_seconds", max(0.0, now - oldest / 1e6) if oldest else 0.0, ex)

    def _read_bus(self, out: _Families, ctx) -> None:
        bus = self.platform.bus
        if hasattr(bus, "depth"):  # MemoryBus; a broker-backed bus reports its lag elsewhere
            out.add("k2_bus_depth_batches", bus.depth)
            out.add("k2_bus_capacity_batches", bus.capacity)
        out.add("k2_bus_published_batches_total", bus.published)
        out.add("k2_bus_acked_batches_total", bus.acked)

    def _read_writer(self, out: _Families, ctx) -> None:
        writer = self.platform.writer
        out.add("k2_writer_up", writer.alive and writer.error is None)
        stats = writer.stats
        for name, attr in _WRITER_COUNTERS:
            out.add(name, getattr(stats, attr))

    def _read_platform(self, out: _Families, ctx) -> None:
        out.add("k2_platform_uptime_seconds", self._uptime(ctx))

    def _read_offload(self, out: _Families, ctx) -> None:
        p = self.platform
        count = p.offloads
        out.add("k2_offload_cycles_total", count)
        out.add("k2_offload_errors_total", p.offload_errors)
        out.add("k2_offload_interval_seconds", p.settings.cold.offload_interval_s)
        done = getattr(p, "last_offload_at", 0.0)  # monotonic end of the last successful cycle
        if not done:
            # counting from start-up until a first cycle, so "no offload for too long" fires on a stuck start too
            done = p.started
        out.add("k2_offload_last_success_age_seconds", max(0.0, ctx["mono"] - done))
        last = p.last_offload
        if last is not None:
            out.add("k2_offload_watermark_ingest_seq", last.trade_watermark)
            out.add("k2_offload_last_trades", last.trades)
            out.add("k2_offload_last_duration_seconds", last.seconds)
            ctx["watermark"] = last.trade_watermark

    def _read_store(self, out: _Families, ctx) -> None:
        rows = self.store.query_arrow(_STORE_TABLES_SQL).to_pylist()
        with self._lock:
            floor = self._last_seq
        newer = self.store.query_arrow(_LAST_SEQ_SQL.format(floor=int(floor))).to_pylist()[0]["seq"] or 0
        with self._lock:
            seq = self._last_seq = max(self._last_seq, int(newer))
        for r in sorted(rows, key=lambda r: r["table"]):
            out.add("k2_store_rows", r["rows"] or 0, r["table"])
            out.add("k2_store_bytes", r["bytes"] or 0, r["table"])
            out.add("k2_store_parts", r["parts"] or 0, r["table"])
        out.add("k2_store_last_ingest_seq", seq)
        if "watermark" in ctx:
            out.add("k2_offload_behind_rows", max(0, seq - int(ctx["watermark"])))

    def _read_disk(self, out: _Families, ctx) -> None:
        path = Path(self.data_dir).absolute()
        while not path.exists() and path != path.parent:  # not created yet: its filesystem is the parent's
            path = path.parent
        usage = shutil.disk_usage(path)
        out.add("k2_disk_free_bytes", usage.free)
        out.add("k2_disk_total_bytes", usage.total)


def _open_gaps(tracker) -> list:
    """``tracker.open_gaps()``, read from the scrape thread while the feed's event loop may add a symbol."""
    for _ in range(3):
        try:
            return list(tracker.open_gaps())
        except RuntimeError:  # "dictionary changed size during iteration": read again
            continue
    return list(tracker.open_gaps())


class Metrics:
    """K2's metrics on ``registry``; see the module docstring.

    ``platform`` is the running ``k2.pipeline.live.Platform`` (None under ``k2 serve``, which runs no feeds),
    ``store`` the hot store (``ChdbStore``; default ``platform.store``), ``data_dir`` the data directory whose
    filesystem is watched (default ``platform.settings.data_dir``). Any of them may be None: their families are
    then not exported. ``clock`` (wall seconds) and ``monotonic`` are injectable for tests.

    Build one per registry, once (a second one on the same registry raises ``ValueError``: duplicated names).
    """

    def __init__(
        self,
        registry: CollectorRegistry,
        *,
        platform: Platform | None = None,
        store: ChdbStore | None = None,
        data_dir: Path | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = registry
        if platform is not None:
            store = store if store is not None else platform.store
            data_dir = data_dir if data_dir is not None else platform.settings.data_dir
        self._collector = _StateCollector(platform, store, data_dir, clock, monotonic)
        registry.register(self._collector)

        def spec(name: str) -> tuple[str, str, tuple[str, ...]]:
            s = SPECS[name]
            return s.name, s.help, s.labels

        self._requests = Counter(*spec("k2_api_requests_total"), registry=registry)
        self._latency = Histogram(*spec("k2_api_request_duration_seconds"), buckets=API_BUCKETS, registry=registry)
        self._rate_limited = Counter(*spec("k2_api_rate_limited_total"), registry=registry)
        self._stream_clients = Gauge(*spec("k2_api_stream_clients"), registry=registry)
        self._stream_messages = Counter(*spec("k2_api_stream_messages_total"), registry=registry)
        self._stream_dropped = Counter(*spec("k2_api_stream_dropped_clients_total"), registry=registry)
        self._sql_refused = Counter(*spec("k2_api_sql_refused_total"), registry=registry)
        self._routes: set[str] = set()
        self._routes_lock = threading.Lock()

    # -- exposition ----------------------------------------------------------------------------------------
    def render(self) -> tuple[bytes, str]:
        """(body, content type) of the registry in the Prometheus text format. Never raises for a failing
        source. Blocks for a few ms on the store: call it from a worker thread in an async server."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    # -- API middleware --------------------------------------------------------------------------------------
    def attach(self, platform) -> None:
        """Start reading the feed, bus, writer and offload state of ``platform`` (``k2 up`` builds the API, and
        its metrics, before the platform exists)."""
        if self._collector.store is None:
            self._collector.store = platform.store
        if self._collector.data_dir is None:
            self._collector.data_dir = platform.settings.data_dir
        self._collector.platform = platform  # last: a scrape reading it finds store and data_dir already set

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered request. ``route`` is the route *template* (``/v1/ohlcv/{timeframe}``), not the path."""
        route, method = self._route(route), _method(method)
        self._requests.labels(route, method, _status(status)).inc()
        self._latency.labels(route, method).observe(max(0.0, seconds))

    def rate_limited(self, route: str) -> None:
        self._rate_limited.labels(self._route(route)).inc()

    def stream_clients_set(self, n: int) -> None:
        self._stream_clients.set(n)

    def stream_messages(self, n: int) -> None:
        self._stream_messages.inc(n)

    def stream_dropped_clients(self, n: int = 1) -> None:
        self._stream_dropped.inc(n)

    def sql_refused(self) -> None:
        self._sql_refused.inc()

    def _route(self, route: str) -> str:
        """The route label, bounded: the first ``MAX_ROUTES`` distinct routes, then ``other``."""
        route = str(route or "unknown")[:200]
        with self._routes_lock:
            if route in self._routes:
                return route
            if len(self._routes) < MAX_ROUTES:
                self._routes.add(route)
                return route
        return "other"


def _method(method: str) -> str:
    m = str(method).upper()
    return m if m in HTTP_METHODS else "OTHER"


def _status(status: int) -> str:
    try:
        code = int(status)
    except (TypeError, ValueError):
        return "other"
    return str(code) if 100 <= code <= 599 else "other"

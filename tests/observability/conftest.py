"""Real K2 objects for the metrics tests: a ``Platform`` built like ``k2 up`` builds it (real feed sessions, gap
trackers, bus, hot writer, chdb store), only not running, so each test sets the state it wants to see scraped."""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from k2.bus.base import IngestBatch
from k2.bus.memory import MemoryBus
from k2.cold.offload import OffloadResult
from k2.hot.chdb_store import DEAD_SCHEMA, RAW_SCHEMA
from k2.hot.writer import HotWriter
from k2.model.trade import DECIMAL_TYPE, TRADE_SCHEMA, TS_TYPE
from k2.observability import Metrics
from k2.pipeline.live import Platform, make_feed
from k2.settings import load_settings
from k2.venues.gaps import GapTracker
from k2.venues.session import FeedSession

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
EXCHANGES = ("binance", "kraken", "coinbase")
NOW = 1_800_000_000.0  # the wall clock the scrapes see (seconds)
US = 1_000_000


def need(tool: str) -> str:
    path = shutil.which(tool)
    if path is None:
        pytest.skip(f"`{tool}` is not installed (Debian: apt-get install --no-install-recommends prometheus)")
    return path


def us(seconds: float) -> int:
    return int(round(seconds * US))


def trades_table(exchange: str, symbol: str, ids: list[int], ts_s: float = NOW - 60) -> pa.Table:
    """Trades of one pair with the given ids, one second apart from ``ts_s``."""
    n = len(ids)
    ts = np.array([us(ts_s) + i * US for i in range(n)], dtype=np.int64)
    price = pa.array([100 + i for i in range(n)], pa.int64()).cast(pa.decimal128(38, 0)).cast(DECIMAL_TYPE)
    return pa.Table.from_arrays(
        [
            pa.array([exchange] * n, pa.string()),
            pa.array([symbol] * n, pa.string()),
            pa.array([symbol.replace("-", "")] * n, pa.string()),
            pa.array(ids, pa.uint64()),
            price,
            price,
            pa.array(["buy" if i % 2 else "sell" for i in range(n)], pa.string()),
            pa.array(ts).cast(TS_TYPE),
            pa.array(ts + 1000).cast(TS_TYPE),
        ],
        schema=TRADE_SCHEMA,
    )


def batch(trades: pa.Table | None = None, frames: int = 0) -> IngestBatch:
    return IngestBatch(RAW_SCHEMA.empty_table(), trades if trades is not None else TRADE_SCHEMA.empty_table(),
                       DEAD_SCHEMA.empty_table(), frames=frames)


def build_platform(tmp_path: Path, store, parsers, *, tracker_clock: Callable[[], int] | None = None,
                   **settings) -> Platform:
    """The object graph of ``run_platform`` (sessions, trackers, bus of 4096, writer), not started."""
    s = load_settings(None, data_dir=str(tmp_path / "data"), exchanges=EXCHANGES, **settings)
    bus = MemoryBus(max_batches=4096)
    platform = Platform(s, store, bus, HotWriter(store, bus, max_delay=0.01))
    instruments = s.instrument_table()

    async def publish(_batch) -> None:  # the sessions never run here
        return None

    for ex in EXCHANGES:
        tracker = GapTracker(ex, clock=tracker_clock) if tracker_clock else GapTracker(ex)
        platform.sessions[ex] = FeedSession(make_feed(ex, s), parsers[ex], instruments.for_exchange(ex), tracker,
                                            publish, s)
        platform.trackers[ex] = tracker
    return platform


def scrape(metrics: Metrics) -> dict[str, dict[tuple, float]]:
    """Sample name -> {sorted label items: value}, parsed from the rendered text."""
    body, ctype = metrics.render()
    assert ctype.startswith("text/plain")
    out: dict[str, dict[tuple, float]] = {}
    for fam in text_string_to_metric_families(body.decode("utf-8")):
        for s in fam.samples:
            out.setdefault(s.name, {})[tuple(sorted(s.labels.items()))] = s.value
    return out


def value(samples: dict, name: str, **labels) -> float:
    series = samples.get(name)
    assert series is not None, f"{name} not exported; exported: {sorted(n for n in samples if n.startswith('k2_'))}"
    key = tuple(sorted(labels.items()))
    assert key in series, f"{name}{labels} not exported; series: {sorted(series)}"
    return series[key]


def full_metrics(tmp_path: Path, store, parsers) -> tuple[Metrics, Platform]:
    """Metrics over a platform where every family has something to show (what a busy `k2 up` looks like)."""
    platform = build_platform(tmp_path, store, parsers, tracker_clock=lambda: us(NOW - 30))
    for n, (ex, session) in enumerate(platform.sessions.items()):
        st = session.status
        st.state = "live"
        st.connects, st.frames, st.trades, st.dead_letters = 2, 1000 + n, 900 + n, n
        st.disconnects = {"stale": 1, "rotate": 1}
        st.last_frame_us, st.last_trade_us, st.lag_us = us(NOW - 1), us(NOW - 2), 150_000
    tracker = platform.trackers["binance"]
    tracker.observe_live(trades_table("binance", "BTC-USDT", [1, 2, 5]))  # a pending gap: 3..4
    writer = platform.writer.start()
    platform.bus.publish(batch(trades_table("binance", "BTC-USDT", [1, 2, 5]), frames=3))
    deadline = time.monotonic() + 30
    while platform.bus.acked < 1 and writer.error is None and time.monotonic() < deadline:
        time.sleep(0.01)
    assert platform.bus.acked == 1, writer.error
    platform.offloads = 1
    platform.last_offload = OffloadResult(trades=2, raw_frames=0, trade_watermark=2, seconds=0.25, commits=1)
    metrics = Metrics(CollectorRegistry(), platform=platform, store=store, data_dir=tmp_path,
                      clock=lambda: NOW, monotonic=lambda: platform.started + 120)
    metrics.observe_request("/v1/trades", "GET", 200, 0.004)
    metrics.observe_request("/v1/ohlcv/{timeframe}", "GET", 500, 0.3)
    metrics.rate_limited("/v1/trades")
    metrics.stream_clients_set(2)
    metrics.stream_messages(10)
    metrics.stream_dropped_clients()
    metrics.sql_refused()
    return metrics, platform


def stop_writer(platform: Platform) -> None:
    if platform.writer.alive:
        platform.bus.close()
        platform.writer.join(30)


@pytest.fixture
def full(tmp_path, store, parsers):
    metrics, platform = full_metrics(tmp_path, store, parsers)
    yield metrics
    stop_writer(platform)


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()

"""The hot writer: storage errors stop a replay loudly (never a hang or a silent 0), transient ones are retried,
and a terminal gets progress."""

from __future__ import annotations

import io
import threading

import pytest

from k2.bus.memory import MemoryBus
from k2.capture.synth import write_synthetic_capture
from k2.errors import RetryableStoreError, StoreError
from k2.hot.store import InsertResult
from k2.hot.writer import HotWriter
from k2.pipeline.replay import replay_files, terminal_progress


class FlakyStore:
    """Wraps the real store; fails the first ``fail`` trade inserts with ``error``."""

    def __init__(self, inner, error: Exception, fail: int) -> None:
        self.inner, self.error, self.fail = inner, error, fail
        self.calls = 0

    def insert_trades(self, trades) -> InsertResult:
        self.calls += 1
        if self.calls <= self.fail:
            raise self.error
        return self.inner.insert_trades(trades)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_fatal_store_error_fails_the_replay(tmp_path, store, parsers):
    cap = tmp_path / "c.jsonl"
    write_synthetic_capture(cap, 30_000, seed=2)
    flaky = FlakyStore(store, StoreError("disk full"), fail=10**9)
    done = threading.Event()
    errors = []

    def run():
        try:
            replay_files([cap], flaky, parsers, chunk_lines=500)
        except StoreError as exc:
            errors.append(exc)
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(60), "replay hung after a store failure"
    assert errors and "disk full" in str(errors[0])


def test_retryable_store_errors_are_retried(tmp_path, store, parsers):
    cap = tmp_path / "c.jsonl"
    write_synthetic_capture(cap, 2_000, seed=4)
    flaky = FlakyStore(store, RetryableStoreError("TIMEOUT_EXCEEDED"), fail=2)
    s = replay_files([cap], flaky, parsers)
    assert s.trades_stored == 2_000 and flaky.calls >= 3
    assert store.query_arrow("SELECT count() AS n FROM trades").column(0)[0].as_py() == 2_000


def test_writer_drains_a_full_bus_after_an_error(store):
    bus = MemoryBus(max_batches=1)
    w = HotWriter(FlakyStore(store, StoreError("boom"), fail=10**9), bus, max_delay=0.01).start()
    from k2.bus.base import IngestBatch
    from k2.hot.chdb_store import DEAD_SCHEMA, RAW_SCHEMA
    from tests.hot.test_candles_property import to_table
    from k2.model.trade import Trade
    from decimal import Decimal

    t = Trade("binance", "BTC-USDT", "BTCUSDT", 1, Decimal(1), Decimal(1), "buy", 1784073600000000, 1784073600000000)
    for _ in range(5):  # would block forever on a full bus if the writer stopped reading
        bus.publish(IngestBatch(RAW_SCHEMA.empty_table(), to_table([t]), DEAD_SCHEMA.empty_table()))
    bus.close()
    with pytest.raises(StoreError, match="boom"):
        w.join(timeout=30)


class FakeTTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_only_on_a_terminal(tmp_path, store, parsers):
    assert terminal_progress(io.StringIO()) is None
    out = FakeTTY()
    show = terminal_progress(out)
    cap = tmp_path / "c.jsonl"
    write_synthetic_capture(cap, 3_000, seed=6)
    replay_files([cap], store, parsers, progress=show)
    assert "c.jsonl:" in out.getvalue() and "trades" in out.getvalue()

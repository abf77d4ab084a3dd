"""The hot writer: consumes ingest batches from the bus and stores them.

Small batches are coalesced (by rows and age) because every insert costs a fixed ~12 ms in chdb. A batch is
acknowledged on the bus only after the store holds it. Retryable store errors are retried with backoff;
anything else stops the writer and is reported to whoever waits on it.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

from k2.bus.base import Bus, IngestBatch
from k2.errors import StoreError
from k2.hot.store import HotStore

log = logging.getLogger("k2.writer")

#: rows (trades and raw frames) per insert at most; the default of ``writer.max_rows``
DEFAULT_MAX_ROWS = 1_200_000


@dataclass
class WriterStats:
    batches: int = 0
    frames: int = 0
    raw_frames: int = 0
    trades_in: int = 0
    trades_stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    control: int = 0
    ignored: int = 0
    inserts: int = 0
    gap_rows: int = 0


class HotWriter:
    def __init__(
        self,
        store: HotStore,
        bus: Bus,
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
        max_delay: float = 0.25,
        store_raw: bool = True,
        retries: int = 5,
        on_stored=None,
    ) -> None:
        self.store = store
        self.bus = bus
        self.max_rows = max_rows
        self.max_delay = max_delay
        self.store_raw = store_raw
        self.retries = retries
        self.stats = WriterStats()
        #: called (writer thread) with the newly stored trades after every insert: live subscribers
        self.on_stored = on_stored
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="k2-hot-writer", daemon=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="k2-raw-writer")
        self._lock = threading.Lock()

    def start(self) -> "HotWriter":
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)
        if self.error is not None:
            raise self.error

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _run(self) -> None:
        try:
            while True:
                first = self.bus.consume(timeout=0.5)
                if first is None:
                    if self.bus.drained:
                        return
                    continue
                group = [first]
                rows = first.trades.num_rows + first.raw.num_rows
                deadline = time.monotonic() + self.max_delay
                while rows < self.max_rows:
                    left = deadline - time.monotonic()
                    nxt = self.bus.consume(timeout=max(left, 0.0)) if left > 0 else self.bus.consume(timeout=0.0)
                    if nxt is None:
                        break
                    group.append(nxt)
                    rows += nxt.trades.num_rows + nxt.raw.num_rows
                self._store(group)
                for b in group:
                    self.bus.ack(b)
        except BaseException as exc:  # reported through join()
            self.error = exc
        finally:
            self._pool.shutdown(wait=True)
        if self.error is not None:
            # keep draining so a publisher blocked on a full bus is released; it sees ``error`` and stops
            while not self.bus.drained:
                self.bus.consume(timeout=0.1)

    def _store(self, group: list[IngestBatch]) -> None:
        raw = _concat([b.raw for b in group])
        dead = _concat([b.dead for b in group])
        trades = _concat([b.trades for b in group])
        raw_job = None
        if self.store_raw and raw.num_rows:
            # raw frames are stored on their own connection while the trades go in (two cores at work)
            raw_job = self._pool.submit(self._retry, self.store.insert_raw, raw)
        try:
            if dead.num_rows:
                self._retry(self.store.insert_dead_letters, dead)
            res = self._retry(self.store.insert_trades, trades) if trades.num_rows else None
            gaps = [b.gaps for b in group if b.gaps is not None and b.gaps.num_rows]
            if gaps:
                self._retry(self.store.insert_gaps, _concat(gaps))
        finally:
            if raw_job is not None:
                raw_job.result()
        with self._lock:
            s = self.stats
            s.batches += len(group)
            s.inserts += 1
            s.frames += sum(b.frames for b in group)
            s.raw_frames += raw.num_rows if self.store_raw else 0
            s.control += sum(b.control for b in group)
            s.ignored += sum(b.ignored for b in group)
            s.dead_letters += dead.num_rows
            s.gap_rows += sum(b.gaps.num_rows for b in group if b.gaps is not None)
            s.trades_in += trades.num_rows
            if res is not None:
                s.trades_stored += res.inserted
                s.duplicates += res.duplicates
        if res is not None and res.stored is not None and self.on_stored is not None:
            try:
                self.on_stored(res.stored)
            except Exception:  # a subscriber's failure never stops storing
                log.exception("on_stored callback failed")

    def _retry(self, fn, arg):
        delay = 0.1
        for attempt in range(self.retries + 1):
            try:
                return fn(arg)
            except StoreError as exc:
                if not exc.retryable or attempt == self.retries:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 5.0)
        return None


def _concat(tables: list[pa.Table]) -> pa.Table:
    tables = [t for t in tables if t.num_rows] or tables[:1]
    if len(tables) == 1:
        return tables[0]
    return pa.concat_tables(tables)

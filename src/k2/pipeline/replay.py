"""``k2 replay``: capture files through the same path live data takes (parse -> bus -> hot writer -> store)."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from k2.bus.memory import MemoryBus
from k2.capture.reader import read_capture
from k2.hot.store import HotStore
from k2.hot.writer import DEFAULT_MAX_ROWS, HotWriter
from k2.pipeline.ingest import build_batch, dead_only_batch
from k2.venues.base import VenueParser


@dataclass
class ReplaySummary:
    files: int = 0
    lines: int = 0
    frames: int = 0
    trades_parsed: int = 0
    trades_stored: int = 0
    duplicates: int = 0
    dead_letters: int = 0
    control: int = 0
    ignored: int = 0
    seconds: float = 0.0

    def lines_text(self) -> list[str]:
        rate = self.trades_parsed / self.seconds if self.seconds else 0.0
        return [
            f"files             {self.files}",
            f"frames            {self.frames}",
            f"trades parsed     {self.trades_parsed}",
            f"trades stored     {self.trades_stored}",
            f"duplicates        {self.duplicates}",
            f"dead letters      {self.dead_letters}",
            f"control frames    {self.control}",
            f"ignored frames    {self.ignored}",
            f"seconds           {self.seconds:.2f}  ({rate:,.0f} trades/s)",
        ]


def replay_files(
    paths: Sequence[str | os.PathLike[str]],
    store: HotStore,
    parsers: dict[str, VenueParser],
    *,
    store_raw: bool = True,
    chunk_lines: int = 50_000,
    writer_rows: int = DEFAULT_MAX_ROWS,
    progress: Callable[[ReplaySummary, str], None] | None = None,
) -> ReplaySummary:
    """Replay capture files into ``store``; returns when everything is stored (raises if storing failed)."""
    summary = ReplaySummary()
    # A replay has no latency to keep, only throughput: the writer waits up to a second to fill an insert of
    # ``writer_rows``, and the bus holds about one insert's worth of batches, so the reader and parser keep working
    # while an insert runs. A chunk yields one batch per exchange, each ~chunk_lines / 3 frames and about as many
    # trades: ~2/3 chunk_lines rows (36 batches for the defaults). Few large inserts mean few parts for ClickHouse to
    # merge: 1.2M rows per insert stored ~1.4x the trades/s of 500,000 with a bus of 40 batches and 50 ms
    # (benchmarks/RESULTS.md section 2). A bus of more than one insert only adds memory: 60 batches peaked ~100 MB
    # higher than 36 for the same trades/s (10M-trade replay, 3 alternating pairs).
    bus = MemoryBus(max_batches=max(8, min(200, writer_rows * 3 // (2 * chunk_lines))))
    writer = HotWriter(store, bus, max_rows=writer_rows, max_delay=1.0, store_raw=store_raw).start()
    t0 = time.perf_counter()
    try:
        for path in paths:
            summary.files += 1
            for chunk in read_capture(path, chunk_lines=chunk_lines):
                if writer.error is not None:
                    break
                summary.lines += chunk.lines
                bad = [(b.exchange, "", b.ts_recv, b.reason, b.raw) for b in chunk.bad]
                if bad and not chunk.by_exchange:
                    bus.publish(dead_only_batch(bad))
                for exchange, group in chunk.by_exchange.items():
                    res = parsers[exchange].parse(group.frames, group.ts_recv)
                    summary.trades_parsed += res.trades.num_rows
                    bus.publish(build_batch(exchange, group.frames, group.ts_recv, group.conn, res, bad))
                    bad = []
                if progress is not None:
                    summary.seconds = time.perf_counter() - t0
                    progress(summary, str(path))
    finally:
        bus.close()
        writer.join()
    s = writer.stats
    summary.frames = s.frames
    summary.trades_stored = s.trades_stored
    summary.duplicates = s.duplicates
    summary.dead_letters = s.dead_letters
    summary.control = s.control
    summary.ignored = s.ignored
    summary.seconds = time.perf_counter() - t0
    return summary


def terminal_progress(stream=sys.stderr) -> Callable[[ReplaySummary, str], None] | None:
    """A progress printer when ``stream`` is a terminal, else None."""
    if not stream.isatty():
        return None
    last = [0.0]

    def show(s: ReplaySummary, path: str) -> None:
        now = time.monotonic()
        if now - last[0] < 0.25:
            return
        last[0] = now
        rate = s.trades_parsed / s.seconds if s.seconds else 0
        stream.write(f"\r{os.path.basename(path)}: {s.lines:,} lines, {s.trades_parsed:,} trades ({rate:,.0f}/s)   ")
        stream.flush()

    return show
